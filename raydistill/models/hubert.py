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
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import NamedTuple, Optional

import torch
import torch.nn.functional as F
import torchaudio
from torch import Tensor, nn

ConvLayers = tuple[tuple[int, int, int], ...]


def hubert_conv(channels: int = 512) -> ConvLayers:
    """HuBERT's 7-layer CNN (total stride 320 = 20 ms, receptive field 400 samples) at a given width."""
    return ((channels, 10, 5),) + ((channels, 3, 2),) * 4 + ((channels, 2, 2),) * 2


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

    @property
    def stride(self) -> int:
        s = 1
        for _, _, stride in self.conv_layers:
            s *= stride
        return s

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["conv_layers"] = [list(c) for c in self.conv_layers]
        return d


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
}


def conv_frames(num_samples: int, conv_layers: ConvLayers) -> int:
    """Number of frames the CNN produces for ``num_samples`` samples (no padding in HuBERT's CNN)."""
    n = int(num_samples)
    for _, kernel, stride in conv_layers:
        n = (n - kernel) // stride + 1
    return max(n, 0)


def build_encoder(cfg: HubertConfig) -> torchaudio.models.Wav2Vec2Model:
    """torchaudio's ``wav2vec2_model`` factory, called with a :class:`HubertConfig`."""
    return torchaudio.models.wav2vec2_model(
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

    @property
    def num_states(self) -> int:
        return self.cfg.num_layers + 1

    def frames(self, num_samples: int) -> int:
        return conv_frames(num_samples, self.cfg.conv_layers)

    def cnn(self, wave: Tensor, lengths: Optional[Tensor]) -> tuple[Tensor, Optional[Tensor]]:
        """CNN features [B, T, C] and valid frame lengths [B] (or None).

        The first conv's GroupNorm normalises over the whole time axis, so zero padding
        would change a row's features. Rows of a padded batch therefore go through the
        CNN one by one on their valid samples, which makes a padded batch equal to
        one-by-one runs. (Training batches are cropped to equal length: no padding there.)
        """
        if wave.ndim != 2:
            raise ValueError(f"expected wave of shape [batch, samples], found {list(wave.shape)}")
        extractor = self.encoder.feature_extractor
        if lengths is None or bool((lengths == wave.shape[1]).all()):
            feats, _ = extractor(wave, None)
            if lengths is None:
                return feats, None
            return feats, torch.full((wave.shape[0],), feats.shape[1], dtype=torch.long, device=wave.device)
        rows = [extractor(wave[i : i + 1, : int(n)], None)[0][0] for i, n in enumerate(lengths.tolist())]
        frame_lengths = torch.tensor([r.shape[0] for r in rows], dtype=torch.long, device=wave.device)
        return nn.utils.rnn.pad_sequence(rows, batch_first=True), frame_lengths

    def forward(
        self,
        wave: Tensor,
        lengths: Optional[Tensor] = None,
        mask: Optional[Tensor] = None,
        feature_grad_mult: float = 1.0,
    ) -> HubertOutput:
        """Run the encoder and return every hidden state.

        Args:
            wave: [B, S] float waveforms at 16 kHz, zero-padded.
            lengths: [B] valid samples per row, or None if no row is padded.
            mask: [B, T] bool, frames to replace by the mask embedding (masked prediction), or None.
            feature_grad_mult: scale of the CNN's gradients (HuBERT: 0.1); 1 leaves them alone.
        """
        feats, frame_lengths = self.cnn(wave, lengths)
        if self.training and feature_grad_mult != 1.0:
            feats = _GradMultiply.apply(feats, feature_grad_mult)
        features_pen = feats.float().pow(2).mean()

        enc = self.encoder.encoder
        x = enc.feature_projection(feats)
        batch, frames, _ = x.shape
        padding_mask = attn_mask = None
        if frame_lengths is not None and bool((frame_lengths < frames).any()):
            padding_mask = torch.arange(frames, device=x.device)[None, :] >= frame_lengths[:, None]
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
        for layer in transformer.layers:
            if self.training and transformer.layer_drop > 0 and torch.rand(()) < transformer.layer_drop:
                states.append(x)  # a dropped layer passes its input on; keep L + 1 states
                continue
            x, _ = layer(x, attn_mask)
            states.append(x)
        if not transformer.layer_norm_first:  # pre-LN models normalise the final output
            states[-1] = transformer.layer_norm(states[-1])
        return HubertOutput(states, frame_lengths, padding_mask, features_pen)


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
    """A HuBERT encoder with its prediction head: what masked-prediction training optimises.

    ``state_dict()`` keys: ``model.*`` (the :class:`HubertModel`) and ``head.*``.
    """

    def __init__(self, cfg: HubertConfig, num_classes: int, final_dim: int = 256):
        super().__init__()
        self.model = HubertModel(cfg)
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
