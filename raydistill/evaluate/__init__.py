"""SUPERB-style scoring of a frozen upstream: features once, then small heads per task.

``upstream``: the :class:`Upstream` protocol, the FBank baseline, feature extraction.
``probes``: weighted-sum featurizer, the PR/ASR (CTC) and utterance-level (SID/KS/IC) heads.
``speaker``: ASV (x-vector head, EER). ``heads_fit``: the training loop all these heads share
(seeded steps, dev selection). ``qbe``: query-by-example (subsequence DTW, MAP).
``suite``: budgets and :func:`evaluate_upstream`, which returns per-task metrics, the "overall
score" and, given FBank and teacher references, the SUPERB score. ``compare``: several
upstreams over several seeds, ordered.
"""

from raydistill.evaluate.probes import (
    ASRHead,
    PRHead,
    SIDHead,
    WeightedSum,
    ctc_greedy_decode,
    edit_distance,
    train_asr_probe,
    train_pr_probe,
    train_sid_probe,
    train_utterance_probe,
)
from raydistill.evaluate.suite import (
    OVERALL_SCORE_METRICS,
    PROBE_TASKS,
    SCORE_METRICS,
    TASKS,
    EvalBudget,
    evaluate_upstream,
    overall_score,
    score_metrics,
    stratified_subset,
    superb_score,
)
from raydistill.evaluate.upstream import FBankUpstream, Upstream, extract_features, frozen

__all__ = [
    "ASRHead",
    "EvalBudget",
    "FBankUpstream",
    "OVERALL_SCORE_METRICS",
    "PRHead",
    "PROBE_TASKS",
    "SCORE_METRICS",
    "SIDHead",
    "TASKS",
    "Upstream",
    "WeightedSum",
    "ctc_greedy_decode",
    "edit_distance",
    "evaluate_upstream",
    "extract_features",
    "frozen",
    "overall_score",
    "score_metrics",
    "stratified_subset",
    "superb_score",
    "train_asr_probe",
    "train_pr_probe",
    "train_sid_probe",
    "train_utterance_probe",
]
