"""HuBERT encoders built from torchaudio's wav2vec2 components, with every hidden state exposed.

The encoder is a plain ``torchaudio.models.Wav2Vec2Model`` (so its state dict is
torchaudio's layout and torchaudio/HF HuBERT checkpoints load into it); this module
adds what distillation needs around it:

* :class:`HubertModel.forward` returns all ``L + 1`` hidden states (the Transformer
  input, then each layer's output), as s3prl's HuBERT upstream does, and can
  replace masked frames by a learned mask embedding (HuBERT masked prediction).
* :class:`PredictionHead` is fairseq HuBERT's pre-training head: ``final_proj`` and
  one embedding per unit, logits = cosine similarity / 0.1 over all ``K`` units.
* :func:`compute_span_mask` is HuBERT's span masking (METHODS.md §1.3).
* Attention maps: ``forward(..., need_attention=True)`` runs each torchaudio ``EncoderLayer``
  through :func:`encoder_layer`, the same math with softmax(QKᵀ/√d_h) computed explicitly, and
  returns the head-averaged maps (STaR, METHODS.md §4.2). ARMHuBERT's attention-map reuse
  (``HubertConfig.reuse_pattern``, §5.1) runs the same way; its reusing layers have no Q/K.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Any, NamedTuple, Optional, Sequence

import torch
import torch.nn.functional as F
import torchaudio
from torch import Tensor, nn

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
    """ARMHuBERT's attention-map reuse pattern (METHODS.md §5.1) as one flag per layer.

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
    # channel count equals embed_dim (torchaudio always has one; METHODS.md §1.4 gotcha 1).
    project_features: bool = True
    # Attention-map reuse (ARMHuBERT, §5.1): () = every layer computes its own map; else one
    # flag per layer, True = compute, False = reuse the last computed map (no W_Q, W_K).
    # See parse_reuse_pattern for the accepted forms ("2by6", lists).
    reuse_pattern: tuple[bool, ...] = ()
    # "paper": reuse the source layer's probabilities per utterance and head; "reference_code":
    # the ARMHuBERT code's (H,B)->(B·H) view and second softmax, no attention dropout (§5.1 a-c).
    reuse_mode: str = "paper"
    # ARMHuBERT's layer gradient scaling (§5.4): backward-only scaling of the residual stream
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
        s = 1
        for _, _, stride in self.conv_layers:
            s *= stride
        return s

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["conv_layers"] = [list(c) for c in self.conv_layers]
        d["reuse_pattern"] = list(self.reuse_pattern)
        return d


def _thin_cnn(channels: int) -> ConvLayers:
    """FitHuBERT/ARMHuBERT's thin CNN (stride 320) ending in ``channels`` = the student's width."""
    return ((128, 10, 5), (256, 1, 1)) + ((256, 3, 2),) * 4 + ((channels, 1, 1),) + ((channels, 2, 2),) * 2


# Recycle-and-Distill students (METHODS.md §5.2), architectures as released: 12 post-LN layers,
# 12 heads, a thin CNN ending in d channels, no feature projection (fairseq style). reuse_mode and
# layer_grad_scale keep their defaults ("paper", off); the released code ran "reference_code" with
# layer_grad_scale on (ARMHuBERT), which a run config can set (the run preset armhubert-released).
_ARM = dict(num_layers=12, num_heads=12, project_features=False, dropout=0.1, attention_dropout=0.1,
            activation_dropout=0.1, dropout_input=0.05, layer_drop=0.0)

# Named architectures with literal numbers (METHODS.md §1.1, §1.4).
PRESETS: dict[str, HubertConfig] = {
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
    "maskhubert": HubertConfig(conv_layers=_thin_cnn(480), embed_dim=480, ffn_dim=640, **_ARM),
    # 22,015,552 (+ heads = 26,448,448; paper 26.45M): Q/K of every other layer re-invested in the FFN.
    "armhubert": HubertConfig(conv_layers=_thin_cnn(480), embed_dim=480, ffn_dim=864,
                              reuse_pattern=((True, False) * 6), **_ARM),
    # 18,403,552 (+ heads = 22,394,080; paper 22.39M).
    "armhubert-s": HubertConfig(conv_layers=_thin_cnn(432), embed_dim=432, ffn_dim=816,
                                reuse_pattern=((True, False) * 6), **_ARM),
}


