"""The blocks of a HuBERT encoder, owned by raydistill, in torchaudio's state-dict layout.

Every module keeps the attribute names of ``torchaudio.models.wav2vec2.components`` so a
torchaudio (or, through torchaudio's importer, Hugging Face) HuBERT state dict loads as is and
raydistill checkpoints load back into torchaudio; ``tests/test_models.py`` checks the layout and
the forward pass against torchaudio's own ``hubert_base()``. What differs is what distillation
needs: :class:`SelfAttention` can return its attention probabilities and can run on another
layer's map without Q/K (attention-map reuse), the positional convolution's weight norm is plain
parameters (no parametrisation hooks, so modules deep-copy and pickle), and the CNN front end
returns features only (frame counts come from :func:`raydistill.models.config.conv_frames`).
The assembly is :mod:`raydistill.models.hubert`; the equations are in docs/methods.md.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from raydistill.models.config import ConvLayers, HubertConfig


class GradMultiply(torch.autograd.Function):
    """Identity forward, gradient × ``scale`` backward (fairseq's ``feature_grad_mult``, and
    ARMHuBERT's layer gradient scaling)."""

    @staticmethod
    def forward(ctx, x, scale):
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.scale, None


# --- CNN front end -------------------------------------------------------------------------


class ChannelLayerNorm(nn.LayerNorm):
    """LayerNorm over the channels of a [B, C, T] tensor (the Large CNN's per-layer norm)."""

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x.transpose(-2, -1)).transpose(-2, -1)


