"""Each method's loss against its formula computed independently, by explicit loops (float64)."""

import math

import pytest
import torch

from raydistill.losses import (
    attention_map_loss, distilhubert_loss, dkd_loss, feature_mse, gram_distance, kd_loss, masking_distill_loss,
    temporal_gram,
)

torch.manual_seed(0)


def softmax(row, t=1.0):
    m = max(v / t for v in row)
    e = [math.exp(v / t - m) for v in row]
    s = sum(e)
    return [v / s for v in e]


def kl(p, q):
    return sum(pi * (math.log(pi) - math.log(qi)) for pi, qi in zip(p, q) if pi > 0)


def logits(n=5, c=7):
    return torch.randn(n, c, dtype=torch.float64) * 2, torch.randn(n, c, dtype=torch.float64) * 2


def test_kd_is_the_frame_mean_of_the_kl_times_t_squared():
    zs, zt = logits()
    for t in (1.0, 4.0):
        expected = sum(kl(softmax(zt[i].tolist(), t), softmax(zs[i].tolist(), t)) for i in range(5)) / 5 * t * t
        assert kd_loss(zs, zt, temperature=t).item() == pytest.approx(expected, rel=1e-5)


def _parts(zs, zt, target, t):
    """Per frame: TCKD, NCKD, p_t of the teacher, by loops."""
    out = []
    for i in range(zs.shape[0]):
        ps, pt = softmax(zs[i].tolist(), t), softmax(zt[i].tolist(), t)
        k = int(target[i])
        bs, bt = [ps[k], 1 - ps[k]], [pt[k], 1 - pt[k]]
        ns = [p / (1 - ps[k]) for j, p in enumerate(ps) if j != k]
        nt = [p / (1 - pt[k]) for j, p in enumerate(pt) if j != k]
        out.append((kl(bt, bs), kl(nt, ns), pt[k]))
    return out


def test_kd_decomposes_into_tckd_and_weighted_nckd():
    zs, zt = logits()
    target = zt.argmax(-1)
    t = 2.0
    parts = _parts(zs, zt, target, t)
    decomposed = sum(tc + (1 - p) * nc for tc, nc, p in parts) / len(parts) * t * t
    assert kd_loss(zs, zt, temperature=t).item() == pytest.approx(decomposed, rel=1e-5)


def test_dkd_matches_its_definition():
    zs, zt = logits()
    target = torch.tensor([0, 3, 6, 2, 2])
    for alpha, beta, t in ((1.0, 8.0, 4.0), (0.5, 2.0, 1.0)):
        parts = _parts(zs, zt, target, t)
        expected = (alpha * sum(p[0] for p in parts) + beta * sum(p[1] for p in parts)) / len(parts) * t * t
        got = dkd_loss(zs, zt, target, alpha=alpha, beta=beta, temperature=t).item()
        assert got == pytest.approx(expected, rel=1e-5, abs=1e-6)


def test_dkd_with_unit_weights_is_not_kd():
    zs, zt = logits()
    target = zt.argmax(-1)
    assert dkd_loss(zs, zt, target, alpha=1, beta=1, temperature=1).item() != pytest.approx(
        kd_loss(zs, zt, temperature=1).item(), rel=1e-3)


def gram_loop(x, y, norm):
    b, n, d = x.shape
    g = torch.zeros(b, n, n, dtype=torch.float64)
    for i in range(b):
        for s in range(n):
            for u in range(n):
                a, c = x[i, s], y[i, u]
                if norm == "cosine":
                    a, c = a / a.norm(), c / c.norm()
                g[i, s, u] = sum(a[k] * c[k] for k in range(d)) / (d if norm == "dim" else 1)
    return g


@pytest.mark.parametrize("norm", ["none", "dim", "cosine"])
def test_temporal_gram_by_loops(norm):
    x, y = torch.randn(2, 4, 3, dtype=torch.float64), torch.randn(2, 4, 3, dtype=torch.float64)
    assert torch.allclose(temporal_gram(x, norm=norm).double(), gram_loop(x, x, norm), atol=1e-5)
    assert torch.allclose(temporal_gram(x, y, norm=norm).double(), gram_loop(x, y, norm), atol=1e-5)


def _valid():
    return torch.tensor([[True, True, True, False], [True, True, False, False]])


@pytest.mark.parametrize("distance", ["mse", "l1", "kl"])
def test_gram_distance_by_loops_over_valid_frames(distance):
    gs, gt = torch.randn(2, 4, 4, dtype=torch.float64), torch.randn(2, 4, 4, dtype=torch.float64)
    valid = _valid()
    total, count = 0.0, 0
    for b in range(2):
        idx = [i for i in range(4) if valid[b, i]]
        for r in idx:
            if distance == "kl":
                total += kl(softmax([gt[b, r, c].item() for c in idx]), softmax([gs[b, r, c].item() for c in idx]))
                count += 1
            else:
                for c in idx:
                    d = gs[b, r, c].item() - gt[b, r, c].item()
                    total += d * d if distance == "mse" else abs(d)
                    count += 1
    got, n = gram_distance(gs, gt, valid, distance=distance)
    assert got.item() == pytest.approx(total, rel=1e-5) and int(n) == count


