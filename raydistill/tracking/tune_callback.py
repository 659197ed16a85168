"""A Ray Tune callback that mirrors every trial into its MLflow child run."""

from __future__ import annotations

from typing import Callable

from ray.tune import Callback

from raydistill.tracking.mlflow import SearchTracker, log_dict_artifact


class MlflowTrialCallback(Callback):
    """Child run per trial: sampled values as params, learning curve and scores as metrics.

    ``describe(values) -> (run_name, extra_params, full_config_dict)`` derives the readable
    run name, the student's parameter count and the full configuration from the sampled values.
    """

    def __init__(self, tracker: SearchTracker, describe: Callable[[dict], tuple[str, dict, dict]]):
        self.tracker = tracker
        self.describe = describe
        self._described: dict[str, tuple[str, dict, dict]] = {}

    def _run(self, trial) -> str:
        if trial.trial_id not in self._described:
            self._described[trial.trial_id] = self.describe(dict(trial.config))
        name, extra, config = self._described[trial.trial_id]
        run_id, created = self.tracker.trial_run(trial.trial_id, name, {**trial.config, **extra})
        if created:
            log_dict_artifact(self.tracker.client, run_id, config, "config.yaml")
        return run_id

    def on_trial_start(self, iteration, trials, trial, **info):
        self._run(trial)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self.tracker.log_metrics(self._run(trial), result, step=result.get("step"))

    def on_trial_complete(self, iteration, trials, trial, **info):
        result = trial.last_result or {}
        status = "completed" if "overall_score" in result else "stopped"
        self.tracker.finish_trial(self._run(trial), status, checkpoint=result.get("checkpoint_path"))

    def on_trial_error(self, iteration, trials, trial, **info):
        error = ""
        if getattr(trial, "error_file", None):
            try:
                error = open(trial.error_file).read().strip().splitlines()[-1]
            except OSError:
                pass
        result = trial.last_result or {}
        self.tracker.finish_trial(self._run(trial), "error", checkpoint=result.get("checkpoint_path"), error=error)
