"""The HuBERT encoder raydistill trains and distils from, with every hidden state exposed.

:class:`HubertModel` assembles :mod:`raydistill.models.components` (torchaudio's state-dict
layout, so torchaudio/HF HuBERT checkpoints load into ``.encoder``) and adds what distillation
needs:

* ``forward`` returns all ``L + 1`` hidden states (the Transformer input, then each layer's
  output), as s3prl's HuBERT upstream does, and can replace masked frames by the learned mask
  embedding (HuBERT masked prediction);
* ``forward(..., need_attention=True)`` returns each layer's head-averaged attention map
  (STaR); ARMHuBERT's attention-map reuse (``HubertConfig.reuse_pattern``) runs the same way,
  its reusing layers without Q/K (docs/methods.md, STaR and ARMHuBERT).
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import torch
from torch import Tensor, nn

from raydistill.models.components import GradMultiply, Wav2Vec2, padding_mask_of, run_cnn
from raydistill.models.config import HubertConfig, conv_frames


class HubertOutput(NamedTuple):
    states: list[Tensor]  # L + 1 tensors [B, T, D]: Transformer input, then each layer's output
    lengths: Optional[Tensor]  # [B] valid frames, or None when the batch is unpadded
    padding_mask: Optional[Tensor]  # [B, T] True on padded frames
    features_pen: Tensor  # mean squared CNN output (HuBERT's feature penalty), scalar
    # With need_attention: L maps [B, T, T], head-averaged post-softmax probabilities (rows =
    # queries; the map a reusing layer used); None for a layer skipped by layer drop.
    attentions: Optional[list[Optional[Tensor]]] = None


class HubertModel(nn.Module):
    """A HuBERT encoder (CNN and Transformer in ``.encoder``, torchaudio's ``Wav2Vec2Model``
    layout) plus a mask embedding.

    ``state_dict()`` keys are ``encoder.<torchaudio keys>`` and ``mask_emb``. Reusing layers
    (``cfg.reuse_pattern``) have no ``q_proj``/``k_proj``; without a feature projection
    (``cfg.project_features`` False) there is no ``feature_projection.projection``.
    """

    def __init__(self, cfg: HubertConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = Wav2Vec2(cfg)
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

        Attention runs fused (``scaled_dot_product_attention``) unless its probabilities are
        needed (``need_attention``, or a later layer reuses them) or the layer reuses a map.
        """
        feats, frame_lengths = self.cnn(wave, lengths)
        if self.training and feature_grad_mult != 1.0:
            feats = GradMultiply.apply(feats, feature_grad_mult)
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
        x = transformer.embed(x)  # positional conv, LayerNorm (post-LN models), dropout
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
            explicit = need_attention or self._keeps_map[i] or not computes
            x, probs = layer(x, attn_mask, padding_mask=padding_mask, reused=None if computes else last_map,
                             reuse_mode=self.cfg.reuse_mode, need_probs=explicit)
            if explicit:
                if computes:
                    last_map = probs
                if attentions is not None:
                    attentions.append(probs.mean(1))
            if grad_scale:  # docs/methods.md#layer-gradient-scaling: d/dx_i = a_i·(g_next + (1 - a_i)·g_state_i)
                scale = (num_layers - i) / (num_layers - i + 1)
                x = GradMultiply.apply(x, scale)
                states.append(GradMultiply.apply(x, 1.0 - scale))
            else:
                states.append(x)
        if transformer.norm_output:  # pre-LN models normalise the final output
            states[-1] = transformer.layer_norm(states[-1])
        return HubertOutput(states, frame_lengths, padding_mask, features_pen, attentions)
