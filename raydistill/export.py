"""``raydistill export``: the best trials of an MLflow experiment as files you can rerun.

Writes into ``--out`` (built in a temporary directory, renamed into place):

* ``best.yaml`` — the best trial's full configuration; ``raydistill train --config best.yaml``
  reruns it (corpus and teacher recorded beside the training config);
* ``top/01-<run>.yaml`` … — the top-K configurations, same format;
* ``leaderboard.json`` — run ids, names and scores of the top-K;
* ``student.pt`` — the best trial's student checkpoint (``{config, state_dict, teacher}``).

With ``--pareto``, also the Pareto set of the finished trials: those no other finished trial
beats on every objective (at least as good on all, better on one). The objectives are the
search's (the ``objectives`` param of its MLflow parent run; ``overall_score`` alone for a
single-objective search), or ``--objectives`` (``overall_score:max,params:min``):

* ``pareto/01-<run>.yaml`` … — one configuration per Pareto trial, by ``overall_score``
  (best first), same format as ``best.yaml`` (its ``scores`` include the objective values);
* ``pareto.json`` — the objectives, and per Pareto trial its run id and name, search id,
  objective values and configuration file (relative to ``--out``).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Optional

import yaml

from raydistill.errors import UserError
from raydistill.search.objectives import (DEFAULT as DEFAULT_OBJECTIVES, format_objectives, objective_values,
                                          parse_objectives)
from raydistill.evaluate.suite import SCORE_METRICS
from raydistill.pareto import pareto_front
from raydistill.provenance import from_tags
from raydistill.tracking.mlflow import (CONFIRMED, CONFIRMED_TAG, EVALUATED, KIND, SEARCH_ID, STATUS, open_experiment,
                                        ranked, run_config, scored)
from raydistill.utils import atomic_dir, log, one_line

SCORES = ("overall_score", "pr_per", "sid_acc", "probe_score")
CONFIRM_SCORES = (CONFIRMED, "confirmed_spread", "confirmed_seeds")  # search --confirm: what the ranking uses
# with SCORES first, every score and size a trial's run holds (the ``scores`` of an exported file)
ALL_SCORES = {*SCORE_METRICS, "probe_score", "probe_pr_per", "probe_sid_acc", "params", "macs_per_second"}


def export(uri: str, experiment: str, out: Path, *, top_k: int = 5, search_id: Optional[str] = None,
           force: bool = False, pareto: bool = False, objectives: Optional[str] = None) -> dict:
    if top_k < 1:
        raise UserError(f"--top must be >= 1, found {top_k}")
    if objectives is not None and not pareto:
        raise UserError("--objectives chooses what --pareto compares: pass --pareto with it")
    wanted = parse_objectives(objectives, "--objectives") if objectives is not None else None
    out = Path(out)
    if out.exists() and not force:
        raise UserError(f"{out} already exists: choose another --out or pass --force")
    client, experiment_id = open_experiment(uri, experiment)
    query = f"tags.`{KIND}` = 'trial'" + (f" and tags.`{SEARCH_ID}` = '{search_id}'" if search_id else "")
    runs = client.search_runs([experiment_id], filter_string=query,
                              order_by=["metrics.overall_score DESC"], max_results=5000)
    runs = ranked([r for r in runs if scored(r) and run_config(r) is not None])  # confirmed trials first
    if not runs:
        raise UserError(f"experiment {experiment!r} has no scored trials" + (f" in search {search_id}" if search_id else ""))
    top = runs[:top_k]
    parents: dict = {}
    front = _pareto_set(client, runs, parents, wanted) if pareto else None
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
                          "method": doc["train"].get("method"), "config": f"top/{name}",
                          **{k: run.data.metrics[k] for k in (*SCORES, *CONFIRM_SCORES) if k in run.data.metrics},
                          "params": run.data.params.get("params")})
        (tmp / "leaderboard.json").write_text(json.dumps(board, indent=2) + "\n")
        best = top[0]
        try:
            path = client.download_artifacts(best.info.run_id, "student/student.pt", str(tmp))
            shutil.move(path, tmp / "student.pt")
            shutil.rmtree(tmp / "student", ignore_errors=True)
        except Exception as e:  # a run whose checkpoint was not logged still exports its config
            log(f"no student checkpoint for run {best.info.run_id}: {one_line(e, 200, first_line=True)}")
        if front is not None:
            _write_pareto(tmp, client, front, parents, uri, experiment)
    confirmed = best.data.metrics.get(CONFIRMED)
    log(f"exported the top {len(top)} of {len(runs)} scored trials to {out} "
        f"(best: {best.info.run_name}, overall_score {best.data.metrics['overall_score']:.2f}"
        + (f", confirmed {confirmed:.2f} ± {best.data.metrics.get('confirmed_spread', 0):.2f}: ranked by it)"
           if confirmed is not None else ")"))
    summary = {"out": str(out), "best_run": best.info.run_id, "overall_score": best.data.metrics["overall_score"],
               "exported": len(top)}
    if front is not None:
        log(f"exported the Pareto set ({format_objectives(front['objectives'])}): {len(front['trials'])} of "
            f"{front['candidates']} finished trials, in {out / 'pareto'}")
        summary.update(pareto=len(front["trials"]), objectives=format_objectives(front["objectives"]))
    return summary


def _pareto_set(client, runs: list, parents: dict, wanted: Optional[dict]) -> dict:
    """The non-dominated finished trials among ``runs`` (sorted best overall_score first) under
    ``wanted``, or the objectives their search logged: ``{objectives, candidates, trials}``."""
    finished = [r for r in runs if r.info.status == "FINISHED"]
    objectives = wanted or _search_objectives(client, finished, parents)
    candidates = []
    for run in finished:
        values = objective_values(run.data.metrics, objectives, run.data.params)
        if values is not None:
            candidates.append((run, values))
    if not candidates:
        raise UserError(f"--pareto: no finished trial has a value for every objective ({format_objectives(objectives)})")
    skipped = len(finished) - len(candidates)
    if skipped:
        log(f"--pareto: {skipped} finished trial(s) without a value for every objective left out")
    front = pareto_front([v for _, v in candidates], list(objectives.values()))
    return {"objectives": objectives, "candidates": len(candidates), "trials": [candidates[i] for i in front]}


def _search_objectives(client, runs: list, parents: dict) -> dict:
    """The objectives the runs' searches logged; one set, or ask for --search / --objectives."""
    found: dict[str, set] = {}
    for run in runs:
        spec = _parent_params(client, run, parents).get("objectives") or format_objectives(DEFAULT_OBJECTIVES)
        found.setdefault(spec, set()).add(run.data.tags.get(SEARCH_ID) or "?")
    if len(found) > 1:
        listed = "; ".join(f"{spec} ({', '.join(sorted(ids))})" for spec, ids in sorted(found.items()))
        raise UserError(f"--pareto: the trials come from searches with different objectives: {listed}; "
                        "pass --search or --objectives")
    spec = next(iter(found), format_objectives(DEFAULT_OBJECTIVES))
    return parse_objectives(spec, "objectives logged on the search's MLflow run")


