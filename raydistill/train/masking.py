"""Which frames a training step masks: HuBERT's static spans or ARMHuBERT's uniform spans.

Both follow fairseq's ``compute_mask_indices``: ``int(prob·T/length + U[0,1))`` spans per row
(at least ``min_masks``), then every row is cut down to the batch's smallest masked count
(``require_same_masks``). With ``MaskConfig.frac`` the same span laws are drawn until each row
holds a given fraction of masked frames instead (docs/masking.md).
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from raydistill.config import MaskConfig


def sample_mask(
    cfg: MaskConfig, lengths: list[int], frames: int, *, prob: Optional[float] = None,
    frac: Optional[float] = None, generator: Optional[torch.Generator] = None,
) -> Tensor:
    """[B, frames] bool mask for rows of the given valid lengths.

    ``prob`` / ``frac`` override ``cfg.prob`` / ``cfg.frac`` (the loop passes the scheduled
    values); a positive fraction masks ``round(frac·T)`` frames of every row of length T.
    """
    frac = cfg.frac if frac is None else frac
    if frac:
        rows = [_row_to_fraction(cfg, int(n), frac, generator) for n in lengths]
        return _equal_counts(rows, frames, generator)
    prob = cfg.prob if prob is None else prob
    if cfg.selection == "static":
        return compute_span_mask(lengths, frames, prob, cfg.length, min_masks=cfg.min_masks, generator=generator)
    rows = []
    for n in lengths:
        num = max(cfg.min_masks, int(prob * int(n) / cfg.length + float(torch.rand((), generator=generator))))
        sizes = torch.randint(0, 2 * cfg.length + 1, (num,), generator=generator).tolist()
        if sum(sizes) == 0:
            sizes[0] = min(cfg.length, int(n) - 1)
        rows.append(_place_apart(int(n), sizes, cfg.min_space, generator))
    return _equal_counts(rows, frames, generator)


def compute_span_mask(
    lengths: list[int],
    frames: int,
    prob: float,
    span: int,
    *,
    min_masks: int = 2,
    generator: Optional[torch.Generator] = None,
) -> Tensor:
    """HuBERT/fairseq static span masking with overlap allowed (docs/methods.md#span-masking).

    Each row of valid length ``T`` gets ``int(prob * T / span + U[0, 1))`` spans (at least
    ``min_masks``) of ``span`` frames, starting at distinct positions drawn from
    ``randperm(T - span)``; spans may overlap, so ``prob=0.8, span=10`` masks about 57 %
    of the frames (HuBERT's "p = 8 %, l = 10"). As in fairseq's ``require_same_masks``,
    every row is then subsampled to the batch's smallest masked count.

    Returns:
        [B, frames] bool mask, never True on padding.
    """
    rows = []
    for length in lengths:
        length = int(length)
        usable = max(length - span, 1)
        num = int(prob * length / span + torch.rand((), generator=generator).item())
        num = min(max(min_masks, num), usable)
        starts = torch.randperm(usable, generator=generator)[:num]
        idx = (starts[:, None] + torch.arange(span)[None, :]).flatten()
        rows.append(torch.unique(idx[idx < length]))
    return _equal_counts(rows, frames, generator)


def masked_fraction(mask: Tensor) -> float:
    """The fraction of frames a [B, T] mask masks (what the loop logs as ``mask_frac``)."""
    return float(mask.float().mean())


def _equal_counts(rows: list[Tensor], frames: int, generator) -> Tensor:
    """Rows of frame indices as a [B, frames] mask, each cut to the fewest masked frames of the batch."""
    fewest = min(len(r) for r in rows)
    mask = torch.zeros(len(rows), frames, dtype=torch.bool)
    for i, idx in enumerate(rows):
        if len(idx) > fewest:
            idx = idx[torch.randperm(len(idx), generator=generator)[:fewest]]
        mask[i, idx] = True
    return mask


def _randint(low: int, high: int, generator) -> int:
    """Uniform integer in [low, high)."""
    return low + int(torch.randint(high - low, (), generator=generator))


def _place_apart(length: int, sizes: list[int], min_space: int, generator) -> Tensor:
    """Frame indices of one row: spans of the given sizes, placed without overlap.

    Longest spans first, each by :func:`_take`; a span that fits nowhere is left out.
    """
    shortest = min(sizes)
    free = [(0, length)]  # [start, end) intervals spans may still start in
    picked: list[int] = []
    for size in sorted(sizes, reverse=True):
        start = _take(free, size, min_space, shortest, generator)
        if start is None:
            break
        picked.extend(range(start, start + size))
    idx = torch.tensor(sorted(set(picked)), dtype=torch.long)
    return idx[idx < length]


def _take(free: list[tuple[int, int]], size: int, min_space: int, keep: int, generator) -> Optional[int]:
    """Place one span of ``size`` frames in the free intervals; its start, or None if none has room.

    The interval is chosen with probability proportional to its size among those with room
    for the span and ``min_space`` frames, the start is uniform in it, and what is left on
    either side (``min_space`` frames kept free) stays in ``free`` if it could still hold a
    span of ``keep`` frames.
    """
    room = torch.tensor([float(e - s) if e - s >= size + min_space else 0.0 for s, e in free])
    if float(room.sum()) == 0:
        return None
    s, e = free.pop(int(torch.multinomial(room, 1, generator=generator)))
    start = _randint(s, max(s + 1, e - size), generator)
    if start - s - min_space >= keep:
        free.append((s, start - min_space + 1))
    if e - start - size - min_space > keep:
        free.append((start + size + min_space, e))
    return start


def _row_to_fraction(cfg: MaskConfig, length: int, frac: float, generator) -> Tensor:
    """Frame indices of one row holding ``round(frac·length)`` masked frames (at least one).

    Static: spans of ``cfg.length`` frames at distinct random starts, overlap allowed, until
    the union is large enough; the surplus of the last span is cut off its end. Uniform: span
    lengths U{0..2·length} placed one at a time by :func:`_take`, the last one shortened to end
    on the target, and one longer than every free gap shortened to the longest that fits. A row
    reaches the target unless min_space leaves no room for it.
    """
    target = min(length, max(1, round(frac * length)))
    if cfg.selection == "static":
        span = min(cfg.length, length)
        covered = torch.zeros(length, dtype=torch.bool)
        order: list[int] = []
        for start in torch.randperm(length - span + 1, generator=generator).tolist():
            new = [t for t in range(start, start + span) if not covered[t]]
            covered[new] = True
            order.extend(new)
            if len(order) >= target:
                break
        return torch.tensor(sorted(order[:target]), dtype=torch.long)
    free = [(0, length)]
    picked: list[int] = []
    while len(picked) < target:
        size = min(int(torch.randint(0, 2 * cfg.length + 1, (), generator=generator)), target - len(picked))
        longest = max((e - s - cfg.min_space for s, e in free), default=0)
        if longest < 1:
            break  # no frame left that keeps min_space to its neighbours
        size = min(size, longest)
        if size == 0:
            continue
        start = _take(free, size, cfg.min_space, 1, generator)
        picked.extend(range(start, start + size))
    idx = torch.tensor(sorted(set(picked)), dtype=torch.long)
    return idx[idx < length]
