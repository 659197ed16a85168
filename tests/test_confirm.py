"""search --confirm: what a confirmation logs and how confirmed trials are ranked (fast; the
real confirmation of a smoke search is in test_e2e.py)."""

import pytest

from raydistill.search.confirm import confirmed_metrics
from raydistill.tracking.mlflow import rank_key


def test_confirmed_metrics_are_means_with_the_spread_and_seed_count():
    scores = [{"overall_score": 40.0, "pr_per": 60.0}, {"overall_score": 42.0, "pr_per": 58.0},
              {"overall_score": 41.0, "pr_per": 59.0, "sid_acc": 10.0}]
    m = confirmed_metrics(scores)
    assert m == {"confirmed_overall_score": pytest.approx(41.0), "confirmed_pr_per": pytest.approx(59.0),
                 "confirmed_spread": pytest.approx(2.0), "confirmed_seeds": 3.0}  # sid_acc: not in every evaluation


def test_confirmed_trials_rank_first_by_their_confirmed_mean():
    runs = {
        "lucky": {"overall_score": 45.0, "confirmed_overall_score": 39.0},  # the winner's curse
        "steady": {"overall_score": 43.0, "confirmed_overall_score": 42.0},
        "unconfirmed": {"overall_score": 44.0},  # not in the top K by its single score... ranks after them
        "unscored": {"overall_score": float("nan")},
    }
    order = sorted(runs, key=lambda name: rank_key(runs[name]))
    assert order == ["steady", "lucky", "unconfirmed", "unscored"]
    # other objectives are never confirmed: plain order
    assert rank_key({"params": 5.0, "confirmed_overall_score": 1.0}, "params", 1.0) == (1, 5.0)
