"""Optuna through Ray Tune, with ASHA-stopped trials told as *pruned*.

Ray's ``OptunaSearch`` reports a trial that ASHA stopped as COMPLETE with whatever its last
value was, so TPE mixes truncated and finished runs (docs/architecture.md#optuna). Here the
searcher's metric is the end-of-trial ``overall_score`` and the cheap per-rung
``probe_score`` goes to Optuna as intermediate values: a stopped trial ends without the
final metric, which ``OptunaSearch`` then records as PRUNED, and TPE ranks it by its
intermediate values instead of treating it as a finished result.

Multi-objective (``metric`` and ``mode`` lists, e.g. ``overall_score`` max and ``params``
min): Optuna takes no intermediate values for multi-objective trials (``Trial.report``
raises), so nothing is reported per rung. Ray would tell a stopped trial as COMPLETE with
``[None, params]``, which Optuna rejects (the trial then stays RUNNING in the study forever);
here a trial whose last result lacks an objective is told as PRUNED (FAIL if it errored or
an objective is not a finite number). TPE puts pruned trials after every complete one, so
only finished trials shape its Pareto ranking. Single-objective behaviour is unchanged.

A composed search space names its parameters ``<method>:<path>`` for Optuna (each method its own
range); ``to_config`` (``SearchSpace.trial_values``) turns a suggestion back into config paths, so
a trial's config, and what MLflow logs of it, reads ``optim.lr`` whatever the method.

Warm start: ``warm_trials`` (finished Optuna trials rebuilt from earlier searches' MLflow
runs) are added to the new study before its first suggestion, so TPE's start-up trials are
the earlier ones rather than random samples.
"""

from __future__ import annotations

from ray.tune.search.optuna import OptunaSearch

from raydistill.utils import is_number


class ProbeAwareOptunaSearch(OptunaSearch):
    def __init__(self, *args, intermediate_metric: str, to_config=None, warm_trials=(), **kwargs):
        self._intermediate = intermediate_metric
        self._to_config = to_config
        self._warm_trials = list(warm_trials)  # scored trials of earlier searches (search/warmstart.py)
        super().__init__(*args, **kwargs)

    def _setup_study(self, mode):
        super()._setup_study(mode)
        if self._warm_trials and not self._ot_study.trials:  # a fresh study: TPE learns from them first
            self._ot_study.add_trials(self._warm_trials)

    def suggest(self, trial_id: str):
        values = super().suggest(trial_id)
        return self._to_config(values) if self._to_config and isinstance(values, dict) else values

    @property
    def multi_objective(self) -> bool:
        return isinstance(self.metric, list)

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if self.multi_objective:
            return  # Optuna: Trial.report is not supported for multi-objective optimization
        if trial_id in self._completed_trials or self._intermediate not in result:
            return
        self._ot_trials[trial_id].report(float(result[self._intermediate]), int(result["training_iteration"]))

    def on_trial_complete(self, trial_id: str, result=None, error: bool = False) -> None:
        if not self.multi_objective or trial_id in self._completed_trials:
            super().on_trial_complete(trial_id, result, error)
            return
        from optuna.trial import TrialState

        values = [(result or {}).get(name) for name in self.metric]
        if all(is_number(v) for v in values):
            self._ot_study.tell(self._ot_trials[trial_id], [float(v) for v in values], state=TrialState.COMPLETE)
        else:
            broken = error or any(v is not None and not is_number(v) for v in values)
            self._ot_study.tell(self._ot_trials[trial_id], state=TrialState.FAIL if broken else TrialState.PRUNED)
        self._completed_trials.add(trial_id)
