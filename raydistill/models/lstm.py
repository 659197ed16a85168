"""The BiLSTM student of KD/DKD on HuBERT's pre-training logits (arXiv 2309.09920;
docs/methods.md#the-bilstm-student).

HuBERT's CNN feature encoder, a LayerNorm on its features, an optional Linear,
then a stack of bidirectional LSTM layers. It has :class:`~raydistill.models.hubert.HubertModel`'s
interface (``cfg``, ``num_states``, ``frames``, ``forward -> HubertOutput``), so the training
loop, the prediction head and the evaluation upstream take either. Its hidden states are the
LSTM layers' outputs, preceded by the LSTM input when that has the same width (``input_proj``
= 2·hidden), as SUPERB's weighted sum of all hidden states needs one width.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from raydistill.models.components import FeatureExtractor, GradMultiply, padding_mask_of, run_cnn
from raydistill.models.config import ConvLayers, conv_frames, conv_stride, hubert_conv
from raydistill.models.hubert import HubertOutput


@dataclass(frozen=True)
class LstmConfig:
    """Architecture of the BiLSTM student. Default: 4 × BiLSTM-384 on the 512-channel HuBERT CNN,
    4,201,472 (CNN + LayerNorm) + 13,393,920 (LSTM) + 512 (mask_emb) = 17,595,904 parameters."""

    arch: str = "lstm"  # marks the student type in configs; always "lstm"
    conv_layers: ConvLayers = hubert_conv(512)  # (channels, kernel, stride) per CNN layer
    extractor_mode: str = "group_norm"  # as HubertConfig
    conv_bias: bool = False
    input_proj: int = 0  # 0: LSTM on the LayerNorm'd CNN features; > 0: Linear to this size first
    hidden: int = 384  # per direction; outputs are 2·hidden wide
    num_layers: int = 4
    dropout: float = 0.0  # between LSTM layers (nn.LSTM's `dropout`)

    def __post_init__(self):
        object.__setattr__(self, "conv_layers", tuple(tuple(int(v) for v in c) for c in self.conv_layers))
        checks = [
            (self.arch == "lstm", f"arch must be 'lstm', found {self.arch!r}"),
            (len(self.conv_layers) > 0 and all(len(c) == 3 for c in self.conv_layers),
             "conv_layers must be a non-empty list of [channels, kernel, stride]"),
            (self.extractor_mode in ("group_norm", "layer_norm"),
             f"extractor_mode must be 'group_norm' or 'layer_norm', found {self.extractor_mode!r}"),
            (self.input_proj >= 0, f"input_proj must be >= 0, found {self.input_proj}"),
            (self.hidden > 0 and self.num_layers > 0, "hidden and num_layers must be positive"),
            (0.0 <= self.dropout < 1.0, "dropout must be in [0, 1)"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)

    @property
    def stride(self) -> int:
        return conv_stride(self.conv_layers)

    @property
    def embed_dim(self) -> int:
        """Width of every LSTM layer's output (both directions)."""
        return 2 * self.hidden

    @property
    def input_dim(self) -> int:
        """Width of the LSTM input (state 0): the projection size, or the CNN's channel count."""
        return self.input_proj or self.conv_layers[-1][0]

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["conv_layers"] = [list(c) for c in self.conv_layers]
        return d