@pytest.mark.parametrize("distance", ["kl", "mse"])
def test_attention_loss_by_loops_and_padding_does_not_matter(distance):
    att_s = torch.rand(2, 4, 4, dtype=torch.float64).softmax(-1)
    att_t = torch.rand(2, 4, 4, dtype=torch.float64).softmax(-1)
    valid = _valid()
    total = 0.0
    for b in range(2):
        idx = [i for i in range(4) if valid[b, i]]
        for r in idx:
            ps = [att_s[b, r, c].item() for c in idx]
            pt = [att_t[b, r, c].item() for c in idx]
            if distance == "kl":
                total += kl([v / sum(pt) for v in pt], [v / sum(ps) for v in ps])
            else:
                total += sum((a - c) ** 2 for a, c in zip(ps, pt))
    got, _ = attention_map_loss(att_s, att_t, valid, distance=distance)
    assert got.item() == pytest.approx(total, rel=1e-5)
    garbage_s, garbage_t = att_s.clone(), att_t.clone()
    garbage_s[~valid] = 9.0
    garbage_t[:, :, 3] = 5.0  # padded column of row 0, padded columns of row 1
    again, _ = attention_map_loss(garbage_s, garbage_t.masked_fill(valid[:, None, :], 0) + att_t.masked_fill(
        ~valid[:, None, :], 0), valid, distance=distance)
    assert again.item() == pytest.approx(got.item(), rel=1e-5)


def test_masking_distillation_uses_the_right_teacher_per_frame():
    pred = torch.randn(2, 3, 4, dtype=torch.float64)
    t_unmasked, t_masked = torch.randn(2, 3, 4, dtype=torch.float64), torch.randn(2, 3, 4, dtype=torch.float64)
    mask = torch.tensor([[True, False, False], [False, True, True]])
    expected = 0.0
    for b in range(2):
        for n in range(3):
            target = t_unmasked[b, n] if mask[b, n] else t_masked[b, n]
            expected += sum((pred[b, n, d] - target[d]).item() ** 2 for d in range(4)) / 4
    total, count = masking_distill_loss(pred, t_unmasked, t_masked, mask)
    assert total.item() == pytest.approx(expected, rel=1e-6) and count == 6
    swapped, _ = masking_distill_loss(pred, t_masked, t_unmasked, mask)
    assert swapped.item() != pytest.approx(expected, rel=1e-3)
    l1, _ = masking_distill_loss(pred, t_unmasked, t_masked, mask, loss="l1")
    assert l1.item() == pytest.approx(sum(
        (pred[b, n] - (t_unmasked[b, n] if mask[b, n] else t_masked[b, n])).abs().mean().item()
        for b in range(2) for n in range(3)), rel=1e-6)


def test_distilhubert_loss_by_loops():
    pred, target = torch.randn(2, 3, 4, dtype=torch.float64), torch.randn(2, 3, 4, dtype=torch.float64)
    valid = torch.tensor([[True, True, False], [True, False, False]])
    expected = 0.0
    for b in range(2):
        for n in range(3):
            if not valid[b, n]:
                continue
            p, t = pred[b, n].tolist(), target[b, n].tolist()
            l1 = sum(abs(a - c) for a, c in zip(p, t)) / 4
            cos = sum(a * c for a, c in zip(p, t)) / math.sqrt(sum(a * a for a in p) * sum(c * c for c in t))
            expected += l1 - 0.5 * math.log(1 / (1 + math.exp(-cos)))
    total, count = distilhubert_loss(pred, target, valid, cos_weight=0.5)
    assert total.item() == pytest.approx(expected, rel=1e-6) and int(count) == 3


def test_feature_mse_by_loops():
    pred, target = torch.randn(2, 3, 4, dtype=torch.float64), torch.randn(2, 3, 4, dtype=torch.float64)
    valid = torch.tensor([[True, False, True], [True, True, True]])
    expected = sum(((pred[b, n] - target[b, n]) ** 2).mean().item() for b in range(2) for n in range(3) if valid[b, n])
    total, count = feature_mse(pred, target, valid)
    assert total.item() == pytest.approx(expected, rel=1e-6) and int(count) == 5


def test_every_loss_sends_finite_gradients_to_the_student():
    x = torch.randn(2, 4, 3, requires_grad=True)
    t = torch.randn(2, 4, 3)
    valid = torch.ones(2, 4, dtype=torch.bool)
    losses = [
        kd_loss(x.flatten(0, 1), t.flatten(0, 1), temperature=2.0),
        dkd_loss(x.flatten(0, 1), t.flatten(0, 1), t.flatten(0, 1).argmax(-1), alpha=1, beta=4, temperature=2.0),
        gram_distance(temporal_gram(x), temporal_gram(t), valid)[0],
        gram_distance(temporal_gram(x), temporal_gram(t), valid, distance="kl")[0],
        attention_map_loss(temporal_gram(x).softmax(-1), temporal_gram(t).softmax(-1), valid)[0],
        masking_distill_loss(x, t, t * 2, valid)[0],
        distilhubert_loss(x, t, valid)[0],
        feature_mse(x, t, valid)[0],
    ]
    for loss in losses:
        (grad,) = torch.autograd.grad(loss, x)
        assert torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_bad_options_are_refused():
    x = torch.randn(1, 2, 3)
    valid = torch.ones(1, 2, dtype=torch.bool)
    with pytest.raises(ValueError, match="norm must be one of"):
        temporal_gram(x, norm="l2")
    with pytest.raises(ValueError, match="distance must be one of"):
        gram_distance(temporal_gram(x), temporal_gram(x), valid, distance="cos")
    with pytest.raises(ValueError, match="loss must be one of"):
        masking_distill_loss(x, x, x, valid, loss="huber")
    with pytest.raises(ValueError, match="shapes differ"):
        feature_mse(x, torch.randn(1, 2, 4), valid)
