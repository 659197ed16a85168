"""A Ray Tune callback that mirrors every trial into its MLflow child run."""

from __future__ import annotations

from typing import Callable, Optional

from ray.tune import Callback

from raydistill.tracking.mlflow import SearchTracker


class MlflowTrialCallback(Callback):
    """Child run per trial: sampled values as params, learning curve and scores as metrics.

    ``describe(values) -> (run_name, size_metrics, full_config_dict)`` derives the readable
    run name, the student's size (logged at step 0, before its first result) and the full
    configuration (a tag and a ``config.yaml`` artifact, not a parameter) from the sampled values.
    ``key(trial)``: what identifies the trial's run (default: Tune's trial id; a study's cell
    name, so a rerun re-attaches to it); ``params(values)``: its MLflow parameters (default: the
    sampled values).
    """

    def __init__(self, tracker: SearchTracker, describe: Callable[[dict], tuple[str, dict, dict]], *,
                 key: Optional[Callable] = None, params: Optional[Callable[[dict], dict]] = None):
        self.tracker = tracker
        self.describe = describe
        self.key = key or _trial_id
        self.params = params or _values
        self._described: dict[str, tuple[str, dict, dict]] = {}

    def _run(self, trial) -> str:
        key = self.key(trial)
        if key not in self._described:
            self._described[key] = self.describe(dict(trial.config))
        name, size, config = self._described[key]
        run_id, created = self.tracker.trial_run(key, name, self.params(dict(trial.config)), config)
        if created:
            self.tracker.log_metrics(run_id, size, step=0)
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
        status, error = trial_error(getattr(trial, "error_file", None))
        result = trial.last_result or {}
        self.tracker.finish_trial(self._run(trial), status, checkpoint=result.get("checkpoint_path"), error=error)


def _trial_id(trial) -> str:
    return trial.trial_id


def _values(values: dict) -> dict:
    return values


def trial_error(error_file) -> tuple[str, str]:
    """(status, reason) of a failed trial from its error file: ``diverged`` with the loop's
    message when the loss became NaN/inf (Ray wraps it in a controller error, so the line is
    searched for), ``error`` with the one-line message of a full disk (``DiskFull``, found the
    same way), otherwise ``error`` with the last line."""
    try:
        lines = open(error_file).read().strip().splitlines() if error_file else []
    except OSError:
        lines = []
    diverged = [line for line in lines if "Diverged" in line and "loss became" in line]
    if diverged:
        return "diverged", diverged[-1].strip()
    full = [line.split("DiskFull: ", 1)[1] for line in lines if "DiskFull: " in line]
    if full:
        return "error", full[-1].strip()
    return "error", lines[-1] if lines else ""
