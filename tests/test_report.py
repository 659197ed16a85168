"""The search report, the leaderboard and warm start, on a real MLflow store filled the way a
search fills it (SearchTracker), without running trials."""

import csv
import io
import json
import math
from pathlib import Path

import pytest

from raydistill.cli import main
from raydistill.search.space import load_space

REPO = Path(__file__).resolve().parents[1]
SPACE = REPO / "search_spaces" / "dice.yaml"
CORPUS, TEACHER = "corpus-aaaa", "teacher-bbbb"


def sampled_values(space, n: int, seed: int = 1) -> list[dict]:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    return [space.sample(study.ask()) for _ in range(n)]


def fill_search(uri: str, root: Path, search_id: str, statuses: list[str], *, seed: int = 1,
                corpus: str = CORPUS) -> list[dict]:
    """One search of ``dice.yaml`` (smoke) with a trial per status: knobs as params, learning
    curves by step, scores that depend on the learning rate (so it is the important knob)."""
    from raydistill.provenance import record
    from raydistill.tracking.mlflow import SearchTracker

    space = load_space(SPACE, smoke=True)
    tracker = SearchTracker(uri, "exp", search_id, artifact_root=root / "mlartifacts")
    tracker.start_search(search_id, {"space": str(SPACE), "method": "dicehubert", "corpus_key": corpus,
                                     "teacher_key": TEACHER, "objectives": "overall_score:max"},
                         provenance=record(corpus_key=corpus, teacher_key=TEACHER, search_id=search_id),
                         artifacts={"search_space.yaml": space.describe()})
    refs = {name: tracker.log_baseline(name, f"{name}-{corpus}", {"overall_score": score, "params": size}, {})
            for name, score, size in (("teacher", 70.0, 2e6), ("fbank", 20.0, 0), ("random_init", 25.0, 3e5))}
    tracker.link_references(refs)
    out = []
    for i, (values, status) in enumerate(zip(sampled_values(space, len(statuses), seed), statuses)):
        run_id, _ = tracker.trial_run(f"{search_id}-{i}", f"trial-{i}", values, space.config(values).to_dict())
        score = 40.0 + 5.0 * math.log10(values["optim.lr"] / 1e-3) + i * 0.01
        for step in (8, 16):
            tracker.log_metrics(run_id, {"loss": 3.0 - step / 10, "probe_score": score - 20 + step / 8,
                                         "params": 1e5 * (1 + i), "macs_per_second": 1e8 * (1 + i)}, step=step)
        if status in ("completed", "stopped"):
            tracker.log_metrics(run_id, {"overall_score": score, "superb_score": 10 * score, "pr_per": 50.0}, step=16)
        if status == "stopped":
            tracker.client.set_tag(run_id, "raydistill.evaluated", "from_last_checkpoint")
        if status != "running":
            tracker.finish_trial(run_id, status)
        out.append({"run_id": run_id, "values": values, "status": status, "score": score})
    return out


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    statuses = ["completed", "stopped", "completed", "diverged", "stopped", "completed", "completed", "running"]
    trials = fill_search(uri, root, "s1", statuses)
    return uri, root, trials


