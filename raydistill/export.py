"""``raydistill export``: the best trials of an MLflow experiment as files you can rerun.

Writes into ``--out`` (built in a temporary directory, renamed into place):

* ``best.yaml`` — the best trial's full configuration; ``raydistill train --config best.yaml``
  reruns it (corpus and teacher recorded beside the training config);
* ``top/01-<run>.yaml`` … — the top-K configurations, same format;
* ``leaderboard.json`` — run ids, names and scores of the top-K;
* ``student.pt`` — the best trial's student checkpoint (``{config, state_dict, teacher}``).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Optional

import yaml

from raydistill.errors import UserError
from raydistill.tracking.mlflow import KIND, SEARCH_ID, client_for
from raydistill.utils import atomic_dir, log

SCORES = ("overall_score", "pr_per", "sid_acc", "probe_score")


def export(uri: str, experiment: str, out: Path, *, top_k: int = 5, search_id: Optional[str] = None,
           force: bool = False) -> dict:
    if top_k < 1:
        raise UserError(f"--top must be >= 1, found {top_k}")
    out = Path(out)
    if out.exists() and not force:
        raise UserError(f"{out} already exists: choose another --out or pass --force")
    client = client_for(uri, create=False)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        raise UserError(f"no experiment named {experiment!r} in {uri}")
    query = f"tags.`{KIND}` = 'trial'" + (f" and tags.`{SEARCH_ID}` = '{search_id}'" if search_id else "")
    runs = client.search_runs([exp.experiment_id], filter_string=query,
                              order_by=["metrics.overall_score DESC"], max_results=5000)
    runs = [r for r in runs if "overall_score" in r.data.metrics and "config_json" in r.data.params]
    if not runs:
        raise UserError(f"experiment {experiment!r} has no scored trials" + (f" in search {search_id}" if search_id else ""))
    top = runs[:top_k]
    parents = {}
    with atomic_dir(out, replace=force) as tmp:
        (tmp / "top").mkdir()
        board = []
        for rank, run in enumerate(top, 1):
            doc = _config_doc(client, run, parents, uri, experiment)
            name = f"{rank:02d}-{run.info.run_name or run.info.run_id}.yaml"
            _write_yaml(tmp / "top" / name, doc)
            if rank == 1:
                _write_yaml(tmp / "best.yaml", doc)
            board.append({"rank": rank, "run_id": run.info.run_id, "run_name": run.info.run_name,
                          **{k: run.data.metrics[k] for k in SCORES if k in run.data.metrics},
                          "params": run.data.params.get("params")})
        (tmp / "leaderboard.json").write_text(json.dumps(board, indent=2) + "\n")
        best = top[0]
        try:
            path = client.download_artifacts(best.info.run_id, "student/student.pt", str(tmp))
            shutil.move(path, tmp / "student.pt")
            shutil.rmtree(tmp / "student", ignore_errors=True)
        except Exception as e:  # a run whose checkpoint was not logged still exports its config
            log(f"no student checkpoint for run {best.info.run_id}: {str(e).splitlines()[0][:200]}")
    log(f"exported the top {len(top)} of {len(runs)} scored trials to {out} "
        f"(best: {best.info.run_name}, overall_score {best.data.metrics['overall_score']:.2f})")
    return {"out": str(out), "best_run": best.info.run_id, "overall_score": best.data.metrics["overall_score"],
            "exported": len(top)}


def _config_doc(client, run, parents: dict, uri: str, experiment: str) -> dict:
    parent_id = run.data.tags.get("mlflow.parentRunId")
    if parent_id and parent_id not in parents:
        parents[parent_id] = client.get_run(parent_id).data.params
    search = parents.get(parent_id, {})
    return {
        "corpus": search.get("corpus_spec", "embedded"),
        "teacher": search.get("teacher", "embedded"),
        "smoke": search.get("smoke") == "True",
        "train": json.loads(run.data.params["config_json"]),
        "scores": {k: run.data.metrics[k] for k in SCORES if k in run.data.metrics},
        "source": {"mlflow_uri": uri, "experiment": experiment, "run_id": run.info.run_id,
                   "run_name": run.info.run_name, "search_id": run.data.tags.get(SEARCH_ID)},
    }


def _write_yaml(path: Path, doc: dict) -> None:
    header = f"# raydistill configuration exported from MLflow run {doc['source']['run_id']}\n"
    header += "# rerun with: raydistill train --config <this file>\n"
    path.write_text(header + yaml.safe_dump(doc, sort_keys=False))
