"""Losses against their formulas, computed independently."""

import math

import torch

from raydistill.losses import masked_prediction_loss, soft_unit_labels, unit_accuracy


def test_soft_labels_follow_equation_3():
    torch.manual_seed(0)
    h, c, tau = torch.randn(5, 3), torch.randn(4, 3), 2.5
    p = soft_unit_labels(h, c, tau)
    for n in range(5):
        weights = [math.exp(-math.dist(h[n].tolist(), c[k].tolist()) / tau) for k in range(4)]
        for k in range(4):
            assert abs(p[n, k].item() - weights[k] / sum(weights)) < 1e-5
    # small temperature -> the hard (nearest centroid) label
    hard = torch.cdist(h, c).argmin(1)
    assert (soft_unit_labels(h, c, 1e-3).argmax(1) == hard).all()


def test_hard_loss_is_summed_negative_log_likelihood():
    torch.manual_seed(0)
    logits, target = torch.randn(6, 4), torch.tensor([0, 3, 1, 1, 2, 0])
    expected = -sum(torch.log_softmax(logits[i], 0)[target[i]] for i in range(6))
    torch.testing.assert_close(masked_prediction_loss(logits, target), expected)


def test_soft_loss_is_summed_kl_and_reduces_to_ce_for_one_hot():
    torch.manual_seed(0)
    logits = torch.randn(6, 4)
    q = torch.softmax(torch.randn(6, 4), -1)
    log_p = torch.log_softmax(logits, -1)
    expected = sum((q[i] * (q[i].log() - log_p[i])).sum() for i in range(6))
    torch.testing.assert_close(masked_prediction_loss(logits, q), expected)
    target = torch.tensor([0, 3, 1, 1, 2, 0])
    one_hot = torch.nn.functional.one_hot(target, 4).float()
    torch.testing.assert_close(masked_prediction_loss(logits, one_hot), masked_prediction_loss(logits, target))


def test_unit_accuracy_counts_argmax_matches():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [3.0, 1.0]])
    assert unit_accuracy(logits, torch.tensor([0, 0, 0])).item() == 2
    assert unit_accuracy(logits, torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.3, 0.7]])).item() == 2
