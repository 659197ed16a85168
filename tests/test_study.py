"""`raydistill study`: plan validation, verdicts and the table (fast), and a real smoke study
(Ray Train cells, MLflow runs, rerun trains only what is missing) (slow)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from raydistill.cli import main
from raydistill.errors import UserError
from raydistill.pareto import score_cost_front as pareto_front
from raydistill.report.study_table import StudyTable, arm_stats, judge
from raydistill.commands.study import Comparison, load_plan

REPO = Path(__file__).resolve().parents[1]
SPACES = REPO / "search_spaces"


def write_plan(tmp_path: Path, **changes) -> Path:
    plan = {
        "name": "mini",
        "seeds": [0, 1],
        "budget": {"optim": {"max_steps": 4, "batch_seconds": 8}, "eval_every": 4},
        "arms": {
            "hard": {"space": str(SPACES / "dice.yaml"), "set": {"nomask_weight": 1.0}},
            "ssl": {"space": str(SPACES / "dice.yaml"),
                    "set": {"method": "hubert-pretrain", "nomask_weight": 1.0, "targets.teacher_layer": 0,
                            "targets.num_clusters": 20}},
        },
        "comparisons": [{"id": "1", "title": "distilled vs ssl", "claim": "distilling wins", "arms": ["hard", "ssl"],
                         "task": "pr_per"}],
    }
    plan.update(changes)
    path = tmp_path / "plan.yaml"
    path.write_text(yaml.safe_dump(plan))
    return path


def test_the_papers_plan_is_valid_and_its_arms_share_one_budget():
    plan = load_plan(REPO / "studies" / "papers.yaml")
    assert plan.seeds == (0, 1, 2) and len(plan.comparisons) == 11
    steps = {arm.config["optim"]["max_steps"] for arm in plan.arms.values()}
    batches = {arm.config["optim"]["batch_seconds"] for arm in plan.arms.values()}
    assert steps == {300} and batches == {24}
    assert plan.arms["ssl-mfcc"].config["method"] == "hubert-pretrain"
    assert plan.arms["dice-shallow"].config["student"]["num_layers"] == 1
    assert {a.name for a in plan.arms_of(plan.selected("cpu"))} == set(plan.arms)
    smoke = load_plan(REPO / "studies" / "papers.yaml", smoke=True)
    assert smoke.seeds == (0, 1) and {a.config["optim"]["max_steps"] for a in smoke.arms.values()} == {6}


def test_the_base_scale_plan_builds_every_arm_for_a_hubert_base_teacher():
    """studies/papers-base.yaml, the GPU user's study: the same comparisons over the base-scale
    spaces; every arm's student builds for HuBERT-base (sizes as `--dry-run` prints them)."""
    from raydistill.methods import describe
    from raydistill.presets import TEACHERS

    base, cpu = load_plan(REPO / "studies" / "papers-base.yaml"), load_plan(REPO / "studies" / "papers.yaml")
    assert [c.id for c in base.comparisons] == [c.id for c in cpu.comparisons] and set(base.arms) == set(cpu.arms)
    assert base.tasks == ("pr", "sid", "asr", "asv")
    sizes = {name: describe(arm.train_config(0), TEACHERS["hubert-base"]) for name, arm in base.arms.items()}
    assert round(sizes["dice-narrow"]["params"] / 1e6, 2) == 26.87  # DiceHuBERT's narrow student
    assert sizes["arm-reuse"]["macs_per_second"] < sizes["arm-masking"]["macs_per_second"]
    assert sizes["arm-reuse-ffn"]["params"] > sizes["arm-reuse"]["params"]


def test_an_arm_can_be_a_searched_winner_at_the_plans_budget(tmp_path):
    """Comparison 8 with each method's best searched configuration: an arm names an exported
    best.yaml; the plan's budget and the arm's `set` go over the winner's own configuration."""
    from raydistill.search.space import load_space

    winner = load_space(SPACES / "dice.yaml").base_config().to_dict()
    winner["student"]["embed_dim"], winner["optim"]["max_steps"], winner["optim"]["lr"] = 64, 900, 1.5e-3
    (tmp_path / "best.yaml").write_text(yaml.safe_dump({"train": winner, "ranked_by": "confirmed_overall_score"}))
    arms = {"hard": {"space": str(SPACES / "dice.yaml")},
            "won": {"config": "best.yaml", "set": {"nomask_weight": 0.5}, "about": "dice's searched winner"}}
    plan = load_plan(write_plan(tmp_path, arms=arms, comparisons=[{"arms": ["hard", "won"]}]))
    won = plan.arms["won"]
    assert won.config["student"]["embed_dim"] == 64 and won.config["optim"]["lr"] == 1.5e-3  # the winner's
    assert won.config["optim"]["max_steps"] == plan.arms["hard"].config["optim"]["max_steps"] == 4  # the plan's
    assert won.config["nomask_weight"] == 0.5 and won.space == "best.yaml"
    with pytest.raises(UserError, match="or {config"):
        load_plan(write_plan(tmp_path, arms={**arms, "both": {"space": str(SPACES / "dice.yaml"), "config": "best.yaml"}}))
    (tmp_path / "odd.yaml").write_text(yaml.safe_dump({"train": winner, "surprise": 1}))
    with pytest.raises(UserError, match="unknown key"):
        load_plan(write_plan(tmp_path, arms={**arms, "odd": {"config": "odd.yaml"}}))
    with pytest.raises(UserError, match="config file gone.yaml not found"):
        load_plan(write_plan(tmp_path, arms={**arms, "gone": {"config": "gone.yaml"}}))


