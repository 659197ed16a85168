"""A search's runs, read back from MLflow into rows: one per trial and per reference run.

Everything the report and the leaderboard show comes from here, so they work the same on a
finished search, a resumed one and one that is still running (its unfinished trials have the
status ``running``). Nothing is read from Ray's or Optuna's files: MLflow is the record.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from typing import Optional

from raydistill.errors import UserError
from raydistill.evaluate.suite import OVERALL_SCORE_METRICS
from raydistill.provenance import from_tags
from raydistill.search.objectives import DEFAULT as DEFAULT_OBJECTIVES, parse_objectives
from raydistill.tracking.mlflow import (BASELINE, CONFIRMED, EVALUATED, KIND, REFERENCE, SEARCH_ID, STATUS, rank_key,
                                        trial_runs)
from raydistill.utils import is_number

# Columns of the trials table, after the identity columns and the knobs.
SCORE_COLUMNS = ("overall_score", "superb_score", "probe_score", *OVERALL_SCORE_METRICS)
CONFIRM_COLUMNS = (CONFIRMED, "confirmed_spread", "confirmed_seeds")  # search --confirm
COST_COLUMNS = ("params", "macs_per_second", "train_seconds", "eval_seconds", "peak_host_mb", "peak_gpu_mb")
REFERENCE_ORDER = ("teacher", "random_init", "fbank")
CURVE_METRICS = ("probe_score", "loss")


@dataclass
class SearchData:
    experiment_id: str
    search_id: str
    search_run: object  # mlflow.entities.Run
    objectives: dict
    knobs: list[str]  # the trials' parameter names (config paths), in first-seen order
    trials: list[dict]  # rows, in the order the trials started
    references: list[dict]
    space: Optional[dict] = None  # the search run's search_space.yaml (SearchSpace.describe())
    curves: dict = field(default_factory=dict)  # run id -> {metric: [(step, value), ...]}

    @property
    def objective(self) -> tuple[str, str]:
        """(metric, max|min) the leaderboard sorts by: the search's first objective."""
        name = next(iter(self.objectives))
        return name, self.objectives[name]

    def ranked(self) -> list[dict]:
        """Trials best first by the objective; unscored ones after, by probe score."""
        name, mode = self.objective
        sign = -1.0 if mode == "max" else 1.0

        def key(row):  # confirmed trials first (search --confirm), then scored, then by probe score
            rank = rank_key(row, name, sign)
            if rank[0] < 2:
                return rank
            probe = row.get("probe_score")
            return 2, -probe if is_number(probe) else math.inf

        return sorted(self.trials, key=key)

    def scored(self) -> list[dict]:
        name = self.objective[0]
        return [r for r in self.trials if is_number(r.get(name))]


def find_search(client, experiment_id: str, search_id: Optional[str]):
    """The search run named ``search_id``, or the experiment's most recent one."""
    query = f"tags.`{KIND}` = 'search'" + (f" and tags.`{SEARCH_ID}` = '{search_id}'" if search_id else "")
    runs = client.search_runs([experiment_id], filter_string=query, order_by=["attributes.start_time DESC"],
                              max_results=1)
    if not runs:
        raise UserError(f"no search {search_id!r} in this experiment" if search_id else "no search in this experiment")
    return runs[0]


def collect(client, experiment_id: str, search_id: Optional[str] = None, *, details: bool = False) -> SearchData:
    """The rows of one search (default: the latest). ``details``: also what the report needs beyond
    the leaderboard: each trial's metric history and the search's space file."""
    search = find_search(client, experiment_id, search_id)
    search_id = search.data.tags[SEARCH_ID]
    runs = trial_runs(client, experiment_id, search_id, order_by=["attributes.start_time ASC"])
    knobs: list[str] = []
    for run in runs:
        knobs += [k for k in run.data.params if k not in knobs and k not in ("params", "config_json")]
    trials = [_row(run, "trial", knobs) for run in runs]
    references = []
    linked = {k[len(REFERENCE):]: v for k, v in search.data.tags.items() if k.startswith(REFERENCE)}
    for name in sorted(linked, key=lambda n: REFERENCE_ORDER.index(n) if n in REFERENCE_ORDER else 9):
        try:
            references.append(_row(client.get_run(linked[name]), "reference", knobs))
        except Exception:  # noqa: BLE001 - a deleted reference run: the report goes on without it
            continue
    objectives = parse_objectives(search.data.params.get("objectives"), f"search {search_id}: objectives") \
        if search.data.params.get("objectives") else dict(DEFAULT_OBJECTIVES)
    data = SearchData(experiment_id, search_id, search, objectives, knobs, trials, references)
    if details:
        data.space = _space(client, search.info.run_id)
        for run in runs:
            data.curves[run.info.run_id] = {
                key: sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, key))
                for key in CURVE_METRICS if key in run.data.metrics}
    return data


def _row(run, kind: str, knobs: list[str]) -> dict:
    tags, metrics = run.data.tags, run.data.metrics
    if kind == "reference":
        status, name = "reference", tags.get(BASELINE, run.info.run_name)
    else:
        status = tags.get(STATUS) or ("running" if run.info.status == "RUNNING" else run.info.status.lower())
        name = run.info.run_name
    row = {"run_name": name, "kind": kind, "status": status,
           "from_checkpoint": tags.get(EVALUATED) == "from_last_checkpoint",
           "method": _method(run), "run_id": run.info.run_id, "start_time": run.info.start_time}
    row.update({k: run.data.params[k] for k in knobs if k in run.data.params and kind == "trial"})
    row.update({k: metrics[k] for k in (*SCORE_COLUMNS, *CONFIRM_COLUMNS, *COST_COLUMNS) if k in metrics})
    row["provenance"] = from_tags(tags)
    return row


def _method(run) -> str:
    if "method" in run.data.params:
        return run.data.params["method"]
    text = run.data.tags.get("raydistill.config") or run.data.params.get("config_json")
    if text:
        return json.loads(text).get("method", "")
    return ""


def _space(client, run_id: str) -> Optional[dict]:
    import tempfile

    import yaml

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one small file: no bar on stderr
    try:
        with tempfile.TemporaryDirectory() as tmp:
            path = client.download_artifacts(run_id, "search_space.yaml", tmp)
            return yaml.safe_load(open(path))
    except Exception:  # noqa: BLE001 - searches logged before the file existed
        return None
