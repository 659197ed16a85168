"""SUPERB heads on cached features, scaled down to train on a CPU in seconds.

Both probes follow s3prl (SUPERB.md §1.3, §2.1): a :class:`WeightedSum` featurizer over all
hidden states (zero-initialised softmax weights, no layer norm) trained together with a small
linear head; the head state with the best dev metric is kept and the test metric reported at
that point. Only the number of steps (and so the data seen) is smaller than SUPERB's.

* PR: Linear(D, 256) → Linear(256, V + 1), CTC with blank 0, greedy decoding, PER.
* SID: Linear(D, 256) → mean-pool over frames → Linear(256, C), cross-entropy, accuracy.

Everything runs under ``torch.random.fork_rng`` with the given seed, so equal inputs and seed
give equal numbers and the caller's global RNG is left untouched.
"""

from __future__ import annotations

import copy
from typing import Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

BLANK = 0  # CTC blank; phones are 1..V


class WeightedSum(nn.Module):
    """Softmax-weighted sum of hidden states (s3prl ``Featurizer``).

    The weights start at zero, so the sum starts as the plain average of the states.
    """

    def __init__(self, num_states: int):
        super().__init__()
        self.weights = nn.Parameter(torch.zeros(num_states))

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        """states [..., L, D] -> [..., D]."""
        if states.shape[-2] != self.weights.numel():
            raise ValueError(
                f"expected {self.weights.numel()} states in dim -2, found shape {tuple(states.shape)}"
            )
        return torch.einsum("...ld,l->...d", states, self.weights.softmax(-1))

    def layer_weights(self) -> list[float]:
        return self.weights.detach().softmax(-1).tolist()


class PRHead(nn.Module):
    """Phone recognition probe: weighted sum → Linear(D, 256) → Linear(256, V + 1).

    No nonlinearity: s3prl's PR head is linear (``projector`` + ``FrameLevelLinear``).
    """

    def __init__(self, num_states: int, dim: int, num_phones: int, hidden: int = 256):
        super().__init__()
        self.featurizer = WeightedSum(num_states)
        self.projector = nn.Linear(dim, hidden)
        self.out = nn.Linear(hidden, num_phones + 1)

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        """states [..., L, D] -> log-probabilities [..., V + 1] (index 0 = blank).

        Frame-wise, so callers pass the valid frames of a batch packed as [N, L, D] and
        spend no compute on padding.
        """
        return self.out(self.projector(self.featurizer(states))).log_softmax(-1)

    def utterances(self, features: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """[T_i, L, D] per utterance (any float dtype) -> log-probabilities [T_i, V + 1] each."""
        logp = self(torch.cat(list(features)).to(self.out.weight.device, torch.float32))
        return list(logp.split([f.shape[0] for f in features]))


class SIDHead(nn.Module):
    """Speaker identification probe on mean-pooled states.

    SUPERB's head is Linear(D, 256) → mean-pool over valid frames → Linear(256, C). Everything
    before the pooling is linear (weighted sum, projector), so pooling each state first gives
    the same logits (:meth:`forward_frames` is the SUPERB order; the tests check they agree)
    and training runs on one [L, D] vector per utterance.
    """

    def __init__(self, num_states: int, dim: int, num_classes: int, hidden: int = 256):
        super().__init__()
        self.featurizer = WeightedSum(num_states)
        self.projector = nn.Linear(dim, hidden)
        self.out = nn.Linear(hidden, num_classes)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        """pooled [B, L, D] (each state averaged over valid frames) -> logits [B, C]."""
        return self.out(self.projector(self.featurizer(pooled)))

    def forward_frames(self, states: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """states [B, T, L, D], lengths [B] frames -> logits [B, C], pooling after the projector."""
        h = self.projector(self.featurizer(states))  # [B, T, 256]
        mask = torch.arange(h.shape[1], device=h.device)[None, :] < lengths[:, None]
        pooled = (h * mask[..., None]).sum(1) / lengths[:, None]
        return self.out(pooled)


def edit_distance(ref: Sequence, hyp: Sequence) -> int:
    """Levenshtein distance (substitutions, insertions, deletions all cost 1)."""
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        cur = [i]
        for j, h in enumerate(hyp, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h)))
        prev = cur
    return prev[-1]


def ctc_greedy_decode(logits: torch.Tensor, blank: int = BLANK) -> list[int]:
    """logits [T, V + 1] -> label ids: best path, repeats collapsed, blanks dropped."""
    best = torch.unique_consecutive(logits.argmax(-1)).tolist()
    return [i for i in best if i != blank]


@torch.no_grad()
def _per(
    head: PRHead, features: Sequence[torch.Tensor], labels: Sequence[Sequence[int]], batch_size: int
) -> float:
    """PER in %: total edit distance / total reference phones (s3prl ``ctc/metric.py``)."""
    if not features:
        return float("nan")
    errors = total = 0
    for start in range(0, len(features), batch_size):
        logps = head.utterances(features[start : start + batch_size])
        for logp, ref in zip(logps, labels[start : start + batch_size]):
            errors += edit_distance(ref, ctc_greedy_decode(logp))
            total += len(ref)
    return 100.0 * errors / max(total, 1)


