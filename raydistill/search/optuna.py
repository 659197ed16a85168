"""Optuna through Ray Tune, with ASHA-stopped trials told as *pruned*.

Ray's ``OptunaSearch`` reports a trial that ASHA stopped as COMPLETE with whatever its last
value was, so TPE mixes truncated and finished runs (RAY_OPTUNA_MLFLOW.md). Here the
searcher's metric is the end-of-trial ``overall_score`` and the cheap per-rung
``probe_score`` goes to Optuna as intermediate values: a stopped trial ends without the
final metric, which ``OptunaSearch`` then records as PRUNED, and TPE ranks it by its
intermediate values instead of treating it as a finished result.
"""

from __future__ import annotations

from ray.tune.search.optuna import OptunaSearch


class ProbeAwareOptunaSearch(OptunaSearch):
    def __init__(self, *args, intermediate_metric: str, **kwargs):
        super().__init__(*args, **kwargs)
        self._intermediate = intermediate_metric

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if trial_id in self._completed_trials or self._intermediate not in result:
            return
        self._ot_trials[trial_id].report(float(result[self._intermediate]), int(result["training_iteration"]))