def _write_pareto(tmp: Path, client, front: dict, parents: dict, uri: str, experiment: str) -> None:
    (tmp / "pareto").mkdir()
    trials = []
    for rank, (run, values) in enumerate(front["trials"], 1):
        named = dict(zip(front["objectives"], values))
        doc = _config_doc(client, run, parents, uri, experiment)
        doc["scores"].update(named)
        path = Path("pareto") / f"{rank:02d}-{run.info.run_name or run.info.run_id}.yaml"
        _write_yaml(tmp / path, doc)
        trials.append({"rank": rank, "run_id": run.info.run_id, "run_name": run.info.run_name,
                       "search_id": run.data.tags.get(SEARCH_ID), "values": named, "config": str(path)})
    doc = {"objectives": front["objectives"], "candidates": front["candidates"], "trials": trials}
    (tmp / "pareto.json").write_text(json.dumps(doc, indent=2) + "\n")


def _parent_params(client, run, parents: dict) -> dict:
    """The params of a trial's search (parent) run, cached in ``parents``."""
    parent_id = run.data.tags.get("mlflow.parentRunId")
    if parent_id and parent_id not in parents:
        parents[parent_id] = client.get_run(parent_id).data.params
    return parents.get(parent_id, {})


def _config_doc(client, run, parents: dict, uri: str, experiment: str) -> dict:
    """One exported configuration: what ``train`` reruns, the trial's scores, where it came from
    (``source``) and what produced it (``provenance``: code and library versions, the corpus's
    and teacher's hashes, the search, the trial's status)."""
    search = _parent_params(client, run, parents)
    prov = from_tags(run.data.tags)
    prov.setdefault("corpus_key", search.get("corpus_key"))  # runs logged before provenance tags
    prov.setdefault("teacher_key", search.get("teacher_key"))
    prov.update(search_id=run.data.tags.get(SEARCH_ID), status=run.data.tags.get(STATUS, "unknown"),
                scored_from_last_checkpoint=run.data.tags.get(EVALUATED) == "from_last_checkpoint")
    return {
        "corpus": search.get("corpus_spec", "embedded"),
        "teacher": search.get("teacher", "embedded"),
        "smoke": search.get("smoke") == "True",
        "train": run_config(run),
        "scores": {k: run.data.metrics[k] for k in (*SCORES, *sorted(ALL_SCORES - set(SCORES)), *CONFIRM_SCORES)
                   if k in run.data.metrics},
        # what ranked it: the confirmed mean (search --confirm) if it has one, else its one evaluation
        "ranked_by": (f"{CONFIRMED} ({run.data.tags.get(CONFIRMED_TAG, '')})" if CONFIRMED in run.data.metrics
                      else "overall_score (one evaluation)"),
        "source": {"mlflow_uri": uri, "experiment": experiment, "run_id": run.info.run_id,
                   "run_name": run.info.run_name, "search_id": run.data.tags.get(SEARCH_ID)},
        "provenance": prov,
    }


def _write_yaml(path: Path, doc: dict) -> None:
    header = f"# raydistill configuration exported from MLflow run {doc['source']['run_id']}\n"
    header += "# rerun with: raydistill train --config <this file>\n"
    path.write_text(header + yaml.safe_dump(doc, sort_keys=False))