def train_pr_probe(
    train: tuple[Sequence[np.ndarray], Sequence[Sequence[int]]],
    dev: tuple[Sequence[np.ndarray], Sequence[Sequence[int]]],
    test: tuple[Sequence[np.ndarray], Sequence[Sequence[int]]],
    *,
    num_phones: int,
    steps: int,
    batch_size: int,
    lr: float,
    eval_every: int,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> dict:
    """Train the PR probe with CTC, select on dev PER, report test PER.

    Args:
        train, dev, test: (features, labels) per split; features are [T, L, D] arrays (float16
            is fine), labels are phone-id sequences in 1..``num_phones`` (0 is the CTC blank).
        num_phones: V, the size of the phone inventory.
        steps: optimiser steps (Adam, gradient norm clipped to 1 as in s3prl).
        batch_size: utterances per step, drawn from a seeded shuffle, epoch after epoch.
        lr: Adam learning rate.
        eval_every: dev PER is computed every this many steps and after the last one.
        device: where the head trains (features stay in host memory; batches are moved).

    Returns:
        ``per`` (test, %), ``per_dev`` (best dev, %), ``best_step``, ``layer_weights`` (the
        softmax weights of the selected head), ``dev_curve`` ([step, dev PER] per check).
    """
    tensors = {
        name: ([torch.from_numpy(np.asarray(f)) for f in feats], [list(y) for y in labels])
        for name, (feats, labels) in (("train", train), ("dev", dev), ("test", test))
    }
    x_train, y_train = tensors["train"]
    if not x_train or not tensors["dev"][0]:
        raise ValueError("the PR probe needs train and dev utterances with phones")
    if x_train[0].ndim != 3:
        raise ValueError(f"expected features [T, L, D], found shape {tuple(x_train[0].shape)}")
    _, num_states, dim = x_train[0].shape
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        gen = torch.Generator().manual_seed(seed)
        head = PRHead(num_states, dim, num_phones).to(device)
        opt = torch.optim.Adam(head.parameters(), lr=lr)
        best = (float("inf"), 0, copy.deepcopy(head.state_dict()))
        curve = []
        order: list[int] = []
        for step in range(1, steps + 1):
            if len(order) < batch_size:
                order += torch.randperm(len(x_train), generator=gen).tolist()
            batch, order = order[:batch_size], order[batch_size:]
            logps = head.utterances([x_train[i] for i in batch])
            loss = F.ctc_loss(
                nn.utils.rnn.pad_sequence(logps),  # [T_max, B, V + 1]
                torch.tensor([p for i in batch for p in y_train[i]], device=device),
                torch.tensor([len(lp) for lp in logps]),
                torch.tensor([len(y_train[i]) for i in batch]),
                blank=BLANK, zero_infinity=True,
            )
            opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(head.parameters(), 1.0)
            opt.step()
            if step % eval_every == 0 or step == steps:
                per_dev = _per(head, *tensors["dev"], batch_size=batch_size)
                curve.append([step, per_dev])
                if per_dev < best[0]:
                    best = (per_dev, step, copy.deepcopy(head.state_dict()))
        head.load_state_dict(best[2])
        return {
            "per": _per(head, *tensors["test"], batch_size=batch_size),
            "per_dev": best[0],
            "best_step": best[1],
            "layer_weights": head.featurizer.layer_weights(),
            "dev_curve": curve,
        }


@torch.no_grad()
def _accuracy(head: SIDHead, x: torch.Tensor, y: torch.Tensor) -> float:
    return 100.0 * (head(x).argmax(-1) == y).float().mean().item()


def train_sid_probe(
    train: tuple[np.ndarray, Sequence[int]],
    dev: tuple[np.ndarray, Sequence[int]],
    test: tuple[np.ndarray, Sequence[int]],
    *,
    num_classes: int,
    steps: int,
    lr: float,
    eval_every: int,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> dict:
    """Train the SID probe full-batch on pooled features, select on dev accuracy, report test.

    Args:
        train, dev, test: (pooled features [N, L, D], speaker ids in 0..C-1) per split.
        num_classes: C, the number of (seen) speakers.
        steps: full-batch Adam steps.
        lr: Adam learning rate.
        eval_every: dev accuracy is computed every this many steps and after the last one.
        device: where the head and the (small) pooled features go.

    Returns:
        ``acc`` (test, %), ``acc_dev`` (best dev, %), ``best_step``, ``layer_weights`` (the
        softmax weights of the selected head), ``dev_curve`` ([step, dev accuracy] per check).
    """
    (x_train, y_train), (x_dev, y_dev), (x_test, y_test) = (
        (torch.as_tensor(np.asarray(x), dtype=torch.float32, device=device),
         torch.as_tensor(list(y), dtype=torch.long, device=device))
        for x, y in (train, dev, test)
    )
    if len(x_train) == 0 or len(x_dev) == 0:
        raise ValueError("the SID probe needs train and dev utterances")
    if x_train.ndim != 3:
        raise ValueError(f"expected pooled features [N, L, D], found shape {tuple(x_train.shape)}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        head = SIDHead(x_train.shape[1], x_train.shape[2], num_classes).to(device)
        opt = torch.optim.Adam(head.parameters(), lr=lr)
        best = (-1.0, 0, copy.deepcopy(head.state_dict()))
        curve = []
        for step in range(1, steps + 1):
            loss = F.cross_entropy(head(x_train), y_train)
            opt.zero_grad()
            loss.backward()
            opt.step()
            if step % eval_every == 0 or step == steps:
                acc_dev = _accuracy(head, x_dev, y_dev)
                curve.append([step, acc_dev])
                if acc_dev > best[0]:
                    best = (acc_dev, step, copy.deepcopy(head.state_dict()))
        head.load_state_dict(best[2])
        return {
            "acc": _accuracy(head, x_test, y_test) if len(x_test) else float("nan"),
            "acc_dev": best[0],
            "best_step": best[1],
            "layer_weights": head.featurizer.layer_weights(),
            "dev_curve": curve,
        }
