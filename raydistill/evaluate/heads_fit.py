"""The one training loop of every probe head (PR, ASR, SID/KS/IC, ASV): SUPERB's recipe of a
fixed number of optimiser steps with dev-based model selection.

:func:`fit_head` owns what the heads share: seeding, the optimiser, the step loop, dev checks
and restoring the best dev head. A task brings its head, how it draws batches, its loss and its
metrics. Everything runs under ``torch.random.fork_rng`` with the given seed, so equal inputs
and seed give equal numbers and the caller's global RNG is left untouched.
"""

from __future__ import annotations

import copy
from typing import Callable, Iterator, Sequence, TypeVar

import torch
from torch import nn

Batch = TypeVar("Batch")


class DevSelection:
    """SUPERB's model selection: the head state with the best dev metric so far (the earliest on
    ties), and the curve of every check. ``lower_is_better`` for error rates."""

    def __init__(self, head: nn.Module, *, lower_is_better: bool):
        self.sign = 1.0 if lower_is_better else -1.0
        self.value, self.step = float("inf") if lower_is_better else -1.0, 0
        self.state = copy.deepcopy(head.state_dict())
        self.curve: list[list[float]] = []

    def check(self, step: int, value: float, head: nn.Module) -> None:
        self.curve.append([step, value])
        if self.sign * value < self.sign * self.value:
            self.value, self.step, self.state = value, step, copy.deepcopy(head.state_dict())

    def restore(self, head: nn.Module) -> dict:
        """Load the selected state into ``head``; returns its dev value, step, layer weights, curve."""
        head.load_state_dict(self.state)
        return {"dev": self.value, "best_step": self.step, "layer_weights": head.featurizer.layer_weights(),
                "dev_curve": self.curve}


def shuffled_batches(pool: Sequence[int], batch_size: int, gen: torch.Generator) -> Iterator[list[int]]:
    """Batches of ``batch_size`` items of ``pool``, epoch after epoch, each epoch a fresh shuffle
    by ``gen`` (drawn only when fewer than a batch are left, so the last one may be short when
    the pool is smaller than a batch)."""
    order: list[int] = []
    while True:
        if len(order) < batch_size:
            order += [pool[k] for k in torch.randperm(len(pool), generator=gen).tolist()]
        batch, order = order[:batch_size], order[batch_size:]
        yield batch


def fit_head(
    make_head: Callable[[], nn.Module],
    batches: Callable[[torch.Generator], Iterator[Batch]],
    loss: Callable[[nn.Module, Batch], torch.Tensor],
    dev_metric: Callable[[nn.Module], float],
    test_metric: Callable[[nn.Module], float],
    *,
    metric: str,
    lower_is_better: bool,
    steps: int,
    lr: float,
    eval_every: int,
    seed: int,
    device: str | torch.device,
    optimizer: Callable[..., torch.optim.Optimizer] = torch.optim.Adam,
    clip_norm: float | None = None,
) -> dict:
    """Train the head ``make_head()`` for ``steps`` steps, check ``dev_metric`` every
    ``eval_every`` steps and after the last, and score the best dev head with ``test_metric``.

    Args:
        make_head: builds the head (seeded: its initialisation depends on ``seed`` alone).
        batches: given a generator seeded with ``seed``, yields one batch per step; all of the
            task's sampling (shuffles, crops) draws from it.
        loss: (head, batch) -> the scalar to minimise.
        metric: the name of the returned metric, e.g. ``per``.
        lower_is_better: True for error rates, False for accuracies.
        optimizer: its class (Adam; AdamW for ASV), at learning rate ``lr``.
        clip_norm: gradient norm clipping (CTC heads: 1, as s3prl), or None.

    Returns:
        ``<metric>`` (test, of the selected head), ``<metric>_dev`` (its dev value),
        ``best_step``, ``layer_weights`` (its featurizer's softmax weights), ``dev_curve``
        ([step, dev value] per check).
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        head = make_head().to(device)
        batch_iter = batches(torch.Generator().manual_seed(seed))
        opt = optimizer(head.parameters(), lr=lr)
        selection = DevSelection(head, lower_is_better=lower_is_better)
        for step in range(1, steps + 1):
            value = loss(head, next(batch_iter))
            opt.zero_grad()
            value.backward()
            if clip_norm is not None:
                nn.utils.clip_grad_norm_(head.parameters(), clip_norm)
            opt.step()
            if step % eval_every == 0 or step == steps:
                selection.check(step, dev_metric(head), head)
        out = selection.restore(head)
        return {metric: test_metric(head), f"{metric}_dev": out.pop("dev"), **out}