@pytest.mark.parametrize("change, message", [
    ({"seeds": [0, 0]}, "distinct"),
    ({"arms": {"a": {"space": "nowhere.yaml"}}}, "not found"),
    ({"arms": {"a": {"space": str(SPACES / "dice.yaml"), "set": {"optim.lr": -1}}}}, "arm a"),
    ({"comparisons": [{"arms": ["hard", "missing"]}]}, "unknown arm"),
    ({"comparisons": [{"arms": ["hard", "ssl"], "metric": "bleu"}]}, "unknown metric"),
    ({"comparisons": [{"arms": ["hard", "ssl"], "kind": "maybe"}]}, "kind must be"),
    ({"surprise": 1}, "unknown key"),
])
def test_a_bad_plan_is_one_clear_error(tmp_path, change, message):
    with pytest.raises(UserError, match=message):
        load_plan(write_plan(tmp_path, **change))


def test_the_plan_runs_its_cells_on_the_resources_its_spaces_ask_for(tmp_path, capsys, monkeypatch):
    """The base-scale plan's spaces ask for a GPU and 8 CPUs per trial (their smoke sections for
    one CPU): a study's cells get them unless a flag says otherwise, as a search's trials do."""
    base = REPO / "studies" / "papers-base.yaml"
    assert load_plan(base).resources == {"workers": 1, "cpus_per_worker": 8.0, "gpus_per_worker": 1.0}
    assert load_plan(base, smoke=True).resources == {"workers": 1, "cpus_per_worker": 1.0, "gpus_per_worker": 0.0}
    workdir = tmp_path / "runs"
    monkeypatch.setattr("os.cpu_count", lambda: 2)  # a local cluster of 2 cores cannot hold one cell
    assert main(["study", "--plan", str(base), "--workdir", str(workdir)]) == 2
    assert "--cpus-per-worker 8 needs more CPUs than this machine has" in capsys.readouterr().err
    assert not workdir.exists()


def test_a_bad_plan_exits_2_without_writing(tmp_path, capsys):
    workdir = tmp_path / "runs"
    assert main(["study", "--plan", str(write_plan(tmp_path, seeds=[])), "--workdir", str(workdir)]) == 2
    assert "seeds must be" in capsys.readouterr().err and not workdir.exists()
    assert main(["study", "--plan", str(write_plan(tmp_path)), "--only", "9", "--workdir", str(workdir)]) == 2
    assert not workdir.exists()


def rows(arm: str, values: list[float], **other) -> list[dict]:
    return [{"arm": arm, "seed": i, "overall_score": v, "pr_per": 100 - v, "macs_per_second": other.get("macs", 1e6)}
            for i, v in enumerate(values)]


@pytest.mark.parametrize("a, b, kind, verdict", [
    ([40, 41, 42], [30, 31, 32], "better", "agrees"),
    ([30, 31, 32], [40, 41, 42], "better", "disagrees"),
    ([40, 41, 42], [39, 41, 43], "better", "inconclusive"),  # gap 0 inside the spread
    ([40, 41, 42], [39, 41, 43], "no_worse", "agrees"),
    ([30, 31, 32], [40, 41, 42], "no_worse", "disagrees"),
])
def test_verdicts_against_the_spread(a, b, kind, verdict):
    stats = arm_stats(rows("a", a) + rows("b", b))
    assert stats["a"]["spread"]["overall_score"] == 2.0
    result = judge(Comparison("x", "", "", kind, ("a", "b")), stats)
    assert result["verdict"] == verdict


def test_error_rates_are_judged_lower_is_better_and_one_seed_is_pending():
    stats = arm_stats(rows("a", [40, 41]) + rows("b", [30, 31]))
    assert judge(Comparison("x", "", "", "better", ("a", "b"), metric="pr_per"), stats)["verdict"] == "agrees"
    one = arm_stats(rows("a", [40]) + rows("b", [30, 31]))
    assert judge(Comparison("x", "", "", "better", ("a", "b")), one)["verdict"] == "pending"