class LstmModel(nn.Module):
    """CNN → LayerNorm → (Linear) → L × BiLSTM, every layer's output exposed.

    ``states`` are the LSTM input (state 0, where masked frames take ``mask_emb``) and each
    layer's output [B, T, 2·hidden]. One single-layer ``nn.LSTM`` per layer, so the parameter
    count equals ``nn.LSTM(num_layers=L, bidirectional=True)``'s. Padded batches are packed, so
    padding never reaches valid frames; padded frames of every state are zero.
    """

    def __init__(self, cfg: LstmConfig):
        super().__init__()
        self.cfg = cfg
        self.feature_extractor = FeatureExtractor(cfg.extractor_mode, cfg.conv_layers, cfg.conv_bias)
        channels = cfg.conv_layers[-1][0]
        self.layer_norm = nn.LayerNorm(channels)
        self.projection = nn.Linear(channels, cfg.input_proj) if cfg.input_proj else None
        self.mask_emb = nn.Parameter(torch.empty(cfg.input_dim).uniform_())
        sizes = [cfg.input_dim] + [cfg.embed_dim] * (cfg.num_layers - 1)
        self.lstms = nn.ModuleList(
            nn.LSTM(size, cfg.hidden, num_layers=1, batch_first=True, bidirectional=True) for size in sizes
        )
        self.dropout = nn.Dropout(cfg.dropout)

    @property
    def input_is_a_state(self) -> bool:
        """Whether the LSTM input counts as hidden state 0: only when it has the layers' width,
        so SUPERB's weighted sum of all states stays defined (with ``input_proj`` = 2·hidden)."""
        return self.cfg.input_dim == self.cfg.embed_dim

    @property
    def num_states(self) -> int:
        return self.cfg.num_layers + int(self.input_is_a_state)

    def frames(self, num_samples: int) -> int:
        return conv_frames(num_samples, self.cfg.conv_layers)

    def cnn(self, wave: Tensor, lengths: Optional[Tensor]) -> tuple[Tensor, Optional[Tensor]]:
        """CNN features [B, T, C] and valid frame lengths [B] (or None); see :func:`run_cnn`."""
        return run_cnn(self.feature_extractor, wave, lengths)

    def forward(
        self,
        wave: Tensor,
        lengths: Optional[Tensor] = None,
        mask: Optional[Tensor] = None,
        feature_grad_mult: float = 1.0,
        need_attention: bool = False,
    ) -> HubertOutput:
        """Run the student and return every hidden state (as :meth:`HubertModel.forward`).

        Args:
            wave: [B, S] float waveforms at 16 kHz, zero-padded.
            lengths: [B] valid samples per row, or None if no row is padded.
            mask: [B, T] bool, frames of the LSTM input to replace by ``mask_emb``, or None.
            feature_grad_mult: scale of the CNN's gradients; 1 leaves them alone.
            need_attention: must be False (an LSTM has no attention).
        """
        if need_attention:
            raise ValueError("an LSTM student has no attention maps (need_attention=True)")
        feats, frame_lengths = self.cnn(wave, lengths)
        if self.training and feature_grad_mult != 1.0:
            feats = GradMultiply.apply(feats, feature_grad_mult)
        features_pen = feats.float().pow(2).mean()

        x = self.layer_norm(feats)
        if self.projection is not None:
            x = self.projection(x)
        batch, frames, _ = x.shape
        padding_mask = padding_mask_of(frame_lengths, frames)
        if padding_mask is not None:
            x = x.masked_fill(padding_mask[..., None], 0.0)
        if mask is not None:
            if mask.shape != (batch, frames):
                raise ValueError(f"mask must be [batch, frames] = {[batch, frames]}, found {list(mask.shape)}")
            x = torch.where(mask[..., None], self.mask_emb.to(x.dtype), x)

        states = [x]
        if padding_mask is None:
            for i, lstm in enumerate(self.lstms):
                x = lstm(self.dropout(x) if i > 0 else x)[0]
                states.append(x)
        else:
            packed = pack_padded_sequence(x, frame_lengths.cpu(), batch_first=True, enforce_sorted=False)
            for i, lstm in enumerate(self.lstms):
                if i > 0:
                    packed = packed._replace(data=self.dropout(packed.data))
                packed = lstm(packed)[0]
                states.append(pad_packed_sequence(packed, batch_first=True, total_length=frames)[0])
        if not self.input_is_a_state:
            states = states[1:]
        return HubertOutput(states, frame_lengths, padding_mask, features_pen, None)
