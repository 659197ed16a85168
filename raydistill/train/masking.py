"""Which frames a training step masks: HuBERT's static spans or ARMHuBERT's uniform spans.

Both follow fairseq's ``compute_mask_indices`` (METHODS.md §1.3): ``int(prob·T/length + U[0,1))``
spans per row (at least ``min_masks``), then every row is cut down to the batch's smallest
masked count (``require_same_masks``).
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from raydistill.config import MaskConfig
from raydistill.models.hubert import compute_span_mask


def sample_mask(
    cfg: MaskConfig, lengths: list[int], frames: int, *, prob: Optional[float] = None,
    generator: Optional[torch.Generator] = None,
) -> Tensor:
    """[B, frames] bool mask for rows of the given valid lengths (``prob`` overrides ``cfg.prob``)."""
    prob = cfg.prob if prob is None else prob
    if cfg.selection == "static":
        return compute_span_mask(lengths, frames, prob, cfg.length, min_masks=cfg.min_masks, generator=generator)
    rows = [_uniform_spans(int(n), prob, cfg.length, cfg.min_masks, cfg.min_space, generator) for n in lengths]
    fewest = min(len(r) for r in rows)
    mask = torch.zeros(len(lengths), frames, dtype=torch.bool)
    for i, idx in enumerate(rows):
        if len(idx) > fewest:
            idx = idx[torch.randperm(len(idx), generator=generator)[:fewest]]
        mask[i, idx] = True
    return mask


def _randint(low: int, high: int, generator) -> int:
    """Uniform integer in [low, high)."""
    return low + int(torch.randint(high - low, (), generator=generator))


def _uniform_spans(length: int, prob: float, span: int, min_masks: int, min_space: int, generator) -> Tensor:
    """Frame indices of one row: span lengths ~ U{0..2·span}, placed without overlap.

    Longest spans first; each goes into a free interval chosen with probability proportional
    to its size, at a uniform position, and leaves ``min_space`` free frames on both sides.
    """
    num = max(min_masks, int(prob * length / span + float(torch.rand((), generator=generator))))
    sizes = torch.randint(0, 2 * span + 1, (num,), generator=generator).tolist()
    if sum(sizes) == 0:
        sizes[0] = min(span, length - 1)
    shortest = min(sizes)
    free = [(0, length)]  # [start, end) intervals spans may still start in
    picked: list[int] = []
    for size in sorted(sizes, reverse=True):
        room = torch.tensor([float(e - s) if e - s >= size + min_space else 0.0 for s, e in free])
        if float(room.sum()) == 0:
            break
        s, e = free.pop(int(torch.multinomial(room, 1, generator=generator)))
        start = _randint(s, max(s + 1, e - size), generator)
        picked.extend(range(start, start + size))
        if start - s - min_space >= shortest:
            free.append((s, start - min_space + 1))
        if e - start - size - min_space > shortest:
            free.append((start + size + min_space, e))
    idx = torch.tensor(sorted(set(picked)), dtype=torch.long)
    return idx[idx < length]
