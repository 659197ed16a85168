"""MLflow tracking: one parent run per search, one nested child run per trial, baseline runs.

Runs are found again by their tags (``raydistill.search_id``, ``raydistill.trial_id``), not
by remembered ids, so a resumed search re-attaches to its runs instead of opening
duplicates (Ray's ``MLflowLoggerCallback`` duplicates them on restore). All calls go
through one ``MlflowClient`` on the driver; trials never talk to MLflow.

Tags: ``raydistill.kind`` = ``search`` | ``trial`` | ``baseline`` | ``train``;
``raydistill.baseline`` = ``teacher`` | ``random_init`` | ``fbank``;
``raydistill.status`` = ``completed`` | ``stopped`` (by ASHA) | ``diverged`` (loss NaN/inf;
the reason in ``raydistill.error``) | ``error`` | ``lost``; ``raydistill.config``: a trial's
full configuration (JSON; also its ``config.yaml`` artifact); ``raydistill.provenance.*``:
code and library versions, corpus and teacher hashes (``raydistill/provenance.py``);
``raydistill.reference.<name>``: on a search run, the id of each reference run it is compared with.

What is a parameter and what is not (MLflow's comparison view makes an axis of every
parameter the compared runs share): a trial's parameters are its searched knobs only, by
dotted config path; the search's constants (space, corpus, teacher, objectives …) are
parameters of the search run; sizes and scores are metrics, logged by step.

MLflow's comparison view plots the knobs that differ between the compared runs (the first
three, sorted) and one metric: the first one logged to the first run (docs/reading-a-search.md).
So a trial run's first metric is its objective: ``overall_score`` is logged as NaN at step 0
when the run opens, and its real value at the trial's last step. Whether a trial is scored is
therefore ``scored(run)`` (a finite score), not whether the key exists.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Optional

from raydistill.errors import UserError
from raydistill.evaluate.suite import SCORE_METRICS
from raydistill.provenance import as_tags
from raydistill.utils import is_number, one_line

KIND, SEARCH_ID, TRIAL_ID, BASELINE, STATUS, KEY = (
    "raydistill.kind", "raydistill.search_id", "raydistill.trial_id", "raydistill.baseline",
    "raydistill.status", "raydistill.key",
)
CHECKPOINT = "raydistill.checkpoint"
CONFIG = "raydistill.config"
EVALUATED = "raydistill.evaluated"  # "from_last_checkpoint": a stopped trial scored afterwards
REFERENCE = "raydistill.reference."  # + teacher | fbank | random_init, on the search run
CONFIRMED = "confirmed_overall_score"  # a trial's mean over the confirmation's seeds (search/confirm.py)
CONFIRMED_TAG = "raydistill.confirmed"  # on a confirmed trial: the protocol (seeds, lr grid, suite)
FIRST_METRIC = "overall_score"  # a trial run's first metric: the comparison view's metric axis (see above)
MAX_TAG = 7500  # MLflow refuses longer tag values (8000 characters in its SQL store)
PARENT = "mlflow.parentRunId"
RUN_NAME = "mlflow.runName"
# Training-curve and score metrics a trial result may carry (Tune adds many internal keys).
TRIAL_METRICS = (
    "loss", "masked_loss", "unit_acc", "grad_norm", "lr", "audio_seconds_per_second", "train_seconds", "world_size",
    "resumed_from_step", "peak_host_mb", "peak_gpu_mb",
    "mask_frac",  # the fraction of frames a masking method really masked (the knob is not it: docs/masking.md)
    "probe_score", "probe_pr_per", "probe_sid_acc",
    *SCORE_METRICS,  # every task's test and dev metric, overall_score, superb_score, eval_seconds
    "params", "macs_per_second",  # the student's size: objectives of a multi-objective search
)


def client_for(uri: str, *, create: bool = True):
    """An ``MlflowClient`` for ``uri``, checked to answer (an unreachable store is a UserError)."""
    import mlflow
    from mlflow.tracking import MlflowClient

    if uri.startswith("sqlite:///") and create:
        Path(uri[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    if uri.startswith(("http://", "https://")):
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # fail fast, don't retry for minutes
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    mlflow.set_tracking_uri(uri)
    client = MlflowClient(tracking_uri=uri)
    try:
        client.search_experiments(max_results=1)
    except Exception as e:
        raise UserError(f"cannot reach the MLflow tracking store at {uri}: {one_line(e, 200, first_line=True)}") from None
    return client


def open_experiment(uri: str, name: str, what: str = "") -> tuple[Any, str]:
    """(client, experiment id) of an experiment that must already be in the store at ``uri``,
    read only: a missing SQLite file is refused before it is opened (opening creates it).
    ``what`` prefixes the error (e.g. ``"--warm-start: "``)."""
    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///"):]).is_file():
        raise UserError(f"{what}no MLflow store at {uri}")
    client = client_for(uri, create=False)
    exp = client.get_experiment_by_name(name)
    if exp is None:
        raise UserError(f"{what}no experiment named {name!r} in {uri}")
    return client, exp.experiment_id


def experiment_id(client, name: str, artifact_root: Optional[Path] = None) -> str:
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    location = None
    if artifact_root is not None:  # local store: keep artifacts inside the workdir
        location = (artifact_root / name).resolve().as_uri()
    return client.create_experiment(name, artifact_location=location)


def trial_runs(client, experiment: str, search_id: str, order_by: Optional[list[str]] = None) -> list:
    """Every trial run of one search (up to 10,000), in ``order_by``'s order."""
    return client.search_runs([experiment], max_results=10_000, order_by=order_by,
                              filter_string=f"tags.`{KIND}` = 'trial' and tags.`{SEARCH_ID}` = '{search_id}'")


