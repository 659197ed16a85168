"""Multi-objective search without Ray running: objectives (file and flag), the searcher's
bookkeeping of multi-objective trials, ``pareto_front``, and ``export --pareto`` against a real
MLflow SQLite store filled the way a search fills it."""

import itertools
import json
import random
from pathlib import Path

import pytest
import yaml

from raydistill.errors import UserError
from raydistill.pareto import pareto_front
from raydistill.search.objectives import format_objectives, parse_objectives, resolve_objectives
from raydistill.search.space import load_space

REPO = Path(__file__).resolve().parents[1]
SPACE = REPO / "search_spaces" / "dice.yaml"


# ---------------------------------------------------------------------------- objectives
def test_objectives_from_a_string_a_mapping_or_nothing():
    assert parse_objectives(None) == {"overall_score": "max"}
    assert parse_objectives("overall_score:max, params:min") == {"overall_score": "max", "params": "min"}
    both = parse_objectives({"overall_score": "max", "macs_per_second": "min", "params": "min"})
    assert list(both) == ["overall_score", "macs_per_second", "params"]
    assert parse_objectives(format_objectives(both)) == both
    assert resolve_objectives(None, {"overall_score": "max", "params": "min"}) == {"overall_score": "max", "params": "min"}
    assert resolve_objectives("overall_score:max", {"overall_score": "max", "params": "min"}) == {"overall_score": "max"}


BAD_OBJECTIVES = [
    ("unknown metric", "overall_score:max,flops:min", "unknown objective 'flops'"),
    ("bad mode", "overall_score:max,params:smallest", "mode must be max or min"),
    ("no mode", "overall_score", "metric:mode pairs"),
    ("empty", "", "metric:mode pairs"),
    ("without overall_score", "params:min", "must include overall_score"),
    ("overall_score minimised", "overall_score:min,params:min", "use overall_score:max"),
    ("twice", "overall_score:max,params:min,params:max", "params is given twice"),
    ("too many", {"overall_score": "max", "params": "min", "macs_per_second": "min", "pr_per": "min"}, "1 to 3"),
    ("a list", ["overall_score"], "expected a mapping"),
]


@pytest.mark.parametrize("name, value, message", BAD_OBJECTIVES, ids=[b[0] for b in BAD_OBJECTIVES])
def test_bad_objectives_are_one_line_errors(name, value, message):
    with pytest.raises(UserError) as err:
        parse_objectives(value, "here")
    assert message in str(err.value) and str(err.value).startswith("here: ") and "\n" not in str(err.value)


def space_with(tmp_path, objectives) -> Path:
    doc = yaml.safe_load(SPACE.read_text())
    doc["objectives"] = objectives
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def test_space_file_objectives(tmp_path):
    assert load_space(SPACE).objectives == {"overall_score": "max"}
    space = load_space(space_with(tmp_path, {"overall_score": "max", "params": "min"}))
    assert space.objectives == {"overall_score": "max", "params": "min"}


def test_bad_space_file_objectives_name_the_file(tmp_path):
    path = space_with(tmp_path, {"overall_score": "max", "size": "min"})
    with pytest.raises(UserError, match=r"space.yaml: objectives: unknown objective 'size'"):
        load_space(path)


# ---------------------------------------------------------------------------- the searcher
def test_multi_objective_searcher_tells_stopped_trials_as_pruned(tmp_path):
    """Multi-objective: no intermediate values (Optuna rejects them), complete trials told with
    every objective, a trial stopped before overall_score PRUNED, an errored one FAIL. Single
    objective: probe_score as intermediate values, stopped = PRUNED (unchanged)."""
    import optuna
    from optuna.trial import TrialState

    from raydistill.search.searcher import ProbeAwareOptunaSearch

    space = load_space(SPACE)
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'optuna.db'}")

    def searcher(metric, mode, name):
        return ProbeAwareOptunaSearch(space=space.sample_for_ray, metric=metric, mode=mode,
                                      intermediate_metric="probe_score", study_name=name, storage=storage,
                                      sampler=optuna.samplers.TPESampler(seed=0, n_startup_trials=2))

    multi = searcher(["overall_score", "params"], ["max", "min"], "multi")
    for i in range(4):
        assert multi.suggest(f"t{i}")
    rung = {"probe_score": 20.0, "params": 1000, "macs_per_second": 5e6, "training_iteration": 1}
    multi.on_trial_result("t0", rung)
    multi.on_trial_complete("t0", {**rung, "overall_score": 30.0, "training_iteration": 2})
    multi.on_trial_result("t1", rung)
    multi.on_trial_complete("t1", rung)  # stopped by ASHA: no overall_score
    multi.on_trial_complete("t2", None, error=True)
    multi.on_trial_complete("t3", {**rung, "overall_score": float("nan")})
    trials = optuna.load_study(study_name="multi", storage=storage).get_trials(deepcopy=False)
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.FAIL]
    assert trials[0].values == [30.0, 1000.0] and not trials[1].intermediate_values
    assert multi.suggest("t4")  # the sampler works on that history (TPE, multi-objective)

    single = searcher("overall_score", "max", "single")
    single.suggest("s0")
    single.on_trial_result("s0", rung)
    single.on_trial_complete("s0", rung)
    (trial,) = optuna.load_study(study_name="single", storage=storage).get_trials(deepcopy=False)
    assert trial.state == TrialState.PRUNED and trial.intermediate_values == {1: 20.0}


