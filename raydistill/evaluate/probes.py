"""SUPERB heads on cached features, scaled down to train on a CPU in seconds.

The probes follow s3prl: a :class:`WeightedSum` featurizer over all hidden states
(zero-initialised softmax weights, no layer norm) trained together with a small head; the head
state with the best dev metric is kept and the test metric reported at that point. Only the
number of steps (and so the data seen) is smaller than SUPERB's.

* PR: Linear(D, 256) → Linear(256, V + 1), CTC with blank 0, greedy decoding, PER.
* ASR: BiLSTM character CTC, WER.
* SID (and KS, IC): Linear(D, 256) → mean-pool over frames → Linear(256, C), cross-entropy,
  accuracy.

Each task here supplies its head, batches, loss and metrics; the training loop, seeding and
dev selection are :func:`~raydistill.evaluate.heads_fit.fit_head`'s.
"""

from __future__ import annotations

import itertools
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from raydistill.evaluate.heads_fit import fit_head, shuffled_batches

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
    """Utterance-level probe on mean-pooled states (SID, KS, IC).

    SUPERB's head is Linear(D, 256) → mean-pool over valid frames → Linear(256, C). Everything
    before the pooling is linear (weighted sum, projector), so pooling each state first gives
    the same logits (:meth:`forward_frames` is the SUPERB order; the tests check they agree)
    and training runs on one [L, D] vector per utterance. IC's head is the same with C = the
    sum of its slots' sizes (s3prl ``fluent_commands``).
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


class ASRHead(nn.Module):
    """ASR probe (s3prl ``asr``, scaled down): weighted sum → Linear(D, H) → BiLSTM(H) ×
    ``layers`` → Linear(2H, V + 1), character CTC (blank 0). SUPERB: H = 1024, 2 layers.

    The bidirectional layer is two unidirectional LSTMs, the backward one run on each
    utterance reversed within its own length: exactly a BiLSTM over packed sequences, without
    packing (whose CPU kernels are 10–20× slower than padded ones, measured here).
    """

    def __init__(self, num_states: int, dim: int, vocab: int, hidden: int = 128, layers: int = 1):
        super().__init__()
        self.featurizer = WeightedSum(num_states)
        self.projector = nn.Linear(dim, hidden)
        self.forward_rnn = nn.LSTM(hidden, hidden, num_layers=layers, batch_first=True)
        self.backward_rnn = nn.LSTM(hidden, hidden, num_layers=layers, batch_first=True)
        self.out = nn.Linear(2 * hidden, vocab + 1)

    def utterances(self, features: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """[T_i, L, D] per utterance -> log-probabilities [T_i, V + 1] each."""
        device = self.out.weight.device
        lengths = [f.shape[0] for f in features]
        x = self.projector(self.featurizer(torch.cat(list(features)).to(device, torch.float32))).split(lengths)
        forward, _ = self.forward_rnn(nn.utils.rnn.pad_sequence(list(x), batch_first=True))
        backward, _ = self.backward_rnn(nn.utils.rnn.pad_sequence([u.flip(0) for u in x], batch_first=True))
        return [self.out(torch.cat([forward[i, :n], backward[i, :n].flip(0)], -1)).log_softmax(-1)
                for i, n in enumerate(lengths)]


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


def _identity(ids: list[int]) -> list:
    return ids


@torch.no_grad()
def _error_rate(head: nn.Module, features: Sequence[torch.Tensor], labels: Sequence[Sequence[int]],
                batch_size: int, units: Callable[[list[int]], list] = _identity) -> float:
    """Error rate in %: total edit distance / total reference units (s3prl ``ctc/metric.py``).

    ``units`` maps a label-id sequence to what is compared: phones as they are (PER), or the
    words the characters spell (WER).
    """
    if not features:
        return float("nan")
    errors = total = 0
    for start in range(0, len(features), batch_size):
        logps = head.utterances(features[start : start + batch_size])
        for logp, ref in zip(logps, labels[start : start + batch_size]):
            ref_units = units(list(ref))
            errors += edit_distance(ref_units, units(ctc_greedy_decode(logp)))
            total += len(ref_units)
    return 100.0 * errors / max(total, 1)


def _to_tensors(train, dev, test) -> dict:
    return {
        name: ([torch.from_numpy(np.asarray(f)) for f in feats], [list(y) for y in labels])
        for name, (feats, labels) in (("train", train), ("dev", dev), ("test", test))
    }


def _train_ctc(
    make_head: Callable[[int, int], nn.Module],
    tensors: dict,
    *,
    metric: str,
    steps: int,
    batch_size: int,
    lr: float,
    eval_every: int,
    seed: int,
    device: str | torch.device,
    units: Callable[[list[int]], list] = _identity,
) -> dict:
    """The CTC probe shared by PR and ASR: seeded batches, Adam, gradient norm clipped to 1
    (s3prl), dev error every ``eval_every`` steps, test error of the best dev head."""
    x_train, y_train = tensors["train"]
    if not x_train or not tensors["dev"][0]:
        raise ValueError("a CTC probe needs train and dev utterances with labels")
    if x_train[0].ndim != 3:
        raise ValueError(f"expected features [T, L, D], found shape {tuple(x_train[0].shape)}")
    _, num_states, dim = x_train[0].shape

    def ctc_loss(head: nn.Module, batch: list[int]) -> torch.Tensor:
        logps = head.utterances([x_train[i] for i in batch])
        return F.ctc_loss(
            nn.utils.rnn.pad_sequence(logps),  # [T_max, B, V + 1]
            torch.tensor([p for i in batch for p in y_train[i]], device=device),
            torch.tensor([len(lp) for lp in logps]),
            torch.tensor([len(y_train[i]) for i in batch]),
            blank=BLANK, zero_infinity=True,
        )

    return fit_head(
        lambda: make_head(num_states, dim),
        lambda gen: shuffled_batches(range(len(x_train)), batch_size, gen),
        ctc_loss,
        lambda head: _error_rate(head, *tensors["dev"], batch_size=batch_size, units=units),
        lambda head: _error_rate(head, *tensors["test"], batch_size=batch_size, units=units),
        metric=metric, lower_is_better=True, steps=steps, lr=lr, eval_every=eval_every, seed=seed,
        device=device, clip_norm=1.0,
    )


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
    return _train_ctc(lambda states, dim: PRHead(states, dim, num_phones), _to_tensors(train, dev, test),
                      metric="per", steps=steps, batch_size=batch_size, lr=lr, eval_every=eval_every, seed=seed,
                      device=device)


# ASR characters (s3prl ``asr/char.dict``): letters, apostrophe, "|" between words; 0 is the blank.
CHARS = "|'abcdefghijklmnopqrstuvwxyz"
WORD_SEPARATOR = 1


def text_to_chars(text: str) -> list[int]:
    """Lower-case text -> character ids in 1..len(CHARS) (other characters are dropped)."""
    ids = {c: i + 1 for i, c in enumerate(CHARS)}
    return [ids["|" if c == " " else c] for c in " ".join(text.lower().split()) if c in ids or c == " "]


def chars_to_words(ids: list[int]) -> list[str]:
    return "".join(CHARS[i - 1] for i in ids).replace("|", " ").split()


def train_asr_probe(
    train: tuple[Sequence[np.ndarray], Sequence[str]],
    dev: tuple[Sequence[np.ndarray], Sequence[str]],
    test: tuple[Sequence[np.ndarray], Sequence[str]],
    *,
    steps: int,
    batch_size: int,
    lr: float,
    eval_every: int,
    hidden: int = 128,
    layers: int = 1,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> dict:
    """Train the ASR probe (:class:`ASRHead`, character CTC), select on dev WER, report test WER.

    Args:
        train, dev, test: (features [T, L, D], transcripts) per split.

    Returns:
        ``wer`` (test, %), ``wer_dev`` (best dev, %), ``best_step``, ``layer_weights``, ``dev_curve``.
    """
    tensors = _to_tensors(*(
        (feats, [text_to_chars(t) for t in texts]) for feats, texts in (train, dev, test)
    ))
    return _train_ctc(lambda states, dim: ASRHead(states, dim, len(CHARS), hidden, layers), tensors,
                      metric="wer", steps=steps, batch_size=batch_size, lr=lr, eval_every=eval_every, seed=seed,
                      device=device, units=chars_to_words)


@torch.no_grad()
def _accuracy(head: SIDHead, x: torch.Tensor, y: torch.Tensor, slots: Sequence[int]) -> float:
    """% of utterances whose every slot is right (one slot: plain accuracy)."""
    logits = head(x).split(list(slots), dim=-1)
    right = torch.stack([lg.argmax(-1) == y[:, k] for k, lg in enumerate(logits)], dim=-1).all(-1)
    return 100.0 * right.float().mean().item()


def train_utterance_probe(
    train: tuple[np.ndarray, Sequence],
    dev: tuple[np.ndarray, Sequence],
    test: tuple[np.ndarray, Sequence],
    *,
    slots: Sequence[int],
    steps: int,
    lr: float,
    eval_every: int,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> dict:
    """Train an utterance-level probe (:class:`SIDHead`) full-batch on pooled features, select
    on dev accuracy, report test accuracy.

    Args:
        train, dev, test: (pooled features [N, L, D], labels) per split; a label is a class id
            (one slot) or a sequence of one id per slot.
        slots: the number of classes of each slot: ``[C]`` for SID and KS, IC's three slot
            sizes for intents (cross-entropy summed over slots; an utterance is right only
            if all its slots are, s3prl ``fluent_commands``).
        steps: full-batch Adam steps.
        lr: Adam learning rate.
        eval_every: dev accuracy is computed every this many steps and after the last one.
        device: where the head and the (small) pooled features go.

    Returns:
        ``acc`` (test, %), ``acc_dev`` (best dev, %), ``best_step``, ``layer_weights`` (the
        softmax weights of the selected head), ``dev_curve`` ([step, dev accuracy] per check).
    """
    slots = list(slots)

    def as_tensors(x, y):
        y = torch.as_tensor([[v] if len(slots) == 1 and np.ndim(v) == 0 else list(v) for v in y], dtype=torch.long)
        return torch.as_tensor(np.asarray(x), dtype=torch.float32, device=device), y.reshape(-1, len(slots)).to(device)

    (x_train, y_train), (x_dev, y_dev), (x_test, y_test) = (as_tensors(x, y) for x, y in (train, dev, test))
    if len(x_train) == 0 or len(x_dev) == 0:
        raise ValueError("an utterance probe needs train and dev utterances")
    if x_train.ndim != 3:
        raise ValueError(f"expected pooled features [N, L, D], found shape {tuple(x_train.shape)}")

    def cross_entropy(head: SIDHead, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        x, y = batch
        return sum(F.cross_entropy(lg, y[:, k]) for k, lg in enumerate(head(x).split(slots, dim=-1)))

    return fit_head(
        lambda: SIDHead(x_train.shape[1], x_train.shape[2], sum(slots)),
        lambda gen: itertools.repeat((x_train, y_train)),  # full batch
        cross_entropy,
        lambda head: _accuracy(head, x_dev, y_dev, slots),
        lambda head: _accuracy(head, x_test, y_test, slots) if len(x_test) else float("nan"),
        metric="acc", lower_is_better=False, steps=steps, lr=lr, eval_every=eval_every, seed=seed, device=device,
    )


def train_sid_probe(train, dev, test, *, num_classes: int, **kwargs) -> dict:
    """Speaker identification: :func:`train_utterance_probe` with one slot of ``num_classes``."""
    return train_utterance_probe(train, dev, test, slots=[num_classes], **kwargs)