def find_run(client, experiment: str, tags: dict[str, str]):
    query = " and ".join(f"tags.`{k}` = '{v}'" for k, v in tags.items())
    runs = client.search_runs([experiment], filter_string=query, max_results=2)
    return runs[0] if runs else None


def numeric(metrics: dict, keys=TRIAL_METRICS) -> dict[str, float]:
    out = {}
    for k in keys:
        v = metrics.get(k)
        if is_number(v):
            out[k] = float(v)
    return out


class SearchTracker:
    """The MLflow side of one search (driver only)."""

    def __init__(self, uri: str, experiment: str, search_id: str, *, artifact_root: Optional[Path] = None):
        self.client = client_for(uri)
        self.uri = uri
        self.experiment = experiment_id(self.client, experiment, artifact_root)
        self.experiment_name = experiment
        self.search_id = search_id
        self.parent: Optional[str] = None
        self.provenance: dict = {}  # raydistill.provenance.record(): tagged on every run it opens
        self._trial_runs: dict[str, str] = {}

    def __getstate__(self):  # the Tune callback holding us is pickled with the tuner (resume)
        state = dict(self.__dict__)
        state.pop("client")
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self.client = client_for(self.uri)

    # ------------------------------------------------------------------ search (parent) run
    def start_search(self, run_name: str, params: dict, space_file: Optional[Path] = None, *,
                     provenance: Optional[dict] = None, artifacts: Optional[dict] = None) -> str:
        """Open (or, resumed, re-attach to) the search run. ``artifacts``: {file name: data},
        each written as YAML beside the space file."""
        self.provenance = dict(provenance or {})
        run = find_run(self.client, self.experiment, {KIND: "search", SEARCH_ID: self.search_id})
        if run is None:
            run = self.client.create_run(self.experiment, run_name=run_name,
                                         tags={KIND: "search", SEARCH_ID: self.search_id, **as_tags(self.provenance)})
            self.client.log_batch(run.info.run_id, params=_params(params))
            if space_file is not None:
                self.client.log_artifact(run.info.run_id, str(space_file))
            for name, data in (artifacts or {}).items():
                log_dict_artifact(self.client, run.info.run_id, data, name)
        elif run.info.status != "RUNNING":
            self.client.update_run(run.info.run_id, status="RUNNING")
        self.parent = run.info.run_id
        return self.parent

    def link_references(self, run_ids: dict[str, str]) -> None:
        """Tag the search run with the reference runs it is compared with (they are shared by
        every search of the experiment on the same corpus and teacher, so not nested under one)."""
        self.client.log_batch(self.parent, tags=_tags({REFERENCE + name: rid for name, rid in run_ids.items()}))

    def end_search(self, metrics: dict, status: str = "FINISHED") -> None:
        self.client.log_batch(self.parent, metrics=_metrics(numeric(metrics, tuple(metrics))))
        self.client.set_terminated(self.parent, status=status)

    # ------------------------------------------------------------------ trial (child) runs
    def trial_run(self, trial_id: str, run_name: str = "", params: Optional[dict] = None,
                  config: Optional[dict] = None) -> tuple[str, bool]:
        """(run id, created) of a trial's child run: found by tags if it exists (resume), else
        created with ``params`` (its knobs) and its full ``config`` as a tag and an artifact."""
        if trial_id in self._trial_runs:
            return self._trial_runs[trial_id], False
        tags = {KIND: "trial", SEARCH_ID: self.search_id, TRIAL_ID: trial_id}
        run = find_run(self.client, self.experiment, tags)
        created = run is None
        if created:
            extra = {PARENT: self.parent, **as_tags(self.provenance)}
            if config is not None:
                text = json.dumps(config, sort_keys=True)
                if len(text) <= MAX_TAG:
                    extra[CONFIG] = text
            run = self.client.create_run(self.experiment, run_name=run_name or trial_id, tags={**tags, **extra})
            self.client.log_batch(run.info.run_id, metrics=_metrics({FIRST_METRIC: math.nan}, 0))
            if params:
                self.client.log_batch(run.info.run_id, params=_params(params))
            if config is not None:
                log_dict_artifact(self.client, run.info.run_id, config, "config.yaml")
        self._trial_runs[trial_id] = run.info.run_id
        return run.info.run_id, created

    def log_metrics(self, run_id: str, metrics: dict, step: Optional[int] = None) -> None:
        log_metrics(self.client, run_id, metrics, step)

    def run_metrics(self, run_id: str) -> dict:
        """A run's latest metrics as MLflow holds them now."""
        return self.client.get_run(run_id).data.metrics

    def log_evaluated(self, run_id: str, metrics: dict, how: str, step: Optional[int] = None) -> None:
        """The full evaluation of a trial ASHA stopped (search/posteval.py), and how it was made
        (:data:`EVALUATED`: ``last_rung`` or ``from_last_checkpoint``)."""
        log_metrics(self.client, run_id, metrics, step)
        self.client.set_tag(run_id, EVALUATED, how)

    def log_confirmed(self, run_id: str, metrics: dict, protocol: str) -> None:
        """A trial's confirmation (``confirmed_*`` metrics) and the protocol that gave it."""
        self.client.log_batch(run_id, metrics=_metrics(numeric(metrics, tuple(metrics))),
                              tags=_tags({CONFIRMED_TAG: protocol}))

    def finish_trial(self, run_id: str, status: str, *, checkpoint: Optional[str] = None, error: str = "") -> None:
        tags = {STATUS: status}
        if checkpoint:
            tags[CHECKPOINT] = checkpoint
        if error:
            tags["raydistill.error"] = error[:4000]
        self.client.log_batch(run_id, tags=_tags(tags))
        student = Path(checkpoint or "") / "student.pt"
        if checkpoint and student.is_file():
            self.client.log_artifact(run_id, str(student), artifact_path="student")
        self.client.set_terminated(run_id, status="FAILED" if status in ("error", "diverged") else "FINISHED")

    def close_lost_trials(self) -> int:
        """Once the tuner is done no trial can still run: a trial run left RUNNING belonged to a
        driver that was killed before Tune saved that trial (so the resumed search could not
        continue it). It is marked ``lost`` and KILLED, so every run is accounted for once."""
        runs = self.client.search_runs(
            [self.experiment], max_results=10_000,
            filter_string=f"tags.`{KIND}` = 'trial' and tags.`{SEARCH_ID}` = '{self.search_id}' "
                          "and attributes.status = 'RUNNING'",
        )
        for run in runs:
            self.client.set_tag(run.info.run_id, STATUS, "lost")
            self.client.set_terminated(run.info.run_id, status="KILLED")
        return len(runs)

    # ------------------------------------------------------------------ baselines
    def log_baseline(self, name: str, key: str, metrics: dict, params: dict) -> str:
        """A reference run (teacher / random_init / fbank), once per experiment and key."""
        tags = {KIND: "baseline", BASELINE: name, KEY: key}
        run = find_run(self.client, self.experiment, tags)
        if run is not None:
            return run.info.run_id
        prov = {k: v for k, v in self.provenance.items() if k != "search_id"}  # shared by searches
        run = self.client.create_run(self.experiment, run_name=f"baseline-{name}", tags={**tags, **as_tags(prov)})
        self.client.log_batch(run.info.run_id, metrics=_metrics(numeric(metrics)), params=_params(params))
        self.client.set_terminated(run.info.run_id)
        return run.info.run_id


