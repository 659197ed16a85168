"""What evaluation needs from a model (the :class:`Upstream` protocol), the FBank baseline, and
feature extraction into memory.

SUPERB freezes the upstream (docs/evaluation.md#frozen-upstream): features are extracted once,
under ``torch.inference_mode()`` with the module in ``eval()``, and every probe trains on the
cached features. Anything with ``name``, ``num_states``, ``dim`` and
``hidden_states(wave, lengths)`` can be scored: a teacher, a distilled student, or
:class:`FBankUpstream`.
"""

from __future__ import annotations

import contextlib
from typing import Iterator, Protocol, Sequence, runtime_checkable

import numpy as np
import torch
import torchaudio
from torch import Tensor, nn

from raydistill.corpus.manifest import SAMPLE_RATE, Corpus, Utterance
from raydistill.utils import Progress, length_batches


@runtime_checkable
class Upstream(Protocol):
    """A frozen speech model seen as a stack of hidden states.

    Attributes:
        name: short name for logs and run names.
        num_states: number of hidden states returned (L + 1 for a HuBERT: the transformer
            input, then each layer's output; docs/evaluation.md#hidden-states).
        dim: feature dimension D of every state (the weighted sum needs them all equal).
    """

    name: str
    num_states: int
    dim: int

    def hidden_states(
        self, wave: torch.Tensor, lengths: torch.Tensor
    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """wave [B, S] float32 16 kHz zero-padded, lengths [B] samples
        -> (``num_states`` tensors [B, T, D], frame lengths [B])."""
        ...


class FBankUpstream(nn.Module):
    """The SUPERB "FBank" baseline: 80 log-mel filterbanks + Δ + ΔΔ = 240-d, 10 ms frames.

    Same recipe as s3prl's ``baseline/fbank.yaml``: ``torchaudio.compliance.kaldi.fbank``
    (25 ms window, 10 ms shift, no dither, waveform in [-1, 1]), deltas with a 5-frame window,
    then per-utterance CMVN. Each utterance is computed on its own valid samples, so a padded
    batch gives exactly the one-by-one result.

    Note that with ``cmvn=True`` every utterance's mean feature is zero, so a mean-pooled
    utterance-level probe (SID) sees nothing: this is why FBank scores ~0 % SID in SUPERB
    (8.5E-4 %; docs/evaluation.md#fbank-baseline). ``cmvn=False`` keeps the absolute spectrum.
    """

    num_states = 1
    dim = 240
    hop = 160  # samples per frame (10 ms)
    window = 400  # samples per analysis window (25 ms)

    def __init__(self, cmvn: bool = True):
        super().__init__()
        self.cmvn = cmvn
        self.name = "fbank" if cmvn else "fbank-nocmvn"

    def _one(self, wave: torch.Tensor) -> torch.Tensor:
        """wave [S] -> features [T, 240], T = 1 + (max(S, 400) - 400) // 160."""
        if wave.numel() < self.window:  # kaldi returns no frame for < 25 ms; keep one
            wave = nn.functional.pad(wave, (0, self.window - wave.numel()))
        fb = torchaudio.compliance.kaldi.fbank(
            wave[None], num_mel_bins=80, frame_length=25.0, frame_shift=10.0,
            dither=0.0, sample_frequency=SAMPLE_RATE,
        )  # [T, 80]
        d1 = torchaudio.functional.compute_deltas(fb.T, win_length=5)
        d2 = torchaudio.functional.compute_deltas(d1, win_length=5)
        x = torch.cat([fb, d1.T, d2.T], dim=-1)
        if self.cmvn:
            # population std (s3prl uses the sample std, NaN for a 1-frame utterance)
            x = (x - x.mean(0)) / (x.std(0, correction=0) + 1e-10)
        return x

    def hidden_states(
        self, wave: torch.Tensor, lengths: torch.Tensor
    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """wave [B, S], lengths [B] samples -> ([features [B, T, 240]], frame lengths [B])."""
        if wave.ndim != 2 or lengths.shape != wave.shape[:1]:
            raise ValueError(
                f"expected wave [B, S] and lengths [B], found {tuple(wave.shape)} and "
                f"{tuple(lengths.shape)}"
            )
        feats = [self._one(w[: int(n)]) for w, n in zip(wave, lengths)]
        frames = torch.tensor([f.shape[0] for f in feats], device=wave.device)
        return [nn.utils.rnn.pad_sequence(feats, batch_first=True)], frames


@contextlib.contextmanager
def frozen(upstream: Upstream) -> Iterator[None]:
    """Run ``upstream`` in eval mode without autograd, then restore its train/eval mode.

    Training calls evaluation at every ASHA rung, so the student must come back as it was.
    """
    if not isinstance(upstream, nn.Module):
        with torch.inference_mode():
            yield
        return
    was_training = upstream.training
    upstream.eval()
    try:
        with torch.inference_mode():
            yield
    finally:
        upstream.train(was_training)


def extract_features(
    upstream: Upstream,
    corpus: Corpus,
    utterances: Sequence[Utterance],
    *,
    device: str | torch.device = "cpu",
    batch_seconds: float = 60.0,
    progress: bool = False,
) -> list[np.ndarray]:
    """Run the frozen upstream over ``utterances`` and keep every hidden state in memory.

    Batches are length-sorted and hold at most ``batch_seconds`` of padded audio.

    Returns:
        one float16 array [T_valid, num_states, D] per utterance, in the order given;
        padding frames (beyond the upstream's frame length) are trimmed.
    """
    waves = [corpus.load_audio(u) for u in utterances]
    out: list[np.ndarray | None] = [None] * len(waves)
    bar = Progress(f"features {upstream.name}", len(waves), " utts") if progress else None
    max_samples = int(batch_seconds * SAMPLE_RATE)
    with frozen(upstream):
        for batch in length_batches([len(w) for w in waves], max_samples, longest_first=True):
            lengths = torch.tensor([len(waves[i]) for i in batch])
            wave = torch.zeros(len(batch), int(lengths.max()))
            for row, i in enumerate(batch):
                wave[row, : len(waves[i])] = torch.from_numpy(waves[i])
            states, frames = upstream.hidden_states(wave.to(device), lengths.to(device))
            if len(states) != upstream.num_states:
                raise ValueError(
                    f"upstream {upstream.name} returned {len(states)} states, "
                    f"expected num_states={upstream.num_states}"
                )
            stacked = torch.stack(states, dim=2).half().cpu().numpy()  # [B, T, L, D]
            for row, i in enumerate(batch):
                out[i] = np.ascontiguousarray(stacked[row, : int(frames[row])])
            if bar:
                bar.update(len(batch))
    return out  # type: ignore[return-value]


class HubertUpstream(nn.Module):
    """A student or teacher encoder (``HubertModel`` or ``LstmModel``) as an :class:`Upstream`:
    all its hidden states. The caller freezes it."""

    def __init__(self, model: nn.Module, name: str = "hubert"):
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