def conv_frames(num_samples: int, conv_layers: ConvLayers) -> int:
    """Number of frames the CNN produces for ``num_samples`` samples (no padding in HuBERT's CNN)."""
    n = int(num_samples)
    for _, kernel, stride in conv_layers:
        n = (n - kernel) // stride + 1
    return max(n, 0)


def build_encoder(cfg: HubertConfig) -> torchaudio.models.Wav2Vec2Model:
    """torchaudio's ``wav2vec2_model`` factory, called with a :class:`HubertConfig`.

    Then, as the config says: the feature projection becomes an Identity (``project_features``
    False) and reusing layers lose ``q_proj``/``k_proj`` (``reuse_pattern``). A config with
    neither keeps torchaudio's exact state-dict layout.
    """
    model = torchaudio.models.wav2vec2_model(
        extractor_mode=cfg.extractor_mode,
        extractor_conv_layer_config=[list(c) for c in cfg.conv_layers],
        extractor_conv_bias=cfg.conv_bias,
        encoder_embed_dim=cfg.embed_dim,
        encoder_projection_dropout=cfg.dropout_input,
        encoder_pos_conv_kernel=cfg.pos_conv_kernel,
        encoder_pos_conv_groups=cfg.pos_conv_groups,
        encoder_num_layers=cfg.num_layers,
        encoder_num_heads=cfg.num_heads,
        encoder_attention_dropout=cfg.attention_dropout,
        encoder_ff_interm_features=cfg.ffn_dim,
        encoder_ff_interm_dropout=cfg.activation_dropout,
        encoder_dropout=cfg.dropout,
        encoder_layer_norm_first=cfg.layer_norm_first,
        encoder_layer_drop=cfg.layer_drop,
        aux_num_out=None,
    )
    if not cfg.project_features:
        model.encoder.feature_projection.projection = nn.Identity()
    for layer, computes in zip(model.encoder.transformer.layers, cfg.computes_attention):
        if not computes:  # a reusing layer has only V and O: no parameters, no state-dict keys
            layer.attention.q_proj = None
            layer.attention.k_proj = None
    return model


class _GradMultiply(torch.autograd.Function):
    """Identity forward, gradient × scale backward (fairseq's ``feature_grad_mult``)."""

    @staticmethod
    def forward(ctx, x, scale):
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.scale, None


class HubertOutput(NamedTuple):
    states: list[Tensor]  # L + 1 tensors [B, T, D]: Transformer input, then each layer's output
    lengths: Optional[Tensor]  # [B] valid frames, or None when the batch is unpadded
    padding_mask: Optional[Tensor]  # [B, T] True on padded frames
    features_pen: Tensor  # mean squared CNN output (HuBERT's feature penalty), scalar
    # With need_attention: L maps [B, T, T], head-averaged post-softmax probabilities (rows =
    # queries; the map a reusing layer used); None for a layer skipped by layer drop.
    attentions: Optional[list[Optional[Tensor]]] = None


def run_cnn(extractor: nn.Module, wave: Tensor, lengths: Optional[Tensor]) -> tuple[Tensor, Optional[Tensor]]:
    """A torchaudio ``FeatureExtractor`` on a zero-padded batch: features [B, T, C] and frame lengths [B] (or None).

    The first conv's GroupNorm normalises over the whole time axis, so zero padding
    would change a row's features. Rows of a padded batch therefore go through the
    CNN one by one on their valid samples, which makes a padded batch equal to
    one-by-one runs. (Training batches are cropped to equal length: no padding there.)
    """
    if wave.ndim != 2:
        raise ValueError(f"expected wave of shape [batch, samples], found {list(wave.shape)}")
    if lengths is None or bool((lengths == wave.shape[1]).all()):
        feats, _ = extractor(wave, None)
        if lengths is None:
            return feats, None
        return feats, torch.full((wave.shape[0],), feats.shape[1], dtype=torch.long, device=wave.device)
    rows = [extractor(wave[i : i + 1, : int(n)], None)[0][0] for i, n in enumerate(lengths.tolist())]
    frame_lengths = torch.tensor([r.shape[0] for r in rows], dtype=torch.long, device=wave.device)
    return nn.utils.rnn.pad_sequence(rows, batch_first=True), frame_lengths


def padding_mask_of(frame_lengths: Optional[Tensor], frames: int) -> Optional[Tensor]:
    """[B, frames] True on padded frames, or None when no row is padded."""
    if frame_lengths is None or not bool((frame_lengths < frames).any()):
        return None
    return torch.arange(frames, device=frame_lengths.device)[None, :] >= frame_lengths[:, None]