def scored(run, metric: str = "overall_score") -> bool:
    """Whether a run holds a finite ``metric`` (trial runs open with a NaN ``overall_score``)."""
    return is_number(run.data.metrics.get(metric))


def rank_key(metrics: dict, metric: str = "overall_score", sign: float = -1.0) -> tuple:
    """Sort key of a trial by its metrics, best first: confirmed trials by their confirmed mean,
    then the others by their single evaluation, then unscored ones. ``sign`` -1 for a metric to
    maximise (only ``overall_score`` is ever confirmed)."""
    confirmed = metrics.get(CONFIRMED) if metric == "overall_score" else None
    if is_number(confirmed):
        return 0, sign * confirmed
    value = metrics.get(metric)
    return (1, sign * value) if is_number(value) else (2, 0.0)


def ranked(runs: list) -> list:
    """MLflow runs best first by :func:`rank_key` (the order of best_trial, export and the report)."""
    return sorted(runs, key=lambda r: rank_key(r.data.metrics))


def run_config(run) -> Optional[dict]:
    """A trial run's full configuration: its ``raydistill.config`` tag (runs logged before the
    tag existed: their ``config_json`` parameter)."""
    text = run.data.tags.get(CONFIG) or run.data.params.get("config_json")
    return json.loads(text) if text else None


def log_metrics(client, run_id: str, metrics: dict, step: Optional[int] = None) -> None:
    """Log the known numeric metrics of a result dict (Tune's internal keys are left out)."""
    values = numeric(metrics)
    if values:
        client.log_batch(run_id, metrics=_metrics(values, step))


def log_dict_artifact(client, run_id: str, data: Any, name: str) -> None:
    import yaml

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        client.log_artifact(run_id, str(path))


def _params(params: dict):
    from mlflow.entities import Param

    return [Param(str(k), str(v)[:6000]) for k, v in params.items()]


def _metrics(values: dict[str, float], step: Optional[int] = None):
    import time

    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    return [Metric(k, v, now, int(step or 0)) for k, v in values.items()]


def _tags(tags: dict):
    from mlflow.entities import RunTag

    return [RunTag(k, str(v)) for k, v in tags.items()]