# ---------------------------------------------------------------------------- pareto_front
def brute_force(points, modes):
    def better_or_equal(a, b):
        return all((x >= y) if m == "max" else (x <= y) for x, y, m in zip(a, b, modes))

    return [i for i, p in enumerate(points)
            if not any(better_or_equal(q, p) and q != p for j, q in enumerate(points) if j != i)]


def test_pareto_front_small_cases():
    points = [(30, 100), (30, 100), (40, 200), (20, 50), (25, 200), (40, 300)]
    # duplicates both kept; (25, 200) beaten by (30, 100); (40, 300) beaten by (40, 200)
    assert pareto_front(points, ["max", "min"]) == [0, 1, 2, 3]
    assert pareto_front(points, ["max", "max"]) == [5]
    assert pareto_front([(1.0,), (3.0,), (3.0,)], ["max"]) == [1, 2]  # single objective: the ties of the best
    assert pareto_front([], ["max"]) == []
    with pytest.raises(ValueError):
        pareto_front([(1, 2)], ["max", "smallest"])
    with pytest.raises(ValueError):
        pareto_front([(1, float("nan"))], ["max", "min"])
    with pytest.raises(ValueError):
        pareto_front([(1, 2, 3)], ["max", "min"])


@pytest.mark.parametrize("modes", [m for k in (1, 2, 3) for m in itertools.product(("max", "min"), repeat=k)])
def test_pareto_front_matches_brute_force_with_ties(modes):
    rng = random.Random(hash(modes) % 1000)
    for _ in range(30):
        n = rng.randint(1, 25)
        # few distinct values: many ties in single coordinates and many duplicate points
        points = [tuple(float(rng.randint(0, 3)) for _ in modes) for _ in range(n)]
        assert pareto_front(points, modes) == brute_force(points, list(modes)), points


# ---------------------------------------------------------------------------- export --pareto
def fill_store(root: Path) -> str:
    """Two searches in one MLflow experiment, logged through SearchTracker as a search does."""
    from raydistill.tracking.mlflow import SearchTracker

    uri = f"sqlite:///{root / 'mlflow.db'}"
    config = load_space(SPACE).config({})
    trials = {  # name: (overall_score, params, macs_per_second, status)
        "big-good": (40.0, 900_000, 9e8, "completed"),
        "mid": (35.0, 400_000, 5e8, "completed"),
        "mid-twin": (35.0, 400_000, 5e8, "completed"),   # a duplicate point: both on the front
        "mid-worse": (34.0, 450_000, 4e8, "stopped"),    # beaten on params by mid, not on MACs
        "small": (20.0, 100_000, 2e8, "stopped"),        # stopped by ASHA, scored afterwards
        "dominated": (19.0, 500_000, 6e8, "completed"),
        "broken": (50.0, 50_000, 1e8, "error"),          # failed (scores anyway): never a candidate
    }
    for search, objectives in (("s-multi", "overall_score:max,params:min"), ("s-single", "overall_score:max")):
        tracker = SearchTracker(uri, "exp", search, artifact_root=root / "mlartifacts")
        tracker.start_search(search, {"space": str(SPACE), "method": "dicehubert", "corpus_spec": "embedded",
                                      "teacher": "embedded", "smoke": True, "objectives": objectives})
        for i, (name, (score, params, macs, status)) in enumerate(trials.items()):
            if search == "s-single" and i > 1:
                break
            run_id, created = tracker.trial_run(f"{search}-{i}", f"{search}-{name}", {"optim.lr": 1e-3},
                                                config.to_dict())
            assert created
            step_metrics = {"loss": 3.0, "probe_score": score - 5, "params": params, "macs_per_second": macs}
            tracker.log_metrics(run_id, step_metrics, step=4)
            tracker.log_metrics(run_id, {"overall_score": score, "pr_per": 60.0, "sid_acc": 2 * score - 40}, step=8)
            tracker.finish_trial(run_id, status)
        tracker.end_search({"best_overall_score": 40.0})
    return uri


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return fill_store(tmp_path_factory.mktemp("mlflow"))


def export_cli(*args) -> int:
    from raydistill.cli import main

    return main(["export", *args])


