"""s3prl upstream for a raydistill student, in plain PyTorch (written by `raydistill convert --to s3prl`).

Needs torch only (no raydistill, no torchaudio). Beside this file: ``config.json`` (the
architecture) and ``model.pt`` (the weights, a plain state dict). The student is either a
HuBERT/wav2vec 2.0-style encoder (CNN -> Transformer, post- or pre-LN, optionally with
ARMHuBERT's attention-map reuse) or a BiLSTM on the same CNN. ``forward`` returns every hidden
state at a 20 ms stride: for a HuBERT the Transformer input, then each layer's output (the last
one after the final LayerNorm of a pre-LN model); for a BiLSTM each layer's output, preceded by
its input when that has the same width. Inference only: no dropout, no layer drop.
"""

import json
import os

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence, pad_sequence

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.pt"


# --- CNN front end (shared) ------------------------------------------------------------------


class ChannelLayerNorm(nn.LayerNorm):
    """LayerNorm over the channels of a [B, C, T] tensor."""

    def forward(self, x):
        return super().forward(x.transpose(-2, -1)).transpose(-2, -1)


class ConvBlock(nn.Module):
    """Conv1d -> norm (GroupNorm on the first block of a group_norm CNN, LayerNorm on every block
    of a layer_norm one, else none) -> GELU. ``layer_norm`` is torchaudio's name for either."""

    def __init__(self, channels_in, channels, kernel, stride, bias, norm):
        super().__init__()
        self.conv = nn.Conv1d(channels_in, channels, kernel, stride=stride, bias=bias)
        self.layer_norm = norm

    def forward(self, x):
        x = self.conv(x)
        if self.layer_norm is not None:
            x = self.layer_norm(x)
        return F.gelu(x)


def build_cnn(conv_layers, mode, bias):
    blocks, channels_in = [], 1
    for i, (channels, kernel, stride) in enumerate(conv_layers):
        norm = None
        if mode == "group_norm" and i == 0:
            norm = nn.GroupNorm(channels, channels, affine=True)
        elif mode == "layer_norm":
            norm = ChannelLayerNorm(channels, elementwise_affine=True)
        blocks.append(ConvBlock(channels_in, channels, kernel, stride, bias, norm))
        channels_in = channels
    return nn.ModuleList(blocks)


def run_cnn(cnn, wavs):
    """Each waveform through the CNN on its own samples (the first GroupNorm normalises over all
    of a row's time, so zero padding would change it): features [B, T, C], frame counts [B]."""
    rows = []
    for wav in wavs:
        x = wav.reshape(1, 1, -1)
        for block in cnn:
            x = block(x)
        rows.append(x[0].transpose(0, 1))
    lengths = torch.tensor([len(r) for r in rows], dtype=torch.long, device=wavs[0].device)
    return pad_sequence(rows, batch_first=True), lengths


# --- HuBERT / wav2vec 2.0 encoder --------------------------------------------------------------


class SelfAttention(nn.Module):
    """Multi-head attention; a layer that reuses an earlier layer's map has no q_proj/k_proj."""

    def __init__(self, dim, heads, computes):
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        self.k_proj = nn.Linear(dim, dim) if computes else None
        self.v_proj = nn.Linear(dim, dim)
        self.q_proj = nn.Linear(dim, dim) if computes else None
        self.out_proj = nn.Linear(dim, dim)

    def forward(self, x, attn_mask, padding_mask, reused, reuse_mode):
        """x [B, T, D] -> (output [B, T, D], probabilities [B, H, T, T])."""
        batch, frames, _ = x.shape
        shape = (batch, frames, self.heads, self.head_dim)
        v = self.v_proj(x).view(shape).transpose(1, 2)
        if reused is None:
            q = self.q_proj(x).view(shape).transpose(1, 2) * self.head_dim ** -0.5
            k = self.k_proj(x).view(shape).transpose(1, 2)
            scores = q @ k.transpose(-2, -1)
            if attn_mask is not None:
                scores = scores + attn_mask
            probs = scores.softmax(-1)
        elif reuse_mode == "paper":  # the earlier layer's probabilities as they are
            probs = reused
        else:  # "reference_code": ARMHuBERT's code views (H, B, T, T) as (B*H, T, T), softmax again
            probs = reused.transpose(0, 1).reshape(batch, self.heads, frames, frames)
            if padding_mask is not None:
                probs = probs.masked_fill(padding_mask[:, None, None, :], float("-inf"))
            probs = probs.softmax(-1)
        out = (probs @ v).transpose(1, 2).reshape(batch, frames, -1)
        return self.out_proj(out), probs


