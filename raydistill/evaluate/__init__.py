"""SUPERB-style scoring of a frozen upstream: features once, then small probes (PR, SID).

``upstream``: the :class:`Upstream` protocol, the FBank baseline, feature extraction.
``probes``: weighted-sum featurizer and the PR/SID heads. ``suite``: budgets and
:func:`evaluate_upstream`, which returns per-task metrics and the "overall score".
"""

from raydistill.evaluate.probes import (
    PRHead,
    SIDHead,
    WeightedSum,
    ctc_greedy_decode,
    edit_distance,
    train_pr_probe,
    train_sid_probe,
)
from raydistill.evaluate.suite import (
    OVERALL_SCORE_METRICS,
    EvalBudget,
    evaluate_upstream,
    overall_score,
    stratified_subset,
)
from raydistill.evaluate.upstream import FBankUpstream, Upstream, extract_features, frozen

__all__ = [
    "EvalBudget",
    "FBankUpstream",
    "OVERALL_SCORE_METRICS",
    "PRHead",
    "SIDHead",
    "Upstream",
    "WeightedSum",
    "ctc_greedy_decode",
    "edit_distance",
    "evaluate_upstream",
    "extract_features",
    "frozen",
    "overall_score",
    "stratified_subset",
    "train_pr_probe",
    "train_sid_probe",
]