def self_attention(
    attention: nn.Module,
    x: Tensor,
    attn_mask: Optional[Tensor],
    padding_mask: Optional[Tensor] = None,
    reused: Optional[Tensor] = None,
    reuse_mode: str = "paper",
) -> tuple[Tensor, Tensor]:
    """torchaudio ``SelfAttention`` with explicit probabilities, or with a reused map.

    Args:
        attention: a torchaudio ``SelfAttention`` (``q_proj``/``k_proj`` may be None when reusing).
        x: [B, T, D].
        attn_mask: [B, 1, T, T] additive mask (-1e4 on padded keys, torchaudio's), or None.
        padding_mask: [B, T] True on padded frames (``reference_code`` reuse only).
        reused: [B, H, T, T] post-softmax probabilities of an earlier layer to reuse, or None
            to compute softmax(QKᵀ/√d_h + mask).
        reuse_mode: "paper" (use ``reused`` as is) or "reference_code" (ARMHuBERT's code:
            the (H, B, T, T) tensor viewed as (B·H, T, T), padded keys set to -inf, softmax
            again, no attention dropout; METHODS.md §5.1 a-c).

    Returns:
        output [B, T, D] and the probabilities [B, H, T, T] that multiplied V (before dropout).
    """
    batch, frames, _ = x.shape
    heads = attention.num_heads
    shape = (batch, frames, heads, attention.head_dim)
    v = attention.v_proj(x).view(shape).transpose(1, 2)  # B, H, T, Hd
    dropout = attention.dropout if attention.training else 0.0
    if reused is None:
        q = attention.q_proj(x).view(shape).transpose(1, 2)
        k = attention.k_proj(x).view(shape).transpose(1, 2)
        scores = (q * attention.scaling) @ k.transpose(-2, -1)
        if attn_mask is not None:
            scores = scores + attn_mask
        probs = scores.softmax(-1)
    elif reuse_mode == "paper":
        probs = reused
    else:
        # fairseq hands over (H, B, T, T); `.contiguous().view(B·H, T, T)` meets V laid out as b·H + h
        probs = reused.transpose(0, 1).reshape(batch, heads, frames, frames)
        if padding_mask is not None:
            probs = probs.masked_fill(padding_mask[:, None, None, :], float("-inf"))
        probs = probs.softmax(-1)
        dropout = 0.0
    out = F.dropout(probs, dropout, training=True) if dropout > 0 else probs
    out = (out @ v).transpose(1, 2).reshape(batch, frames, heads * attention.head_dim)
    return attention.out_proj(out), probs


def encoder_layer(
    layer: nn.Module,
    x: Tensor,
    attn_mask: Optional[Tensor],
    padding_mask: Optional[Tensor] = None,
    reused: Optional[Tensor] = None,
    reuse_mode: str = "paper",
) -> tuple[Tensor, Tensor]:
    """torchaudio ``EncoderLayer.forward`` (post-LN or pre-LN) with :func:`self_attention`.

    Returns:
        the layer output [B, T, D] and the attention probabilities [B, H, T, T] it used.
    """
    residual = x
    if layer.layer_norm_first:
        x = layer.layer_norm(x)
    x, probs = self_attention(layer.attention, x, attn_mask, padding_mask, reused, reuse_mode)
    x = residual + layer.dropout(x)
    if layer.layer_norm_first:
        x = x + layer.feed_forward(layer.final_layer_norm(x))
    else:
        x = layer.layer_norm(x)
        x = layer.final_layer_norm(x + layer.feed_forward(x))
    return x, probs


