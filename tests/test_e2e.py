"""End to end on the real stack: a smoke search (real espeak-ng audio, pretrained teacher, local Ray,
Ray Train trials, Optuna + ASHA, MLflow SQLite store), export, and a rerun of the export."""

import json
from pathlib import Path

import pytest

from raydistill.cli import main
from raydistill.evaluate.suite import OVERALL_SCORE_METRICS, overall_score, superb_score
from raydistill.models.checkpoint import load_student

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def searched(ray_cluster, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("e2e") / "runs"
    code = main(["search", "--space", str(REPO / "search_spaces" / "dice.yaml"), "--smoke", "--trials", "3",
                 "--workdir", str(workdir), "--experiment", "e2e", "--name", "smoke-search"])
    assert code == 0
    return workdir


def runs_by_kind(workdir):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    exp = client.get_experiment_by_name("e2e")
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    kinds = {}
    for run in runs:
        kinds.setdefault(run.data.tags.get("raydistill.kind"), []).append(run)
    return client, kinds


def test_one_child_run_per_trial_with_params_metrics_and_curve(searched):
    client, kinds = runs_by_kind(searched)
    baselines = {r.data.tags["raydistill.baseline"]: r.data.metrics for r in kinds["baseline"]}
    fbank, teacher = baselines["fbank"], baselines["teacher"]
    (parent,) = kinds["search"]
    trials = kinds["trial"]
    assert len(trials) == 3
    assert len({t.data.tags["raydistill.trial_id"] for t in trials}) == 3
    for trial in trials:
        assert trial.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert trial.data.tags["raydistill.status"] in ("completed", "stopped")
        params = trial.data.params
        assert {"optim.lr", "student.embed_dim", "student.num_layers", "targets.labels", "mask.prob",
                "targets.teacher_layer", "targets.num_clusters", "params"} <= set(params)
        assert ("targets.temperature" in params) == (params["targets.labels"] == "soft")
        assert int(params["params"]) > 0
        metrics = trial.data.metrics
        # every task of the suite, its dev metric, both aggregates
        assert {"overall_score", "superb_score", "probe_score", "loss", *OVERALL_SCORE_METRICS} <= set(metrics)
        assert {f"{k}_dev" for k in OVERALL_SCORE_METRICS} <= set(metrics)
        assert 0 <= metrics["pr_per"] and 0 <= metrics["sid_acc"] <= 100
        assert metrics["overall_score"] == pytest.approx(overall_score(metrics))
        assert metrics["superb_score"] == pytest.approx(superb_score(metrics, fbank, teacher))
        curve = client.get_metric_history(trial.info.run_id, "loss")
        assert len(curve) >= 1 and all(m.step > 0 for m in curve)
    assert any(t.data.tags["raydistill.status"] == "completed" for t in trials)


def test_baselines_beside_the_trials(searched):
    _, kinds = runs_by_kind(searched)
    names = {r.data.tags["raydistill.baseline"]: r for r in kinds["baseline"]}
    assert set(names) == {"teacher", "random_init", "fbank"}
    for run in names.values():
        assert {"overall_score", "superb_score", *OVERALL_SCORE_METRICS} <= set(run.data.metrics)
    # the two ends of the SUPERB score's scale
    assert names["teacher"].data.metrics["superb_score"] == pytest.approx(1000.0)
    assert names["fbank"].data.metrics["superb_score"] == pytest.approx(0.0)


def test_export_and_rerun(searched, tmp_path, capsys):
    out = tmp_path / "exported"
    assert main(["export", "--workdir", str(searched), "--experiment", "e2e", "--out", str(out), "--top", "2"]) == 0
    assert (out / "best.yaml").is_file() and len(list((out / "top").glob("*.yaml"))) == 2
    board = json.loads((out / "leaderboard.json").read_text())
    assert board[0]["overall_score"] >= board[1]["overall_score"]
    config, module, teacher = load_student(out / "student.pt")
    assert teacher["spec"] == "embedded" and config.method == "dicehubert"
    capsys.readouterr()
    assert main(["train", "--config", str(out / "best.yaml"), "--workdir", str(searched), "--experiment", "e2e"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert 0 < summary["overall_score"] <= 100
    _, kinds = runs_by_kind(searched)
    (rerun,) = kinds["train"]
    assert rerun.data.metrics["overall_score"] == pytest.approx(summary["overall_score"])
    # exporting over an existing directory needs --force, and keeps the old one otherwise
    assert main(["export", "--workdir", str(searched), "--experiment", "e2e", "--out", str(out)]) == 2
    assert (out / "student.pt").is_file()
