"""HuBERT encoder architectures: :class:`HubertConfig`, the named presets and CNN geometry.

Field names follow ``torchaudio.models.wav2vec2_model``; the presets carry the papers' literal
numbers (docs/methods.md, "Students and their sizes"). Nothing here builds a module: that is
:mod:`raydistill.models.hubert` (assembly) from :mod:`raydistill.models.components` (blocks).
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass
from typing import Any, Sequence

ConvLayers = tuple[tuple[int, int, int], ...]


def hubert_conv(channels: int = 512) -> ConvLayers:
    """HuBERT's 7-layer CNN (total stride 320 = 20 ms, receptive field 400 samples) at a given width."""
    return ((channels, 10, 5),) + ((channels, 3, 2),) * 4 + ((channels, 2, 2),) * 2


REUSE_MODES = ("paper", "reference_code")
_GROUPS = re.compile(r"^(\d+)by(\d+)$")
_FLAGS = {"t": True, "true": True, "1": True, "f": False, "false": False, "0": False}


def _flag(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _FLAGS:
        return _FLAGS[value.strip().lower()]
    raise ValueError(f"reuse pattern entries must be true/false, 1/0 or T/F, found {value!r}")


def parse_reuse_pattern(spec: Any, num_layers: int) -> tuple[bool, ...]:
    """ARMHuBERT's attention-map reuse pattern (docs/methods.md#attention-map-reuse) as one
    flag per layer.

    True: the layer computes its own map softmax(QKᵀ/√d_h); False: it reuses the most recent
    computed map and has no W_Q, W_K. Accepted forms:

    * ``"none"``, ``None`` or an empty list: ``()``, every layer computes its own map;
    * ``"GbyN"``: N groups of G consecutive layers sharing one map, i.e. ``[T] + [F]*(G-1)``
      repeated N times (``2by6`` = ``[T,F]*6``, the released pattern; ``3by4`` = ``[T,F,F]*4``);
    * a list of bools, 0/1 or ``"T"``/``"F"``, one per layer, the first True.

    Raises:
        ValueError: unknown form, a pattern that does not cover ``num_layers``, or a first layer
            that reuses.
    """
    if spec is None:
        return ()
    if isinstance(spec, str):
        name = spec.strip().lower().replace(" ", "")
        if name in ("", "none"):
            return ()
        groups = _GROUPS.match(name)
        if groups is None:
            raise ValueError(f"unknown reuse pattern {spec!r}: use 'none', 'GbyN' (e.g. '2by6': N groups "
                             f"of G layers sharing one attention map) or a list of true/false per layer")
        size, count = int(groups[1]), int(groups[2])
        if size < 1 or count < 1:
            raise ValueError(f"reuse pattern {spec}: group size and count must be >= 1")
        if size * count != num_layers:
            raise ValueError(f"reuse pattern {spec} covers {size * count} layers but the student has {num_layers}")
        return ((True,) + (False,) * (size - 1)) * count
    if not isinstance(spec, Sequence):
        raise ValueError(f"reuse pattern must be a name ('none', '2by6', ...) or a list, found {spec!r}")
    if len(spec) == 0:
        return ()
    flags = tuple(_flag(v) for v in spec)
    if len(flags) != num_layers:
        raise ValueError(f"reuse pattern has {len(flags)} entries but the student has {num_layers} layers")
    if not flags[0]:
        raise ValueError("reuse pattern: the first layer must compute its attention map (True)")
    return flags


@dataclass(frozen=True)
class HubertConfig:
    """Architecture of a HuBERT encoder; field names follow ``torchaudio.models.wav2vec2_model``."""

    conv_layers: ConvLayers = hubert_conv(512)  # (channels, kernel, stride) per CNN layer
    extractor_mode: str = "group_norm"  # "group_norm" (Base) or "layer_norm" (Large)
    conv_bias: bool = False
    embed_dim: int = 768  # encoder_embed_dim
    num_layers: int = 12
    num_heads: int = 12
    ffn_dim: int = 3072  # encoder_ff_interm_features
    pos_conv_kernel: int = 128
    pos_conv_groups: int = 16
    layer_norm_first: bool = False  # False: post-LN (Base); True: pre-LN (Large)
    dropout_input: float = 0.1  # encoder_projection_dropout
    attention_dropout: float = 0.1
    activation_dropout: float = 0.0  # encoder_ff_interm_dropout
    dropout: float = 0.1
    layer_drop: float = 0.05
    # False (fairseq style): no Linear between the CNN and the encoder when the CNN's last
    # channel count equals embed_dim (torchaudio always has one; docs/methods.md#torchaudio-differences, item 1).
    project_features: bool = True
    # Attention-map reuse (ARMHuBERT, docs/methods.md#attention-map-reuse): () = every layer computes its own map; else one
    # flag per layer, True = compute, False = reuse the last computed map (no W_Q, W_K).
    # See parse_reuse_pattern for the accepted forms ("2by6", lists).
    reuse_pattern: tuple[bool, ...] = ()
    # "paper": reuse the source layer's probabilities per utterance and head; "reference_code":
    # the ARMHuBERT code's (H,B)->(B·H) view and second softmax, no attention dropout (docs/methods.md#reference-code-reuse, a-c).
    reuse_mode: str = "paper"
    # ARMHuBERT's layer gradient scaling (docs/methods.md#layer-gradient-scaling): backward-only scaling of the residual stream
    # by a_i = (L-i)/(L-i+1) and of each layer's returned state by a further (1 - a_i).
    layer_grad_scale: bool = False

    def __post_init__(self):
        # YAML gives lists; keep tuples so the config stays hashable and frozen.
        object.__setattr__(self, "conv_layers", tuple(tuple(int(v) for v in c) for c in self.conv_layers))
        checks = [
            (self.embed_dim > 0 and self.num_layers > 0 and self.num_heads > 0 and self.ffn_dim > 0,
             "embed_dim, num_layers, num_heads and ffn_dim must be positive"),
            (self.embed_dim % self.num_heads == 0,
             f"embed_dim ({self.embed_dim}) must be divisible by num_heads ({self.num_heads})"),
            (self.embed_dim % self.pos_conv_groups == 0,
             f"embed_dim ({self.embed_dim}) must be divisible by pos_conv_groups ({self.pos_conv_groups})"),
            (len(self.conv_layers) > 0 and all(len(c) == 3 for c in self.conv_layers),
             "conv_layers must be a non-empty list of [channels, kernel, stride]"),
            (self.extractor_mode in ("group_norm", "layer_norm"),
             f"extractor_mode must be 'group_norm' or 'layer_norm', found {self.extractor_mode!r}"),
        ]
        for rate in ("dropout_input", "attention_dropout", "activation_dropout", "dropout", "layer_drop"):
            checks.append((0.0 <= getattr(self, rate) < 1.0, f"{rate} must be in [0, 1)"))
        for ok, message in checks:
            if not ok:
                raise ValueError(message)
        if not self.project_features and self.conv_layers[-1][0] != self.embed_dim:
            raise ValueError(f"project_features=False needs the CNN's last channel count "
                             f"({self.conv_layers[-1][0]}) to equal embed_dim ({self.embed_dim})")
        if self.reuse_mode not in REUSE_MODES:
            raise ValueError(f"reuse_mode must be one of {', '.join(REUSE_MODES)}, found {self.reuse_mode!r}")
        object.__setattr__(self, "reuse_pattern", parse_reuse_pattern(self.reuse_pattern, self.num_layers))

    @property
    def computes_attention(self) -> tuple[bool, ...]:
        """One flag per layer: True when the layer computes its own attention map."""
        return self.reuse_pattern or (True,) * self.num_layers

    @property
    def reuses_attention(self) -> bool:
        return not all(self.computes_attention)

    @property
    def stride(self) -> int:
        return conv_stride(self.conv_layers)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["conv_layers"] = [list(c) for c in self.conv_layers]
        d["reuse_pattern"] = list(self.reuse_pattern)
        return d


def thin_cnn(channels: int) -> ConvLayers:
    """FitHuBERT/ARMHuBERT's thin CNN (stride 320) ending in ``channels`` = the student's width."""
    return ((128, 10, 5), (256, 1, 1)) + ((256, 3, 2),) * 4 + ((channels, 1, 1),) + ((channels, 2, 2),) * 2


# Recycle-and-Distill students (docs/methods.md#ffn-reinvestment-and-sizes), architectures as released: 12 post-LN layers,
# 12 heads, a thin CNN ending in d channels, no feature projection (fairseq style). reuse_mode and
# layer_grad_scale keep their defaults ("paper", off); the released code ran "reference_code" with
# layer_grad_scale on (ARMHuBERT), which a run config can set (the run preset armhubert-released).
_ARM = dict(num_layers=12, num_heads=12, project_features=False, dropout=0.1, attention_dropout=0.1,
            activation_dropout=0.1, dropout_input=0.05, layer_drop=0.0)

# Named architectures with literal numbers (docs/methods.md#hubert-base-architecture).
ARCHITECTURES: dict[str, HubertConfig] = {
    "hubert-base": HubertConfig(),
    "hubert-large": HubertConfig(
        extractor_mode="layer_norm", embed_dim=1024, num_layers=24, num_heads=16, ffn_dim=4096,
        layer_norm_first=True, attention_dropout=0.0, layer_drop=0.0,
    ),
    # The embedded default's teacher: a small HuBERT that pretrains on 2 CPU cores in minutes.
    # The CNN keeps HuBERT's geometry (20 ms frames) at 1/8 of the width: the 512-channel CNN
    # alone costs 2.45 GMAC per audio-second. No dropout: runs are a few epochs long.
    "tiny-teacher": HubertConfig(
        conv_layers=hubert_conv(64), embed_dim=192, num_layers=4, num_heads=4, ffn_dim=768,
        pos_conv_kernel=64, dropout_input=0.0, attention_dropout=0.0, dropout=0.0, layer_drop=0.0,
    ),
    # 22,202,944 parameters (+ 12 projection heads = 26,635,840; paper 26.64M).
    "maskhubert": HubertConfig(conv_layers=thin_cnn(480), embed_dim=480, ffn_dim=640, **_ARM),
    # 22,015,552 (+ heads = 26,448,448; paper 26.45M): Q/K of every other layer re-invested in the FFN.
    "armhubert": HubertConfig(conv_layers=thin_cnn(480), embed_dim=480, ffn_dim=864,
                              reuse_pattern=((True, False) * 6), **_ARM),
    # 18,403,552 (+ heads = 22,394,080; paper 22.39M).
    "armhubert-s": HubertConfig(conv_layers=thin_cnn(432), embed_dim=432, ffn_dim=816,
                                reuse_pattern=((True, False) * 6), **_ARM),
}


def conv_stride(conv_layers: ConvLayers) -> int:
    """Samples per output frame of the CNN (the product of its strides: 320 for HuBERT's)."""
    return math.prod(stride for _, _, stride in conv_layers)


def conv_frames(num_samples: int, conv_layers: ConvLayers) -> int:
    """Number of frames the CNN produces for ``num_samples`` samples (no padding in HuBERT's CNN)."""
    n = int(num_samples)
    for _, kernel, stride in conv_layers:
        n = (n - kernel) // stride + 1
    return max(n, 0)
