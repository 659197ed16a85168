"""Automatic speaker verification (SUPERB ASV), scaled down: an x-vector-style head trained with
AM-softmax on the seen speakers, cosine scoring of utterance pairs of *unseen* speakers, EER.

s3prl's head (docs/evaluation.md#superbs-heads): Linear(D, 512) → 5 TDNN layers (512 … 1500) →
statistics pooling → Linear(3000, 512) + ReLU → … with AM-softmax (s = 30, m = 0.4). Here the same shape
at a CPU's size: Linear(D, 256) → TDNN (k 5 d 1, k 3 d 2, k 1) at 256 / 256 / 512 → mean ‖ std
→ Linear(1024, 128) + ReLU (the embedding), trained on random crops. The speakers scored are
never seen in training (the corpus's ``unseen`` pool), and the checkpoint scored on test is the
one with the best dev EER (SUPERB picks the best *test* EER over checkpoints; dev is fairer).
"""

from __future__ import annotations

import itertools
from typing import Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from raydistill.evaluate.heads_fit import fit_head, shuffled_batches
from raydistill.evaluate.probes import WeightedSum


class XVectorHead(nn.Module):
    receptive_field = 9  # frames the TDNN consumes: (5 - 1) + 2·(3 - 1) + 1

    def __init__(self, num_states: int, dim: int, num_speakers: int, hidden: int = 256, embed: int = 128,
                 scale: float = 30.0, margin: float = 0.4):
        super().__init__()
        self.featurizer = WeightedSum(num_states)
        self.connector = nn.Linear(dim, hidden)
        self.tdnn = nn.Sequential(
            nn.Conv1d(hidden, hidden, 5, dilation=1), nn.ReLU(),
            nn.Conv1d(hidden, hidden, 3, dilation=2), nn.ReLU(),
            nn.Conv1d(hidden, 2 * hidden, 1), nn.ReLU(),
        )
        self.embedding = nn.Sequential(nn.Linear(4 * hidden, embed), nn.ReLU())
        self.speakers = nn.Parameter(torch.randn(num_speakers, embed) * 0.01)
        self.scale, self.margin = scale, margin

    def embed(self, states: torch.Tensor) -> torch.Tensor:
        """states [T, L, D] of one utterance, or [B, T, L, D] of equally long crops -> [E] or [B, E]."""
        x = self.connector(self.featurizer(states.float()))  # [(B,) T, H]
        if x.shape[-2] < self.receptive_field:  # too short for the TDNN: repeat the last frame
            pad = x[..., -1:, :].expand(*x.shape[:-2], self.receptive_field - x.shape[-2], x.shape[-1])
            x = torch.cat([x, pad], dim=-2)
        h = self.tdnn(x.transpose(-1, -2))  # [(B,) 2H, T']
        stats = torch.cat([h.mean(-1), h.std(-1, correction=0)], dim=-1)
        return self.embedding(stats)

    def am_softmax_loss(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Additive-margin softmax: s·(cos θ_y − m) for the true speaker, s·cos θ otherwise."""
        cos = F.normalize(embeddings, dim=-1) @ F.normalize(self.speakers, dim=-1).T
        logits = self.scale * (cos - self.margin * F.one_hot(labels, cos.shape[-1]))
        return F.cross_entropy(logits, labels)


def equal_error_rate(scores: Sequence[float], same: Sequence[bool]) -> float:
    """EER in %: the rate at which false acceptances equal false rejections, by linear
    interpolation between the two operating points around the crossing.

    ``scores``: higher means "same speaker"; ``same``: the truth of each trial. Needs at least
    one target and one non-target trial.
    """
    scores, same = np.asarray(scores, dtype=np.float64), np.asarray(same, dtype=bool)
    targets, nontargets = int(same.sum()), int((~same).sum())
    if targets == 0 or nontargets == 0:
        raise ValueError("EER needs target and non-target trials")
    order = np.argsort(-scores, kind="stable")
    # operating points only between distinct scores: tied trials are accepted together
    last_of_tie = np.flatnonzero(np.diff(scores[order], append=-np.inf) != 0)
    accepted_same = np.concatenate([[0], np.cumsum(same[order])[last_of_tie]])
    accepted_other = np.concatenate([[0], np.cumsum(~same[order])[last_of_tie]])
    frr = 1.0 - accepted_same / targets  # accepting every trial scored >= a threshold
    far = accepted_other / nontargets
    k = int(np.argmax(far >= frr))  # first point where false acceptances catch up
    if k == 0:
        return 100.0 * far[0]
    # the crossing of the segments (far, frr)[k-1] -> [k]
    d_prev, d_next = frr[k - 1] - far[k - 1], frr[k] - far[k]
    t = d_prev / (d_prev - d_next) if d_prev != d_next else 0.0
    return 100.0 * (far[k - 1] + t * (far[k] - far[k - 1]))


def trials(speakers: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every unordered pair of utterances: (first index, second index, same speaker)."""
    pairs = np.array(list(itertools.combinations(range(len(speakers)), 2)), dtype=np.int64).reshape(-1, 2)
    spk = np.asarray(speakers)
    return pairs[:, 0], pairs[:, 1], spk[pairs[:, 0]] == spk[pairs[:, 1]]


@torch.no_grad()
def _eer(head: XVectorHead, features: Sequence[torch.Tensor], speakers: Sequence[str], device) -> float:
    emb = F.normalize(torch.stack([head.embed(f.to(device)) for f in features]), dim=-1)
    i, j, same = trials(speakers)
    scores = (emb[torch.from_numpy(i)] * emb[torch.from_numpy(j)]).sum(-1).cpu().numpy()
    return equal_error_rate(scores, same)


def train_asv_probe(
    train: tuple[Sequence[np.ndarray], Sequence[str]],
    dev: tuple[Sequence[np.ndarray], Sequence[str]],
    test: tuple[Sequence[np.ndarray], Sequence[str]],
    *,
    steps: int,
    batch_size: int,
    crop_frames: int,
    lr: float,
    eval_every: int,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> dict:
    """Train the x-vector head (AdamW, AM-softmax) on random crops of the train speakers' audio;
    EER of all utterance pairs of dev (selection) and test (reported).

    Args:
        train, dev, test: (features [T, L, D], speaker ids) per split; dev and test speakers
            should be disjoint from train's (verification of unseen speakers).
        crop_frames: training crops (shorter utterances are used whole).

    Returns:
        ``eer`` (test, %), ``eer_dev`` (best dev, %), ``best_step``, ``layer_weights``, ``dev_curve``.
    """
    tensors = {name: ([torch.from_numpy(np.asarray(f)) for f in feats], list(spk))
               for name, (feats, spk) in (("train", train), ("dev", dev), ("test", test))}
    x_train, s_train = tensors["train"]
    for name, (_, spk) in tensors.items():
        if len(set(spk)) < 2:
            raise ValueError(f"ASV needs at least 2 speakers in {name}, found {len(set(spk))}")
    speakers = sorted(set(s_train))
    y_train = torch.tensor([speakers.index(s) for s in s_train])
    _, num_states, dim = x_train[0].shape
    usable = [i for i, f in enumerate(x_train) if f.shape[0] >= XVectorHead.receptive_field]

    def crops(gen: torch.Generator):
        """Per step: the next shuffled batch, each utterance cropped at a random start."""
        for batch in shuffled_batches(usable, batch_size, gen):
            crop = min(crop_frames, min(x_train[i].shape[0] for i in batch))  # one length: one batched call
            starts = [int(torch.randint(0, x_train[i].shape[0] - crop + 1, (), generator=gen)) for i in batch]
            yield (torch.stack([x_train[i][s : s + crop] for i, s in zip(batch, starts)]).to(device),
                   y_train[batch].to(device))

    return fit_head(
        lambda: XVectorHead(num_states, dim, len(speakers)),
        crops,
        lambda head, batch: head.am_softmax_loss(head.embed(batch[0]), batch[1]),
        lambda head: _eer(head, *tensors["dev"], device),
        lambda head: _eer(head, *tensors["test"], device),
        metric="eer", lower_is_better=True, steps=steps, lr=lr, eval_every=eval_every, seed=seed,
        device=device, optimizer=torch.optim.AdamW,
    )
