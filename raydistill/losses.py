"""Distillation losses: pure functions of tensors, one per equation, each returning what it sums.

Every function returns a *sum over frames*; the caller divides by the (all-reduced)
number of frames it counted, so a loss stays correctly normalised under DDP.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def soft_unit_labels(features: Tensor, centroids: Tensor, temperature: float) -> Tensor:
    """DiceHuBERT soft labels (Eq. 3): ``p(i | h) = softmax_i(-||h - c_i||_2 / τ)``.

    Args:
        features: [N, D] teacher features of the frames.
        centroids: [K, D] k-means centroids of the same teacher layer.
        temperature: τ > 0; small τ approaches the hard (argmin) label.

    Returns:
        [N, K] probabilities (float32).
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, found {temperature}")
    dist = torch.cdist(features.float(), centroids.float())  # Euclidean, not squared (ρ = L2 distance)
    return torch.softmax(-dist / temperature, dim=-1)


def masked_prediction_loss(logits: Tensor, targets: Tensor) -> Tensor:
    """HuBERT's masked-prediction loss summed over the given frames (DiceHuBERT Eq. 2).

    ``L = -Σ_t log p(z_t | X̃, t)`` with hard labels; with soft labels (DiceHuBERT §3.2)
    ``L = Σ_t KL(q_t || p_t)``, the teacher's soft-label distribution ``q_t`` against the
    student's softmax ``p_t`` (student logits at temperature 1, i.e. HuBERT's cos/0.1).

    Args:
        logits: [N, K] student logits of the frames (already selected, e.g. the masked ones).
        targets: [N] int unit ids (hard labels) or [N, K] probabilities (soft labels).

    Returns:
        scalar sum over the N frames.
    """
    if targets.ndim == 1:
        return F.cross_entropy(logits.float(), targets.long(), reduction="sum")
    if targets.shape != logits.shape:
        raise ValueError(f"soft targets must match logits {list(logits.shape)}, found {list(targets.shape)}")
    log_p = F.log_softmax(logits.float(), dim=-1)
    return F.kl_div(log_p, targets.float(), reduction="sum")


def unit_accuracy(logits: Tensor, targets: Tensor) -> Tensor:
    """Number of frames whose argmax unit equals the (argmax) target unit."""
    hard = targets if targets.ndim == 1 else targets.argmax(-1)
    return (logits.argmax(-1) == hard).sum()
