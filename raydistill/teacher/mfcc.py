"""MFCC features for HuBERT iteration 1 (the embedded teacher's targets).

fairseq/torchaudio's recipe: 13 Kaldi MFCCs (no energy) + Δ + ΔΔ = 39 dims, clustered
with k-means (K = 100). We take a 25 ms window with a **20 ms** shift (HuBERT uses
10 ms and keeps every other label): with Kaldi's ``snip_edges`` this yields exactly
the CNN's ``⌊(S − 400) / 320⌋ + 1`` frames, so MFCC units align one-to-one with
the model's 50 Hz frames.

``cmvn=True`` (the embedded default) normalises each utterance's features to zero mean and
unit variance before clustering. fairseq clusters raw MFCCs, but the embedded corpus has 64
voices at random gains: raw-MFCC units then spend much of K on level and timbre, and a
teacher that predicts them learns less phonetics (measured: docs/embedded-default.md).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torchaudio
from torch import Tensor

from raydistill.models.config import conv_frames, hubert_conv
from raydistill.utils import torch_threads


def mfcc39(wave: Tensor) -> Tensor:
    """wave [S] float at 16 kHz -> [T, 39] MFCC + Δ + ΔΔ."""
    feats = torchaudio.compliance.kaldi.mfcc(
        wave[None] * 32768.0,  # Kaldi expects 16-bit sample scale
        sample_frequency=16000, frame_length=25.0, frame_shift=20.0,
        num_ceps=13, use_energy=False, dither=0.0,
    )  # [T, 13]
    delta = torchaudio.functional.compute_deltas(feats.t())
    delta2 = torchaudio.functional.compute_deltas(delta)
    return torch.cat([feats, delta.t(), delta2.t()], dim=-1)


class MfccSource:
    """A :class:`raydistill.targets.store.FeatureSource` of MFCCs (exposed as layer 0)."""

    def __init__(self, cmvn: bool = False):
        self.cmvn = cmvn
        self.key = "mfcc39-cmvn" if cmvn else "mfcc39"

    def frames(self, num_samples: int) -> int:
        return conv_frames(num_samples, hubert_conv())

    def dim(self, layer: int) -> int:
        return 39

    def layer_features(self, wave: Tensor, lengths: Tensor, layers: Sequence[int]) -> tuple[dict[int, Tensor], Tensor]:
        if list(layers) != [0]:
            raise ValueError(f"MFCC features have a single layer 0, asked for {list(layers)}")
        with torch_threads(1):
            rows = [mfcc39(wave[i, : int(n)].float().cpu()) for i, n in enumerate(lengths.tolist())]
        if self.cmvn:
            rows = [(r - r.mean(0)) / (r.std(0) + 1e-5) for r in rows]
        frame_lengths = torch.tensor([r.shape[0] for r in rows])
        return {0: torch.nn.utils.rnn.pad_sequence(rows, batch_first=True)}, frame_lengths
