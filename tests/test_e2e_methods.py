"""Every method in a real smoke search (local Ray, Ray Train trials, Optuna, MLflow), each trial
leaving one MLflow run with its knobs and scores: one method's own space file (star.yaml,
multi-objective, exported as a Pareto set), then all.yaml, which runs every method; an exported
configuration of a non-default method reruns."""

import json
import math
from pathlib import Path

import pytest

from raydistill.cli import main
from raydistill.methods import load_student

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow

# method -> a knob of that method that every trial of it logs
KNOBS = {
    "dicehubert": "targets.labels",
    "kd": "kd.mode",
    "star": "star.norm",
    "armhubert": "student.reuse_pattern",
    "distilhubert": "distil.cos_weight",
}


@pytest.fixture(scope="module")
def workdir(ray_cluster, tmp_path_factory, smoke_workdir):
    return smoke_workdir(tmp_path_factory.mktemp("methods") / "runs")  # the smoke corpus and teacher, built once


def trial_runs(workdir, experiment):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    return [r for r in runs if r.data.tags.get("raydistill.kind") == "trial"]


def test_a_method_space_smoke_search(workdir):
    """One method's own space file (star.yaml; kd, arm and distil run in all.yaml below), searched
    multi-objective (score up, parameters down): exported as a Pareto set below."""
    code = main(["search", "--space", str(REPO / "search_spaces" / "star.yaml"), "--smoke", "--trials", "2",
                 "--workdir", str(workdir), "--experiment", "star", "--name", "smoke-star", "--confirm", "0",
                 "--objectives", "overall_score:max,params:min"])
    assert code == 0
    trials = trial_runs(workdir, "star")
    assert len(trials) == 2 and len({t.data.tags["raydistill.trial_id"] for t in trials}) == 2
    for trial in trials:
        # knobs are the trial's parameters; the method, a constant of the search, is its search run's
        assert KNOBS["star"] in trial.data.params and "method" not in trial.data.params
        assert json.loads(trial.data.tags["raydistill.config"])["method"] == "star"
        assert trial.data.metrics["params"] > 0
        assert {"overall_score", "pr_per", "sid_acc", "loss"} <= set(trial.data.metrics)


def dominated(point, others, modes):
    """Whether another point is at least as good on every objective and better on one."""
    def at_least(a, b, mode):
        return a >= b if mode == "max" else a <= b
    return any(all(at_least(o, p, m) for o, p, m in zip(other, point, modes)) and other != point
               for other in others)


def test_multi_objective_search_exports_its_pareto_set(workdir, tmp_path):
    trials = [t for t in trial_runs(workdir, "star") if math.isfinite(t.data.metrics["overall_score"])]
    out = tmp_path / "pareto"
    assert main(["export", "--workdir", str(workdir), "--experiment", "star", "--out", str(out), "--pareto"]) == 0
    doc = json.loads((out / "pareto.json").read_text())
    points = [(t.data.metrics["overall_score"], t.data.metrics["params"]) for t in trials]
    # the non-dominated trials, by brute force (not the code's own pareto_front)
    expected = {t.info.run_id for t, p in zip(trials, points) if not dominated(p, points, ["max", "min"])}
    assert expected
    assert {t["run_id"] for t in doc["trials"]} == expected
    assert all((out / t["config"]).is_file() for t in doc["trials"])


def test_all_methods_from_one_space_and_an_export_reruns(workdir, tmp_path, capsys):
    code = main(["search", "--space", str(REPO / "search_spaces" / "all.yaml"), "--smoke", "--trials", "5",
                 "--workdir", str(workdir), "--experiment", "all", "--name", "smoke-all", "--confirm", "0"])
    assert code == 0
    trials = trial_runs(workdir, "all")
    assert sorted(t.data.params["method"] for t in trials) == sorted(
        ["dicehubert", "kd", "star", "armhubert", "distilhubert"])  # every method once, first
    assert "optim.lr" in trials[0].data.params and not [k for t in trials for k in t.data.params if ":" in k]
    assert all(math.isfinite(t.data.metrics["overall_score"]) for t in trials)
    for trial in trials:  # each method's own knob, its config, its size and scores
        method = trial.data.params["method"]
        assert KNOBS[method] in trial.data.params, method
        assert json.loads(trial.data.tags["raydistill.config"])["method"] == method
        assert trial.data.metrics["params"] > 0
        assert {"overall_score", "pr_per", "sid_acc", "loss"} <= set(trial.data.metrics)
    # the report of a multi-method search compares the methods (and its table names each trial's)
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    parent = client.get_run(trials[0].data.tags["mlflow.parentRunId"])
    figures = {a.path.rsplit("/", 1)[-1] for a in client.list_artifacts(parent.info.run_id, "report/figures")}
    assert {"history.png", "methods.png", "pareto.png"} <= figures, figures
    capsys.readouterr()
    assert main(["report", "--workdir", str(workdir), "--experiment", "all", "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert sorted(r["method"] for r in rows if r["kind"] == "trial") == sorted(t.data.params["method"] for t in trials)
    out = tmp_path / "exported"
    assert main(["export", "--workdir", str(workdir), "--experiment", "all", "--out", str(out), "--top", "5"]) == 0
    board = json.loads((out / "leaderboard.json").read_text())
    # rerun the exported configuration of a method other than the default one
    assert sorted(e["method"] for e in board) == sorted(t.data.params["method"] for t in trials)
    entry = next(e for e in board if e["method"] != "dicehubert")
    config_file = out / entry["config"]
    assert config_file.is_file()
    capsys.readouterr()
    assert main(["train", "--config", str(config_file), "--workdir", str(workdir), "--experiment", "all"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert 0 < summary["overall_score"] <= 100
    config, module, _ = load_student(out / "student.pt")
    assert config.method in {t.data.params["method"] for t in trials}
