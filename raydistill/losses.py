"""Distillation losses: pure functions of tensors, one per equation, each returning what it sums.

Every function returns a *sum over frames* (with its count where the count is not obvious);
the caller divides by the (all-reduced) number of frames it counted, so a loss stays
correctly normalised under DDP. ``kd_loss`` and ``dkd_loss`` keep the reference semantics
(frame means); the caller multiplies by its frame count.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from raydistill.utils import check_choice


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

    ``L = -Σ_t log p(z_t | X̃, t)`` with hard labels; with soft labels (DiceHuBERT §3.2,
    docs/methods.md#dicehubert-targets) ``L = Σ_t KL(q_t || p_t)``, the teacher's soft-label
    distribution ``q_t`` against the student's softmax ``p_t`` (student logits at temperature 1,
    i.e. HuBERT's cos/0.1).

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


# ------------------------------------------------------------- KD / DKD (docs/methods.md#kd-and-dkd)
def kd_loss(student_logits: Tensor, teacher_logits: Tensor, *, temperature: float) -> Tensor:
    """Hinton KD: ``T² · mean_frames Σ_c p_T (log p_T − log p_S)``, ``p = softmax(z / T)``.

    Args:
        student_logits, teacher_logits: [N, C] logits of N frames.

    Returns:
        scalar, the frame mean (mdistiller ``KD.py`` semantics).
    """
    _same_shape(student_logits, teacher_logits)
    t = float(temperature)
    log_s = F.log_softmax(student_logits.float() / t, dim=-1)
    log_t = F.log_softmax(teacher_logits.float() / t, dim=-1)
    kl = (log_t.exp() * (log_t - log_s)).sum(-1)
    return kl.mean() * t * t


def dkd_loss(student_logits: Tensor, teacher_logits: Tensor, target: Tensor, *, alpha: float, beta: float,
             temperature: float) -> Tensor:
    """Decoupled KD (mdistiller ``DKD.py``): ``T² (α·TCKD + β·NCKD)``, each KL summed over
    classes and frames and divided by the number of frames N.

    TCKD compares the binary distributions ``[p_t, 1 − p_t]`` (plain ``log``); NCKD the
    distributions over the non-target classes, obtained by pushing the target logit down by
    1000 before the softmax. With α = β = 1 this is *not* KD: KD = TCKD + (1 − p^T_t)·NCKD.

    Args:
        student_logits, teacher_logits: [N, C].
        target: [N] target class of every frame.
    """
    _same_shape(student_logits, teacher_logits)
    t = float(temperature)
    zs, zt = student_logits.float() / t, teacher_logits.float() / t
    gt = F.one_hot(target.long(), zs.shape[-1]).bool()
    ps, pt = zs.softmax(-1), zt.softmax(-1)
    bs = torch.stack([(ps * gt).sum(-1), (ps * ~gt).sum(-1)], dim=-1)
    bt = torch.stack([(pt * gt).sum(-1), (pt * ~gt).sum(-1)], dim=-1)
    n = zs.shape[0]
    tckd = F.kl_div(torch.log(bs), bt, reduction="sum") * t * t / n
    log_ps_nt = F.log_softmax(zs - 1000.0 * gt, dim=-1)
    pt_nt = F.softmax(zt - 1000.0 * gt, dim=-1)
    nckd = F.kl_div(log_ps_nt, pt_nt, reduction="sum") * t * t / n
    return alpha * tckd + beta * nckd


# ------------------------------------------------------------- STaR (docs/methods.md#star)
GRAM_NORMS = ("none", "dim", "cosine")
GRAM_DISTANCES = ("mse", "l1", "kl")


def temporal_gram(x: Tensor, y: Optional[Tensor] = None, *, norm: str = "dim") -> Tensor:
    """Temporal Gram matrix ``x yᵀ`` [B, N, N] of frame vectors (``y = x``: layer-wise TGM;
    ``y`` = the next layer's output: intra-layer TGM).

    Args:
        x, y: [B, N, D] hidden states.
        norm: "none"; "dim" divides by D (comparable across widths, default); "cosine"
            L2-normalises every frame first.
    """
    check_choice("norm", norm, GRAM_NORMS)
    y = x if y is None else y
    if x.shape[:2] != y.shape[:2]:
        raise ValueError(f"gram of mismatched frames: {list(x.shape)} vs {list(y.shape)}")
    x, y = x.float(), y.float()
    if norm == "cosine":
        x, y = F.normalize(x, dim=-1), F.normalize(y, dim=-1)
    g = x @ y.transpose(1, 2)
    return g / x.shape[-1] if norm == "dim" else g


def gram_distance(g_student: Tensor, g_teacher: Tensor, valid: Tensor, *, distance: str = "mse") -> tuple[Tensor, Tensor]:
    """Distance between [B, N, N] matrices over valid × valid entries.

    Returns:
        (sum, count): "mse"/"l1" sum squared/absolute errors over the valid entries (count =
        entries); "kl" sums the row-wise KL(softmax(G_T) ‖ softmax(G_S)) over valid rows, each
        softmax over the valid columns (count = rows).
    """
    check_choice("distance", distance, GRAM_DISTANCES)
    _same_shape(g_student, g_teacher)
    pair = valid[:, :, None] & valid[:, None, :]
    if distance in ("mse", "l1"):
        diff = (g_student.float() - g_teacher.float()).masked_fill(~pair, 0.0)
        err = diff.pow(2) if distance == "mse" else diff.abs()
        return err.sum(), pair.sum()
    return _row_kl(g_student.float(), g_teacher.float(), valid, logits=True)


def attention_map_loss(att_student: Tensor, att_teacher: Tensor, valid: Tensor, *, distance: str = "kl") -> tuple[Tensor, Tensor]:
    """Distance between head-averaged attention maps [B, N, N] (post-softmax probabilities).

    Returns:
        (sum, count): "kl" sums row-wise KL(A_T ‖ A_S) over valid rows, restricted to the valid
        columns (count = rows); "mse" sums squared errors over valid × valid entries.
    """
    check_choice("distance", distance, ("kl", "mse"))
    _same_shape(att_student, att_teacher)
    if distance == "mse":
        pair = valid[:, :, None] & valid[:, None, :]
        diff = (att_student.float() - att_teacher.float()).masked_fill(~pair, 0.0)
        return diff.pow(2).sum(), pair.sum()
    return _row_kl(att_student.float(), att_teacher.float(), valid, logits=False)


def _row_kl(student: Tensor, teacher: Tensor, valid: Tensor, *, logits: bool) -> tuple[Tensor, Tensor]:
    """Σ over valid rows of KL(teacher row ‖ student row), columns restricted to valid frames."""
    cols = valid[:, None, :]
    if logits:
        log_s = student.masked_fill(~cols, float("-inf")).log_softmax(-1)
        log_t = teacher.masked_fill(~cols, float("-inf")).log_softmax(-1)
    else:  # probabilities: renormalise over the valid columns
        eps = 1e-8
        s = student.masked_fill(~cols, 0.0)
        t = teacher.masked_fill(~cols, 0.0)
        log_s = (s / s.sum(-1, keepdim=True).clamp(min=eps)).clamp(min=eps).log()
        log_t = (t / t.sum(-1, keepdim=True).clamp(min=eps)).clamp(min=eps).log()
    p_t = log_t.exp().masked_fill(~cols, 0.0)
    kl = (p_t * (log_t - log_s).masked_fill(~cols, 0.0)).sum(-1)
    return kl.masked_fill(~valid, 0.0).sum(), valid.sum()


# ------------------------------------------ masking distillation (docs/methods.md#masking-distillation)
def masking_distill_loss(pred: Tensor, teacher_unmasked: Tensor, teacher_masked: Tensor, mask: Tensor, *,
                         loss: str = "mse") -> tuple[Tensor, int]:
    """MaskHuBERT's per-layer loss ``L_m + L_u``: masked frames against the teacher on unmasked
    input, unmasked frames (padding included, as the reference code) against the teacher on
    masked input; per-frame error = mean over D of the squared ("mse") or absolute ("l1") error.

    Args:
        pred: [B, N, D] projected student states; teacher_*: [B, N, D]; mask: [B, N] bool.

    Returns:
        (sum over all B·N frames, B·N): divide by the global B·N for the paper's normalisation.
    """
    check_choice("loss", loss, ("mse", "l1"))
    _same_shape(pred, teacher_unmasked)
    _same_shape(pred, teacher_masked)
    target = torch.where(mask[..., None], teacher_unmasked.float(), teacher_masked.float())
    diff = pred.float() - target
    err = (diff.pow(2) if loss == "mse" else diff.abs()).mean(-1)
    return err.sum(), mask.numel()


# ------------------------------------------------------------- DistilHuBERT (docs/methods.md#distilhubert),
# DiceHuBERT L_feat (docs/methods.md#dicehubert-loss)
def distilhubert_loss(pred: Tensor, target: Tensor, valid: Tensor, *, cos_weight: float = 1.0) -> tuple[Tensor, Tensor]:
    """DistilHuBERT per frame: ``(1/D)·‖pred − target‖₁ − λ·log σ(cos(pred, target))``.

    The paper sums this over the prediction heads, the s3prl code averages: the caller
    chooses (one call per head).

    Returns:
        (sum over valid frames, number of valid frames).
    """
    _same_shape(pred, target)
    pred, target = pred.float(), target.float()
    l1 = (pred - target).abs().mean(-1)
    cos = F.cosine_similarity(pred, target, dim=-1)
    per_frame = l1 - cos_weight * F.logsigmoid(cos)
    return per_frame.masked_fill(~valid, 0.0).sum(), valid.sum()


def feature_mse(pred: Tensor, target: Tensor, valid: Tensor) -> tuple[Tensor, Tensor]:
    """Mean-over-D squared error per frame, summed over valid frames: (sum, count)."""
    _same_shape(pred, target)
    err = (pred.float() - target.float()).pow(2).mean(-1)
    return err.masked_fill(~valid, 0.0).sum(), valid.sum()


def _same_shape(a: Tensor, b: Tensor) -> None:
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {list(a.shape)} vs {list(b.shape)}")