class HubertModel(nn.Module):
    """A HuBERT encoder (torchaudio ``Wav2Vec2Model`` in ``.encoder``) plus a mask embedding.

    ``state_dict()`` keys are ``encoder.<torchaudio keys>`` and ``mask_emb``.
    """

    def __init__(self, cfg: HubertConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = build_encoder(cfg)
        # HuBERT's mask embedding: U(0, 1) init, replaces masked frames after the projection.
        self.mask_emb = nn.Parameter(torch.empty(cfg.embed_dim).uniform_())
        computes = cfg.computes_attention
        self._computes = computes
        # a computing layer keeps its probabilities only when a later layer reuses them
        self._keeps_map = tuple(c and not all(computes[i + 1 :]) for i, c in enumerate(computes))

    @property
    def num_states(self) -> int:
        return self.cfg.num_layers + 1

    def frames(self, num_samples: int) -> int:
        return conv_frames(num_samples, self.cfg.conv_layers)

    def cnn(self, wave: Tensor, lengths: Optional[Tensor]) -> tuple[Tensor, Optional[Tensor]]:
        """CNN features [B, T, C] and valid frame lengths [B] (or None); see :func:`run_cnn`."""
        return run_cnn(self.encoder.feature_extractor, wave, lengths)

    def forward(
        self,
        wave: Tensor,
        lengths: Optional[Tensor] = None,
        mask: Optional[Tensor] = None,
        feature_grad_mult: float = 1.0,
        need_attention: bool = False,
    ) -> HubertOutput:
        """Run the encoder and return every hidden state.

        Args:
            wave: [B, S] float waveforms at 16 kHz, zero-padded.
            lengths: [B] valid samples per row, or None if no row is padded.
            mask: [B, T] bool, frames to replace by the mask embedding (masked prediction), or None.
            feature_grad_mult: scale of the CNN's gradients (HuBERT: 0.1); 1 leaves them alone.
            need_attention: also return each layer's head-averaged attention map [B, T, T].

        Layers run through torchaudio's ``EncoderLayer`` (fused attention) unless their
        attention probabilities are needed (``need_attention``, or a later layer reuses them)
        or they reuse a map: those run through :func:`encoder_layer`, the same math.
        """
        feats, frame_lengths = self.cnn(wave, lengths)
        if self.training and feature_grad_mult != 1.0:
            feats = _GradMultiply.apply(feats, feature_grad_mult)
        features_pen = feats.float().pow(2).mean()

        enc = self.encoder.encoder
        x = enc.feature_projection(feats)
        batch, frames, _ = x.shape
        attn_mask = None
        padding_mask = padding_mask_of(frame_lengths, frames)
        if padding_mask is not None:
            x = x.masked_fill(padding_mask[..., None], 0.0)
            # torchaudio's additive attention mask: -1e4 on padded keys.
            attn_mask = (-10000.0 * padding_mask[:, None, None, :].to(x.dtype)).expand(batch, 1, frames, frames)
        if mask is not None:
            if mask.shape != (batch, frames):
                raise ValueError(f"mask must be [batch, frames] = {[batch, frames]}, found {list(mask.shape)}")
            x = torch.where(mask[..., None], self.mask_emb.to(x.dtype), x)

        transformer = enc.transformer
        x = transformer._preprocess(x)  # positional conv, LayerNorm (post-LN models), dropout
        states = [x]
        attentions: Optional[list[Optional[Tensor]]] = [] if need_attention else None
        num_layers = len(transformer.layers)
        grad_scale = self.cfg.layer_grad_scale and torch.is_grad_enabled()
        last_map: Optional[Tensor] = None  # probabilities [B, H, T, T] of the last computing layer
        for i, layer in enumerate(transformer.layers):
            computes = self._computes[i]
            dropped = self.training and transformer.layer_drop > 0 and torch.rand(()) < transformer.layer_drop
            if dropped or (not computes and last_map is None):  # nothing to reuse: skip as dropped
                states.append(x)  # a dropped layer passes its input on; keep L + 1 states
                if attentions is not None:
                    attentions.append(None)
                continue
            if computes and not (need_attention or self._keeps_map[i]):
                x, _ = layer(x, attn_mask)
            else:
                x, probs = encoder_layer(layer, x, attn_mask, padding_mask,
                                         None if computes else last_map, self.cfg.reuse_mode)
                if computes:
                    last_map = probs
                if attentions is not None:
                    attentions.append(probs.mean(1))
            if grad_scale:  # METHODS.md §5.4: d/dx_i = a_i·(g_next + (1 - a_i)·g_state_i)
                scale = (num_layers - i) / (num_layers - i + 1)
                x = _GradMultiply.apply(x, scale)
                states.append(_GradMultiply.apply(x, 1.0 - scale))
            else:
                states.append(x)
        if not transformer.layer_norm_first:  # pre-LN models normalise the final output
            states[-1] = transformer.layer_norm(states[-1])
        return HubertOutput(states, frame_lengths, padding_mask, features_pen, attentions)


def build_student(cfg) -> nn.Module:
    """The student encoder a config describes: :class:`HubertModel` or ``LstmModel``."""
    from raydistill.models.lstm import LstmConfig, LstmModel  # lstm imports this module

    if isinstance(cfg, HubertConfig):
        return HubertModel(cfg)
    if isinstance(cfg, LstmConfig):
        return LstmModel(cfg)
    raise TypeError(f"no student model for a {type(cfg).__name__}")


class PredictionHead(nn.Module):
    """HuBERT's pre-training head: ``logits[t, c] = cos(W·h_t, e_c) / temperature`` over all units.

    Equivalent to fairseq's ``compute_nce`` (whose ``[positive; all C]`` layout with the
    duplicate positive set to -inf gives the same C-way softmax), computed as one matmul.
    """

    def __init__(self, embed_dim: int, num_classes: int, final_dim: int = 256, temperature: float = 0.1):
        super().__init__()
        self.final_proj = nn.Linear(embed_dim, final_dim)
        self.label_embs = nn.Parameter(torch.empty(num_classes, final_dim).uniform_())
        self.temperature = temperature

    @property
    def num_classes(self) -> int:
        return self.label_embs.shape[0]

    def forward(self, x: Tensor) -> Tensor:
        """x: [N, D] frames -> logits [N, K]."""
        proj = F.normalize(self.final_proj(x).float(), dim=-1)
        emb = F.normalize(self.label_embs.float(), dim=-1)
        return proj @ emb.t() / self.temperature


class MaskedPredictor(nn.Module):
    """A student encoder with its prediction head: what masked-prediction training optimises.

    ``state_dict()`` keys: ``model.*`` (the :class:`HubertModel`, or ``LstmModel``) and ``head.*``.
    """

    def __init__(self, cfg, num_classes: int, final_dim: int = 256):
        super().__init__()
        self.model = build_student(cfg)  # a HubertModel, or an LstmModel for an LstmConfig
        self.head = PredictionHead(cfg.embed_dim, num_classes, final_dim)

    def forward(self, wave: Tensor, mask: Optional[Tensor], feature_grad_mult: float = 1.0) -> HubertOutput:
        return self.model(wave, None, mask=mask, feature_grad_mult=feature_grad_mult)


def compute_span_mask(
    lengths: list[int],
    frames: int,
    prob: float,
    span: int,
    *,
    min_masks: int = 2,
    generator: Optional[torch.Generator] = None,
) -> Tensor:
    """HuBERT/fairseq static span masking with overlap allowed (METHODS.md §1.3).

    Each row of valid length ``T`` gets ``int(prob * T / span + U[0, 1))`` spans (at least
    ``min_masks``) of ``span`` frames, starting at distinct positions drawn from
    ``randperm(T - span)``; spans may overlap, so ``prob=0.8, span=10`` masks about 57 %
    of the frames (HuBERT's "p = 8 %, l = 10"). As in fairseq's ``require_same_masks``,
    every row is then subsampled to the batch's smallest masked count.

    Returns:
        [B, frames] bool mask, never True on padding.
    """
    rows = []
    for length in lengths:
        length = int(length)
        usable = max(length - span, 1)
        num = int(prob * length / span + torch.rand((), generator=generator).item())
        num = min(max(min_masks, num), usable)
        starts = torch.randperm(usable, generator=generator)[:num]
        idx = (starts[:, None] + torch.arange(span)[None, :]).flatten()
        rows.append(torch.unique(idx[idx < length]))
    fewest = min(len(r) for r in rows)
    mask = torch.zeros(len(lengths), frames, dtype=torch.bool)
    for i, idx in enumerate(rows):
        if len(idx) > fewest:
            idx = idx[torch.randperm(len(idx), generator=generator)[:fewest]]
        mask[i, idx] = True
    return mask


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


class HubertUpstream(nn.Module):
    """A :class:`HubertModel` seen as an evaluation upstream: all ``L + 1`` hidden states.

    (The protocol is :class:`raydistill.evaluate.upstream.Upstream`; the caller freezes it.)
    """

    def __init__(self, model: HubertModel, name: str = "hubert"):
        super().__init__()
        self.model = model
        self.name = name
        self.num_states = model.num_states
        self.dim = model.cfg.embed_dim

    def hidden_states(self, wave: Tensor, lengths: Tensor) -> tuple[list[Tensor], Tensor]:
        out = self.model(wave, lengths)
        frames = out.lengths
        if frames is None:
            frames = torch.full((wave.shape[0],), out.states[0].shape[1], dtype=torch.long, device=wave.device)
        return out.states, frames