def test_tradeoff_needs_the_saving_and_little_loss():
    stats = arm_stats(rows("reuse", [40, 41], macs=0.6e6) + rows("base", [40.5, 41.5], macs=1e6))
    result = judge(Comparison("6", "", "", "tradeoff", ("reuse", "base"), min_saved=0.3), stats)
    assert result["verdict"] == "agrees" and result["saved"] == pytest.approx(0.4)
    small = arm_stats(rows("reuse", [40, 41], macs=0.95e6) + rows("base", [40.5, 41.5], macs=1e6))
    assert judge(Comparison("6", "", "", "tradeoff", ("reuse", "base"), min_saved=0.3),
                 small)["verdict"].startswith("disagrees (saves 5 %")


def test_pareto_front_of_score_against_macs():
    assert pareto_front({"a": (40, 2e6), "b": (35, 1e6), "c": (34, 1.5e6), "d": (41, 3e6)}) == ["b", "a", "d"]


def test_the_table_names_claim_verdict_gap_and_references(tmp_path):
    plan = load_plan(write_plan(tmp_path))
    table = StudyTable.build(plan, plan.comparisons, rows("hard", [40, 41]) + rows("ssl", [30, 31]),
                             {"teacher": {"overall_score": 47.8}})
    text = table.markdown()
    assert "| 1. distilled vs ssl | hard | 2 | 40.5 ± 1.0 | PER 59.5 ± 1.0 |" in text
    assert "distilling wins | agrees (gap +10.0, spread 1.0) |" in text
    assert "teacher 47.8" in text
    table.write(tmp_path / "out")
    assert json.loads((tmp_path / "out" / "study.json").read_text())["comparisons"][0]["verdict"] == "agrees"
    assert (tmp_path / "out" / "arms.png").stat().st_size > 0


@pytest.mark.slow
def test_a_smoke_study_end_to_end_then_a_rerun_trains_only_what_changed(tmp_path, ray_cluster, capsys, smoke_workdir):
    """Two arms (distilled, self-supervised on MFCC units) x 2 seeds on the smoke corpus: one
    MLflow run per cell under the study run, the table with a verdict; rerunning trains nothing;
    editing one arm retrains only its cells."""
    from mlflow.tracking import MlflowClient

    workdir = smoke_workdir(tmp_path / "runs")  # the smoke corpus and teacher built once a session
    plan = write_plan(tmp_path)
    args = ["study", "--plan", str(plan), "--smoke", "--workdir", str(workdir), "--out", str(tmp_path / "table")]
    assert main(args) == 0
    out = json.loads(capsys.readouterr().out.split("\n{", 1)[1].join(["{", ""]))
    assert out["trained"] == 4 and out["verdicts"]["1"] in ("agrees", "disagrees", "inconclusive")
    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    exp = client.get_experiment_by_name("raydistill-study").experiment_id
    cells = client.search_runs([exp], "tags.`raydistill.kind` = 'trial'")
    assert sorted(r.info.run_name for r in cells) == ["hard-s0", "hard-s1", "ssl-s0", "ssl-s1"]
    assert all(r.data.tags["raydistill.status"] == "completed" and r.data.params["arm"] in ("hard", "ssl")
               and r.data.tags["mlflow.parentRunId"] for r in cells)
    assert {json.loads(r.data.tags["raydistill.config"])["seed"] for r in cells} == {0, 1}
    assert (tmp_path / "table" / "table.md").read_text().count("distilled vs ssl") == 1
    study_run = client.get_run(cells[0].data.tags["mlflow.parentRunId"])
    assert study_run.data.tags["raydistill.study"] == "mini"
    assert {"study/table.md", "study/study.json"} <= {f.path for f in client.list_artifacts(study_run.info.run_id, "study")}

    # rerun: nothing to train; the table comes from MLflow
    assert main(args[:-2]) == 0
    assert '"trained": 0' in capsys.readouterr().out
    # one arm edited: only its two cells are trained again, the other arm's are kept
    edited = yaml.safe_load(plan.read_text())
    edited["arms"]["hard"]["set"]["optim.lr"] = 1.0e-3
    plan.write_text(yaml.safe_dump(edited))
    assert main(args[:-2] + ["--dry-run"]) == 0
    assert json.loads(capsys.readouterr().out)["cells_to_train"] == 2
    assert main(["study", "--plan", str(plan), "--smoke", "--workdir", str(workdir), "--table"]) == 0
    assert "| 1. distilled vs ssl | hard | 0 |" in capsys.readouterr().out