def test_leaderboard_sorts_by_the_objective_with_status_and_references(store, capsys):
    uri, _, trials = store
    capsys.readouterr()
    assert main(["report", "--mlflow-uri", uri, "--experiment", "exp", "--search", "s1"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    scored = sorted((t for t in trials if t["status"] in ("completed", "stopped")), key=lambda t: -t["score"])
    body = [line for line in lines if line.split() and line.split()[0].isdigit()]
    assert [line.split()[1] for line in body] == [f"trial-{trials.index(t)}" for t in scored]
    assert "stopped*" in out and "diverged" in out and "running" in out
    assert lines[0].startswith("search s1: 8 trials (4 completed, 1 diverged, 1 running, 2 stopped)")
    refs = lines[-4:-1]
    assert [r.split()[0] for r in refs] == ["teacher", "random_init", "fbank"]

    assert main(["report", "--mlflow-uri", uri, "--experiment", "exp", "--format", "json"]) == 0  # latest search
    rows = json.loads(capsys.readouterr().out)
    assert [r["rank"] for r in rows[:len(scored)]] == list(range(1, len(scored) + 1))
    assert rows[0]["overall_score"] == pytest.approx(scored[0]["score"])
    assert {"optim.lr", "student.embed_dim", "params", "macs_per_second"} <= set(rows[0])

    assert main(["report", "--mlflow-uri", uri, "--experiment", "exp", "--format", "csv"]) == 0
    table = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert len(table) == len(trials) + 3 and table[0]["status"] in ("completed", "stopped")


def test_report_files_figures_and_importances_count_stopped_trials(store, tmp_path):
    from raydistill.report import build_report, log_report
    from raydistill.report.importance import study
    from raydistill.tracking.mlflow import client_for

    uri, _, trials = store
    client = client_for(uri, create=False)
    exp = client.get_experiment_by_name("exp").experiment_id
    report = build_report(client, exp, "s1", tmp_path / "r")
    # six scored trials, the two that ASHA stopped with their post-evaluation scores
    in_memory = study(report.data)
    assert len(in_memory.trials) == 6
    assert {t.user_attrs["status"] for t in in_memory.trials} == {"completed", "stopped"}
    for evaluator in ("fANOVA", "PED-ANOVA"):
        assert isinstance(report.importances[evaluator], dict), report.importances[evaluator]
    assert max(report.importances["fANOVA"], key=report.importances["fANOVA"].get) == "optim.lr"
    for name in ("history", "importance", "parallel", "slice", "curves", "pareto"):
        path = report.figures[name]
        assert isinstance(path, Path) and path.read_bytes()[:4] == b"\x89PNG", (name, path)
    assert report.figures["methods"] == "one method only"
    page = (tmp_path / "r" / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 6 and "trial-0" in page and "teacher" in page
    with open(tmp_path / "r" / "trials.csv") as f:
        assert len(list(csv.DictReader(f))) == len(trials) + 3

    log_report(client, report)
    run = client.get_run(report.data.search_run.info.run_id)
    names = {a.path for a in client.list_artifacts(run.info.run_id, "report")}
    assert {"report/report.html", "report/trials.csv", "report/figures", "report/trials_table.json"} <= names
    assert "report/report.html" in run.data.tags["mlflow.note.content"] or "report.html" in \
        run.data.tags["mlflow.note.content"]


def test_report_refuses_bad_input_with_one_line(store, tmp_path, capsys, error_lines):
    uri, _, _ = store
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    for args, message in (
        (["--experiment", "nope"], "no experiment named 'nope'"),
        (["--experiment", "exp", "--search", "nope"], "no search 'nope'"),
        (["--experiment", "exp", "--out", str(tmp_path / "full")], "is not empty"),
    ):
        capsys.readouterr()
        assert main(["report", "--mlflow-uri", uri, *args]) == 2
        err = error_lines()
        assert len(err) == 1 and message in err[0], err
    assert not (tmp_path / "nowhere").exists()
    assert main(["report", "--workdir", str(tmp_path / "nowhere")]) == 2
    assert not (tmp_path / "nowhere").exists()


def test_warm_start_rebuilds_fitting_trials_and_changes_tpe_first_suggestion(store):
    import optuna

    from raydistill.search.searcher import ProbeAwareOptunaSearch
    from raydistill.search.warmstart import check_same_data, earlier_searches, warm_trials
    from raydistill.errors import UserError
    from raydistill.tracking.mlflow import client_for

    uri, _, trials = store
    client = client_for(uri, create=False)
    exp = client.get_experiment_by_name("exp").experiment_id
    searches = earlier_searches(client, exp, "exp", ["s1"])
    check_same_data(searches, CORPUS, TEACHER)
    with pytest.raises(UserError, match="another corpus"):
        check_same_data(searches, "corpus-other", TEACHER)
    space = load_space(SPACE, smoke=True)
    warm = warm_trials(client, exp, searches, space, {"overall_score": "max"})
    assert len(warm) == 6  # scored ones only
    assert sorted(t.value for t in warm) == pytest.approx(sorted(t["score"] for t in trials if "score" in t
                                                                and t["status"] in ("completed", "stopped")))
    # a space that gives other configurations (its full-size base, not smoke) takes none of them
    with pytest.raises(UserError, match="fits"):
        warm_trials(client, exp, searches, load_space(SPACE), {"overall_score": "max"})

    def first(warm_trials):
        searcher = ProbeAwareOptunaSearch(space=space.sample_for_ray, metric="overall_score", mode="max",
                                          intermediate_metric="probe_score", to_config=space.trial_values,
                                          sampler=optuna.samplers.TPESampler(seed=0, n_startup_trials=2),
                                          warm_trials=warm_trials)
        return searcher.suggest("t0"), searcher._ot_study

    cold, cold_study = first([])
    hot, hot_study = first(warm)
    assert len(cold_study.trials) == 1 and len(hot_study.trials) == 7
    assert cold != hot
    # TPE's model-based suggestion is near the best earlier learning rates (the score rises with lr)
    best_lr = max(warm, key=lambda t: t.value).params["optim.lr"]
    assert abs(math.log(hot["optim.lr"] / best_lr)) < abs(math.log(space.params[0].low / best_lr)) + 1e-9


def test_warm_start_cli_refusals_write_nothing(store, tmp_path, capsys, error_lines):
    uri, _, _ = store
    base = ["search", "--space", str(SPACE), "--smoke", "--mlflow-uri", uri, "--experiment", "exp",
            "--workdir", str(tmp_path / "w")]
    for args, message in (
        (["--warm-start", "nope"], "no search 'nope' in experiment 'exp'"),
        (["--warm-start", "bad id!"], "is not a search id"),
        (["--warm-start", "s1", "--resume", "--name", "x"], None),
    ):
        capsys.readouterr()
        assert main(base + args) == 2
        err = error_lines()
        assert len(err) == 1 and (message is None or message in err[0]), err
    assert not (tmp_path / "w" / "ray_results").exists()