class FeedForward(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.intermediate_dense = nn.Linear(dim, hidden)
        self.output_dense = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.output_dense(F.gelu(self.intermediate_dense(x)))


class EncoderLayer(nn.Module):
    def __init__(self, dim, heads, ffn_dim, layer_norm_first, computes):
        super().__init__()
        self.attention = SelfAttention(dim, heads, computes)
        self.layer_norm = nn.LayerNorm(dim)
        self.feed_forward = FeedForward(dim, ffn_dim)
        self.final_layer_norm = nn.LayerNorm(dim)
        self.layer_norm_first = layer_norm_first

    def forward(self, x, *attention):
        if self.layer_norm_first:  # pre-LN (Large)
            a, probs = self.attention(self.layer_norm(x), *attention)
            x = x + a
            return x + self.feed_forward(self.final_layer_norm(x)), probs
        a, probs = self.attention(x, *attention)  # post-LN (Base)
        x = self.layer_norm(x + a)
        return self.final_layer_norm(x + self.feed_forward(x)), probs


class Hubert(nn.Module):
    """CNN -> LayerNorm -> (Linear) -> x + positional conv -> (LayerNorm) -> Transformer layers."""

    def __init__(self, cfg):
        super().__init__()
        dim, kernel = cfg["embed_dim"], cfg["pos_conv_kernel"]
        channels = cfg["conv_layers"][-1][0]
        self.cnn = build_cnn(cfg["conv_layers"], cfg["extractor_mode"], cfg["conv_bias"])
        self.feature_norm = nn.LayerNorm(channels)
        self.projection = nn.Linear(channels, dim) if cfg["project_features"] else None
        # the weight-normalised positional conv, its weight computed at export
        self.pos_conv = nn.Conv1d(dim, dim, kernel, padding=kernel // 2, groups=cfg["pos_conv_groups"])
        self.pos_conv_trim = 1 if kernel % 2 == 0 else 0  # an even kernel pads one frame too many
        self.layer_norm = nn.LayerNorm(dim)  # on the input of a post-LN stack, the output of a pre-LN one
        self.layer_norm_first = cfg["layer_norm_first"]
        self.computes = cfg["computes_attention"]
        self.reuse_mode = cfg["reuse_mode"]
        self.layers = nn.ModuleList(
            EncoderLayer(dim, cfg["num_heads"], cfg["ffn_dim"], cfg["layer_norm_first"], c) for c in self.computes
        )

    def forward(self, wavs):
        feats, lengths = run_cnn(self.cnn, wavs)
        x = self.feature_norm(feats)
        if self.projection is not None:
            x = self.projection(x)
        batch, frames, _ = x.shape
        padding_mask = attn_mask = None
        if bool((lengths < frames).any()):
            padding_mask = torch.arange(frames, device=x.device)[None, :] >= lengths[:, None]
            x = x.masked_fill(padding_mask[..., None], 0.0)
            attn_mask = (-10000.0 * padding_mask[:, None, None, :].to(x.dtype)).expand(batch, 1, frames, frames)
        pos = self.pos_conv(x.transpose(1, 2))
        if self.pos_conv_trim:
            pos = pos[..., : -self.pos_conv_trim]
        x = x + F.gelu(pos).transpose(1, 2)
        if not self.layer_norm_first:
            x = self.layer_norm(x)
        states, last_map = [x], None
        for layer, computes in zip(self.layers, self.computes):
            x, probs = layer(x, attn_mask, padding_mask, None if computes else last_map, self.reuse_mode)
            if computes:
                last_map = probs
            states.append(x)
        if self.layer_norm_first:
            states[-1] = self.layer_norm(states[-1])
        return states


# --- BiLSTM ----------------------------------------------------------------------------------


class Lstm(nn.Module):
    """CNN -> LayerNorm -> (Linear) -> one bidirectional nn.LSTM per layer (padded rows packed)."""

    def __init__(self, cfg):
        super().__init__()
        channels = cfg["conv_layers"][-1][0]
        size = cfg["input_proj"] or channels
        self.cnn = build_cnn(cfg["conv_layers"], cfg["extractor_mode"], cfg["conv_bias"])
        self.layer_norm = nn.LayerNorm(channels)
        self.projection = nn.Linear(channels, cfg["input_proj"]) if cfg["input_proj"] else None
        sizes = [size] + [2 * cfg["hidden"]] * (cfg["num_layers"] - 1)
        self.lstms = nn.ModuleList(nn.LSTM(s, cfg["hidden"], batch_first=True, bidirectional=True) for s in sizes)
        self.input_is_a_state = size == 2 * cfg["hidden"]  # state 0 only if it has the layers' width

    def forward(self, wavs):
        feats, lengths = run_cnn(self.cnn, wavs)
        x = self.layer_norm(feats)
        if self.projection is not None:
            x = self.projection(x)
        frames = x.shape[1]
        padded = bool((lengths < frames).any())
        if padded:
            x = x.masked_fill(torch.arange(frames, device=x.device)[None, :, None] >= lengths[:, None, None], 0.0)
        states = [x]
        if padded:
            x = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        for lstm in self.lstms:
            x = lstm(x)[0]
            states.append(pad_packed_sequence(x, batch_first=True, total_length=frames)[0] if padded else x)
        return states if self.input_is_a_state else states[1:]


# --- s3prl's interface -----------------------------------------------------------------------


def load_torch(path):
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except TypeError:  # torch < 1.13 has no weights_only
        return torch.load(path, map_location="cpu")


class UpstreamExpert(nn.Module):
    """s3prl's upstream interface. ``ckpt``: this folder, or the ``model.pt`` in it (``config.json``
    is read from beside it); None: the folder this file is in."""

    def __init__(self, ckpt=None, model_config=None, **kwargs):
        super().__init__()
        ckpt = ckpt or os.path.dirname(os.path.abspath(__file__))
        folder = ckpt if os.path.isdir(ckpt) else os.path.dirname(os.path.abspath(ckpt))
        weights = os.path.join(ckpt, WEIGHTS_FILE) if os.path.isdir(ckpt) else ckpt
        with open(model_config or os.path.join(folder, CONFIG_FILE)) as f:
            self.config = json.load(f)
        self.model = {"hubert": Hubert, "lstm": Lstm}[self.config["kind"]](self.config)
        self.model.load_state_dict(load_torch(weights))
        self.stride = self.config["stride"]
        self.eval()

    def get_downsample_rates(self, key: str) -> int:
        return self.stride

    def forward(self, wavs):
        """wavs: list of 1-D float tensors at 16 kHz -> {"hidden_states": [B, T, D] per state, ...}."""
        states = self.model(wavs)
        return {"hidden_states": states, "last_hidden_state": states[-1]}