class ConvBlock(nn.Module):
    """Conv1d → optional norm → GELU."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int, bias: bool,
                 layer_norm: Optional[nn.Module]):
        super().__init__()
        self.kernel_size, self.stride = kernel, stride
        self.layer_norm = layer_norm
        self.conv = nn.Conv1d(in_channels, out_channels, kernel, stride=stride, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv(x)
        if self.layer_norm is not None:
            x = self.layer_norm(x)
        return F.gelu(x)


class FeatureExtractor(nn.Module):
    """The waveform CNN: [B, S] samples → [B, T, C] features (no padding: T = conv_frames(S))."""

    def __init__(self, mode: str, conv_layers: ConvLayers, bias: bool):
        super().__init__()
        if mode not in ("group_norm", "layer_norm"):
            raise ValueError(f"extractor_mode must be 'group_norm' or 'layer_norm', found {mode!r}")
        blocks, channels_in = [], 1
        for i, (channels, kernel, stride) in enumerate(conv_layers):
            norm = None
            if mode == "group_norm" and i == 0:  # Base: one GroupNorm (a group per channel), first layer only
                norm = nn.GroupNorm(channels, channels, affine=True)
            elif mode == "layer_norm":  # Large: LayerNorm after every layer
                norm = ChannelLayerNorm(channels, elementwise_affine=True)
            blocks.append(ConvBlock(channels_in, channels, kernel, stride, bias, norm))
            channels_in = channels
        self.conv_layers = nn.ModuleList(blocks)

    def forward(self, wave: Tensor) -> Tensor:
        if wave.ndim != 2:
            raise ValueError(f"expected wave of shape [batch, samples], found {list(wave.shape)}")
        x = wave.unsqueeze(1)
        for block in self.conv_layers:
            x = block(x)
        return x.transpose(1, 2)


def run_cnn(extractor: nn.Module, wave: Tensor, lengths: Optional[Tensor]) -> tuple[Tensor, Optional[Tensor]]:
    """A CNN front end (:class:`~raydistill.models.components.FeatureExtractor`) on a zero-padded
    batch: features [B, T, C] and frame lengths [B] (or None).

    The first conv's GroupNorm normalises over the whole time axis, so zero padding
    would change a row's features. Rows of a padded batch therefore go through the
    CNN one by one on their valid samples, which makes a padded batch equal to
    one-by-one runs. (Training batches are cropped to equal length: no padding there.)
    """
    if wave.ndim != 2:
        raise ValueError(f"expected wave of shape [batch, samples], found {list(wave.shape)}")
    if lengths is None or bool((lengths == wave.shape[1]).all()):
        feats = extractor(wave)
        if lengths is None:
            return feats, None
        return feats, torch.full((wave.shape[0],), feats.shape[1], dtype=torch.long, device=wave.device)
    rows = [extractor(wave[i : i + 1, : int(n)])[0] for i, n in enumerate(lengths.tolist())]
    frame_lengths = torch.tensor([r.shape[0] for r in rows], dtype=torch.long, device=wave.device)
    return nn.utils.rnn.pad_sequence(rows, batch_first=True), frame_lengths


def padding_mask_of(frame_lengths: Optional[Tensor], frames: int) -> Optional[Tensor]:
    """[B, frames] True on padded frames, or None when no row is padded."""
    if frame_lengths is None or not bool((frame_lengths < frames).any()):
        return None
    return torch.arange(frames, device=frame_lengths.device)[None, :] >= frame_lengths[:, None]


# --- Transformer -----------------------------------------------------------------------------


class FeatureProjection(nn.Module):
    """LayerNorm → Linear (or nothing: fairseq style when the CNN already has the width) → dropout."""

    def __init__(self, in_features: int, out_features: int, dropout: float, project: bool = True):
        super().__init__()
        self.layer_norm = nn.LayerNorm(in_features)
        self.projection = nn.Linear(in_features, out_features) if project else nn.Identity()
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.dropout(self.projection(self.layer_norm(x)))


class WeightNorm(nn.Module):
    """``weight = g · v / ‖v‖`` (norm over every axis but ``dim``), as plain parameters.

    Named as torch's ``parametrizations.weight_norm`` stores them (``original0`` = g,
    ``original1`` = v), so torchaudio's state dicts load unchanged; checkpoints from before
    torch's parametrisations name them ``weight_g`` / ``weight_v`` (see :func:`legacy_keys`).
    """

    def __init__(self, weight: Tensor, dim: int):
        super().__init__()
        self.dim = dim
        v = weight.detach().clone()
        self.original0 = nn.Parameter(self._norm(v))
        self.original1 = nn.Parameter(v)

    def _norm(self, v: Tensor) -> Tensor:
        axes = [d for d in range(v.ndim) if d != self.dim]
        return v.norm(dim=axes, keepdim=True)

    def forward(self) -> Tensor:
        return self.original1 * (self.original0 / self._norm(self.original1))


class WeightNormConv1d(nn.Module):
    """A Conv1d whose weight is weight-normalised over the kernel axis (wav2vec 2.0's positional conv)."""

    def __init__(self, channels: int, kernel: int, groups: int):
        super().__init__()
        conv = nn.Conv1d(channels, channels, kernel, padding=kernel // 2, groups=groups)
        self.in_channels, self.kernel_size, self.padding, self.groups = channels, kernel, kernel // 2, groups
        self.bias = conv.bias
        self.parametrizations = nn.ModuleDict({"weight": WeightNorm(conv.weight, dim=2)})

    @property
    def weight(self) -> Tensor:
        return self.parametrizations["weight"]()

    def forward(self, x: Tensor) -> Tensor:
        return F.conv1d(x, self.weight, self.bias, padding=self.padding, groups=self.groups)


def legacy_keys(state: dict) -> dict:
    """A state dict with pre-parametrisation weight-norm names (``conv.weight_g``/``weight_v``,
    torchaudio < 2.1 and fairseq) renamed to :class:`WeightNorm`'s."""
    renamed = {}
    for key, value in state.items():
        for old, new in ((".weight_g", ".parametrizations.weight.original0"),
                         (".weight_v", ".parametrizations.weight.original1")):
            if key.endswith(old):
                key = key[: -len(old)] + new
        renamed[key] = value
    return renamed


class PositionalConv(nn.Module):
    """Convolutional relative position embedding: weight-normed grouped conv → GELU."""

    def __init__(self, embed_dim: int, kernel: int, groups: int):
        super().__init__()
        self.embed_dim = embed_dim
        self.conv = WeightNormConv1d(embed_dim, kernel, groups)
        self.num_remove = 1 if kernel % 2 == 0 else 0  # an even kernel pads one frame too many

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv(x.transpose(-2, -1))
        if self.num_remove:
            x = x[..., : -self.num_remove]
        return F.gelu(x).transpose(-2, -1)


class SelfAttention(nn.Module):
    """Multi-head self-attention that can expose its map or run on another layer's.

    ``q_proj``/``k_proj`` are None in a layer that reuses an earlier layer's map (ARMHuBERT):
    such a layer has only V and the output projection. The projections are created in
    torchaudio's order (k, v, q, out), so a seed initialises the same weights.
    """

    def __init__(self, embed_dim: int, num_heads: int, dropout: float = 0.0, computes: bool = True):
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim ({embed_dim}) must be divisible by num_heads ({num_heads})")
        self.embed_dim, self.num_heads, self.dropout = embed_dim, num_heads, dropout
        self.head_dim = embed_dim // num_heads
        self.scaling = self.head_dim ** -0.5
        self.k_proj = nn.Linear(embed_dim, embed_dim) if computes else None
        self.v_proj = nn.Linear(embed_dim, embed_dim)
        self.q_proj = nn.Linear(embed_dim, embed_dim) if computes else None
        self.out_proj = nn.Linear(embed_dim, embed_dim)

    def forward(self, x: Tensor, attn_mask: Optional[Tensor] = None, *, padding_mask: Optional[Tensor] = None,
                reused: Optional[Tensor] = None, reuse_mode: str = "paper",
                need_probs: bool = False) -> tuple[Tensor, Optional[Tensor]]:
        """Attention output [B, T, D] and, when computed explicitly, the probabilities [B, H, T, T].

        Args:
            x: [B, T, D].
            attn_mask: [B, 1, T, T] additive mask (-1e4 on padded keys), or None.
            padding_mask: [B, T] True on padded frames (``reference_code`` reuse only).
            reused: [B, H, T, T] post-softmax probabilities of an earlier layer, or None to
                compute softmax(QKᵀ/√d_h + mask).
            reuse_mode: "paper" (use ``reused`` as is) or "reference_code" (ARMHuBERT's released
                code: the (H, B, T, T) tensor viewed as (B·H, T, T), padded keys set to -inf,
                softmax again, no attention dropout; docs/methods.md, ARMHuBERT).
            need_probs: return the probabilities. Without it (and without ``reused``) the
                fused ``scaled_dot_product_attention`` runs and the second value is None.
        """
        batch, frames, _ = x.shape
        heads = self.num_heads
        shape = (batch, frames, heads, self.head_dim)
        dropout = self.dropout if self.training else 0.0
        if reused is None:
            q = self.q_proj(x).view(shape).transpose(1, 2)
            k = self.k_proj(x).view(shape).transpose(1, 2)
        v = self.v_proj(x).view(shape).transpose(1, 2)  # B, H, T, Hd
        if reused is None and not need_probs:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout, is_causal=False)
            probs = None
        else:
            if reused is None:
                scores = (q * self.scaling) @ k.transpose(-2, -1)
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
            out = (F.dropout(probs, dropout, training=True) if dropout > 0 else probs) @ v
        out = out.transpose(1, 2).reshape(batch, frames, heads * self.head_dim)
        return self.out_proj(out), probs


class FeedForward(nn.Module):
    """Linear → GELU → dropout → Linear → dropout."""

    def __init__(self, dim: int, hidden: int, hidden_dropout: float, dropout: float):
        super().__init__()
        self.intermediate_dense = nn.Linear(dim, hidden)
        self.intermediate_dropout = nn.Dropout(hidden_dropout)
        self.output_dense = nn.Linear(hidden, dim)
        self.output_dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        x = self.intermediate_dropout(F.gelu(self.intermediate_dense(x)))
        return self.output_dropout(self.output_dense(x))


class EncoderLayer(nn.Module):
    """Self-attention and feed-forward with residuals, post-LN (Base) or pre-LN (Large)."""

    def __init__(self, attention: SelfAttention, feed_forward: FeedForward, dropout: float, layer_norm_first: bool):
        super().__init__()
        self.attention = attention
        self.dropout = nn.Dropout(dropout)
        self.layer_norm = nn.LayerNorm(attention.embed_dim)
        self.layer_norm_first = layer_norm_first
        self.feed_forward = feed_forward
        self.final_layer_norm = nn.LayerNorm(attention.embed_dim)

    def forward(self, x: Tensor, attn_mask: Optional[Tensor] = None, **attention) -> tuple[Tensor, Optional[Tensor]]:
        """Output [B, T, D] and the attention probabilities (see :meth:`SelfAttention.forward`)."""
        residual = x
        if self.layer_norm_first:
            x = self.layer_norm(x)
        x, probs = self.attention(x, attn_mask, **attention)
        x = residual + self.dropout(x)
        if self.layer_norm_first:
            return x + self.feed_forward(self.final_layer_norm(x)), probs
        x = self.layer_norm(x)
        return self.final_layer_norm(x + self.feed_forward(x)), probs


class Transformer(nn.Module):
    """Positional conv, the layers, and one LayerNorm: on the input of a post-LN stack (Base),
    on the output of a pre-LN one (Large). The loop over layers is the caller's
    (:class:`~raydistill.models.hubert.HubertModel` keeps every state)."""

    def __init__(self, cfg: HubertConfig):
        super().__init__()
        self.pos_conv_embed = PositionalConv(cfg.embed_dim, cfg.pos_conv_kernel, cfg.pos_conv_groups)
        self.layer_norm = nn.LayerNorm(cfg.embed_dim)
        self.norm_output = cfg.layer_norm_first
        self.layer_drop = cfg.layer_drop
        self.dropout = nn.Dropout(cfg.dropout)
        layers = []
        for computes in cfg.computes_attention:
            attention = SelfAttention(cfg.embed_dim, cfg.num_heads, cfg.attention_dropout, computes)
            feed_forward = FeedForward(cfg.embed_dim, cfg.ffn_dim, cfg.activation_dropout, cfg.dropout)
            layers.append(EncoderLayer(attention, feed_forward, cfg.dropout, cfg.layer_norm_first))
        self.layers = nn.ModuleList(layers)

    def embed(self, x: Tensor) -> Tensor:
        """The first layer's input: x + positional conv, LayerNorm (post-LN stacks), dropout."""
        x = x + self.pos_conv_embed(x)
        if not self.norm_output:
            x = self.layer_norm(x)
        return self.dropout(x)


class Encoder(nn.Module):
    """Feature projection and Transformer (torchaudio's ``Encoder`` layout)."""

    def __init__(self, cfg: HubertConfig):
        super().__init__()
        self.feature_projection = FeatureProjection(cfg.conv_layers[-1][0], cfg.embed_dim, cfg.dropout_input,
                                                    project=cfg.project_features)
        self.transformer = Transformer(cfg)


class Wav2Vec2(nn.Module):
    """CNN and encoder (torchaudio's ``Wav2Vec2Model`` layout: ``feature_extractor.*``, ``encoder.*``)."""

    def __init__(self, cfg: HubertConfig):
        super().__init__()
        self.feature_extractor = FeatureExtractor(cfg.extractor_mode, cfg.conv_layers, cfg.conv_bias)
        self.encoder = Encoder(cfg)