def test_export_pareto_writes_the_front_of_the_search(store, tmp_path, capsys):
    from raydistill.config import TrainConfig
    from raydistill.commands.train import read_config_file

    out = tmp_path / "exported"
    assert export_cli("--mlflow-uri", store, "--experiment", "exp", "--search", "s-multi", "--pareto",
                      "--out", str(out)) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["pareto"] == 4 and summary["objectives"] == "overall_score:max,params:min"
    doc = json.loads((out / "pareto.json").read_text())
    assert doc["objectives"] == {"overall_score": "max", "params": "min"} and doc["candidates"] == 6  # not the failed one
    names = [t["run_name"] for t in doc["trials"]]
    assert names == ["s-multi-big-good", "s-multi-mid", "s-multi-mid-twin", "s-multi-small"] or \
        names == ["s-multi-big-good", "s-multi-mid-twin", "s-multi-mid", "s-multi-small"]  # best overall_score first
    assert [t["config"] for t in doc["trials"]][0] == "pareto/01-s-multi-big-good.yaml"
    small = next(t for t in doc["trials"] if t["run_name"] == "s-multi-small")
    assert small["values"] == {"overall_score": 20.0, "params": 100000.0}
    for trial in doc["trials"]:
        config = read_config_file(out / trial["config"])  # what `raydistill train --config` reads
        TrainConfig.from_dict(config["train"], where=trial["config"])
        assert config["source"]["run_id"] == trial["run_id"]
        assert config["scores"]["params"] == trial["values"]["params"]
    assert sorted(p.name for p in (out / "pareto").iterdir()) == sorted(Path(t["config"]).name for t in doc["trials"])
    assert (out / "best.yaml").is_file() and (out / "leaderboard.json").is_file()  # top-K still written


def test_export_pareto_with_other_objectives(store, tmp_path, capsys):
    out = tmp_path / "macs"
    assert export_cli("--mlflow-uri", store, "--experiment", "exp", "--search", "s-multi", "--pareto",
                      "--objectives", "overall_score:max,macs_per_second:min", "--out", str(out)) == 0
    names = {t["run_name"] for t in json.loads((out / "pareto.json").read_text())["trials"]}
    # by MACs, mid-worse (4e8) is no longer beaten by mid (5e8)
    assert names == {"s-multi-big-good", "s-multi-mid", "s-multi-mid-twin", "s-multi-mid-worse", "s-multi-small"}
    out = tmp_path / "single"
    assert export_cli("--mlflow-uri", store, "--experiment", "exp", "--search", "s-single", "--pareto",
                      "--out", str(out)) == 0  # a single-objective search: its best trial
    doc = json.loads((out / "pareto.json").read_text())
    assert doc["objectives"] == {"overall_score": "max"} and [t["run_name"] for t in doc["trials"]] == ["s-single-big-good"]


def test_export_pareto_refuses_mixed_objectives_and_bad_flags(store, tmp_path, capsys, error_lines):
    assert export_cli("--mlflow-uri", store, "--experiment", "exp", "--pareto", "--out", str(tmp_path / "a")) == 2
    err = error_lines()
    assert len(err) == 1 and "different objectives" in err[0] and "pass --search or --objectives" in err[0]
    assert not (tmp_path / "a").exists()
    assert export_cli("--mlflow-uri", store, "--experiment", "exp", "--pareto", "--objectives",
                      "overall_score:max,params:min", "--out", str(tmp_path / "b")) == 0  # both searches compared
    capsys.readouterr()
    assert export_cli("--mlflow-uri", store, "--experiment", "exp", "--objectives", "overall_score:max",
                      "--out", str(tmp_path / "c")) == 2
    assert "pass --pareto with it" in capsys.readouterr().err


def test_stopped_trials_are_scored_once_and_from_their_last_rung_when_the_final_suite_is_the_probe(tmp_path):
    """ASHA stops a trial before its end-of-run evaluation. With ``--final-suite probe`` its last
    rung already ran that evaluation on its last checkpoint: its score is that rung's (no second
    evaluation). A trial scored before the search was resumed is not scored again."""
    from types import SimpleNamespace

    from raydistill.search.posteval import evaluate_stopped_trials
    from raydistill.search.setup import TrialSetup
    from raydistill.tracking.mlflow import SearchTracker

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = SearchTracker(uri, "exp", "s", artifact_root=tmp_path / "art")
    tracker.start_search("s", {"space": str(SPACE)})
    setup = TrialSetup(search_id="s", corpus_dir="", targets_dir="", teacher={}, eval_seed=0, workers=1,
                       budgets={"probe": "probe", "full": "probe"}, cpus_per_worker=1, gpus_per_worker=0,
                       storage_path="", max_failures=0)
    rung = {"probe_pr_per": 70.0, "probe_sid_acc": 30.0, "probe_score": 30.0, "step": 25,
            "checkpoint_path": str(tmp_path / "ckpt")}
    results = [SimpleNamespace(error=None, metrics={"trial_id": f"t{i}", **rung}) for i in range(2)]
    done, _ = tracker.trial_run("t1", "t1", {}, {})
    tracker.log_metrics(done, {"overall_score": 12.0}, step=25)  # scored before a resume
    assert evaluate_stopped_trials(tracker, results, setup) == 0  # nothing left for Ray to evaluate
    first = tracker.client.get_run(tracker.trial_run("t0")[0]).data
    assert first.metrics["overall_score"] == 30.0 and first.metrics["pr_per"] == 70.0
    assert first.tags["raydistill.evaluated"] == "last_rung"
    assert tracker.client.get_run(done).data.metrics["overall_score"] == 12.0
