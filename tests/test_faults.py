"""Scale and faults: the DDP loss normalisation, a trial on two Ray Train workers, and a diverging
trial that is recorded in MLflow while the search goes on."""

import math
import os
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import yaml

from raydistill.cli import main

REPO = Path(__file__).resolve().parents[1]


def _rank_mean(rank: int, world: int, port: int, out):
    from raydistill.methods.base import StepContext

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        ctx = StepContext.__new__(StepContext)
        ctx.world = world
        total = torch.tensor([3.0, 10.0][rank])  # rank 0: 3 over 2 frames; rank 1: 10 over 8 frames
        count = [2, 8][rank]
        out.put((rank, float(ctx.mean(total, count))))
    finally:
        dist.destroy_process_group()


def test_ddp_means_average_to_the_global_mean():
    """Each rank scales its sum by world / global count; DDP's gradient averaging over ranks then
    gives the global per-frame mean, not the mean of per-rank means."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_rank_mean, args=(r, 2, port, out)) for r in range(2)]
    for p in procs:
        p.start()
    values = dict(out.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert sum(values.values()) / 2 == pytest.approx((3.0 + 10.0) / (2 + 8))  # not (3/2 + 10/8) / 2


def trial_runs(workdir, experiment):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], max_results=100)
    return {r.data.tags.get("raydistill.kind"): [x for x in runs if x.data.tags.get("raydistill.kind") ==
                                                  r.data.tags.get("raydistill.kind")] for r in runs}


@pytest.mark.slow
def test_a_diverging_trial_is_recorded_and_the_search_goes_on(ray_cluster, tmp_path, capsys, error_lines, smoke_workdir):
    for name in ("dice", "distil"):  # each method's own base, no knobs
        space = yaml.safe_load((REPO / "search_spaces" / f"{name}.yaml").read_text())
        space["params"] = {}
        if name == "distil":
            space["base"]["optim"]["lr"] = 1.0e30  # explodes at once
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(space))
    path = tmp_path / "diverge.yaml"
    path.write_text(yaml.safe_dump({"compose": ["dice.yaml", "distil.yaml"]}))
    workdir = smoke_workdir(tmp_path / "runs")  # the smoke corpus and teacher built once a session
    code = main(["search", "--space", str(path), "--smoke", "--trials", "2", "--workdir", str(workdir),
                 "--experiment", "faults", "--name", "diverge", "--confirm", "0"])
    assert code == 0
    trials = {t.data.params["method"]: t for t in trial_runs(workdir, "faults")["trial"]}
    assert set(trials) == {"dicehubert", "distilhubert"}  # one run each, none duplicated
    diverged = trials["distilhubert"]
    assert diverged.data.tags["raydistill.status"] == "diverged"
    assert "loss became" in diverged.data.tags["raydistill.error"]
    assert diverged.info.status == "FAILED"
    healthy = trials["dicehubert"]
    assert healthy.data.tags["raydistill.status"] in ("completed", "stopped")
    assert math.isfinite(healthy.data.metrics["overall_score"])
    assert "failed       1 trial(s); distilhubert" in capsys.readouterr().out  # the summary says so

    # A search whose every trial fails says so in one line and exits 1 (what `ray job submit` shows),
    # not 0 with "best trial -: n/a". Same workdir: corpus, teacher and references are cached.
    error_lines()
    code = main(["search", "--space", str(tmp_path / "distil.yaml"), "--smoke", "--trials", "1", "--workdir",
                 str(workdir), "--experiment", "faults", "--name", "all-fail", "--confirm", "0"])
    assert code == 1
    line = error_lines()[-1]  # after what Tune printed of the trial's failure
    assert line.startswith("raydistill: error: search all-fail: all 1 trial(s) failed; distilhubert") and \
        "loss became" in line, line
    runs = {r.info.run_name: r for r in trial_runs(workdir, "faults")["search"]}
    assert runs["all-fail"].info.status == "FAILED"


@pytest.mark.slow
def test_a_trial_on_two_ddp_workers(ray_cluster, tmp_path, capsys):
    space = yaml.safe_load((REPO / "search_spaces" / "dice.yaml").read_text())
    train = {**space["base"], **space["smoke"], "method": "dicehubert"}
    train["optim"] = {**space["base"]["optim"], **space["smoke"]["optim"]}
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"train": train, "smoke": True}))
    capsys.readouterr()
    code = main(["train", "--config", str(config), "--workdir", str(tmp_path / "runs"), "--experiment", "ddp",
                 "--workers", "2", "--cpus-per-worker", "1"])
    assert code == 0
    import json

    summary = json.loads(capsys.readouterr().out)
    assert 0 < summary["overall_score"] <= 100 and summary["world_size"] == 2


def test_runs_a_killed_driver_left_running_are_closed_as_lost(tmp_path):
    """After a resumed search's tuner returns, a trial run still RUNNING (its trial was never
    saved by Tune) is closed as lost; finished runs, and other searches' runs, are untouched."""
    from raydistill.tracking.mlflow import SearchTracker

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    other = SearchTracker(uri, "exp", "other", artifact_root=tmp_path / "art")
    other.start_search("other", {})
    elsewhere, _ = other.trial_run("o-1", "o-1")  # another search's live trial
    tracker = SearchTracker(uri, "exp", "s", artifact_root=tmp_path / "art")
    tracker.start_search("s", {})
    done, _ = tracker.trial_run("t-1", "t-1")
    tracker.finish_trial(done, "completed")
    orphan, _ = tracker.trial_run("t-2", "t-2")  # its driver was killed
    assert tracker.close_lost_trials() == 1
    get = tracker.client.get_run
    assert get(orphan).info.status == "KILLED" and get(orphan).data.tags["raydistill.status"] == "lost"
    assert get(done).info.status == "FINISHED" and get(done).data.tags["raydistill.status"] == "completed"
    assert get(elsewhere).info.status == "RUNNING"
    assert tracker.close_lost_trials() == 0


class _Grid(list):
    """The three things `interrupted` reads of a Tune ResultGrid: its length and two counts."""

    def __init__(self, statuses):
        super().__init__(statuses)
        self.num_terminated = statuses.count("TERMINATED")
        self.num_errors = statuses.count("ERROR")


@pytest.mark.parametrize("statuses, asked, expected", [
    (["TERMINATED", "ERROR", "TERMINATED"], 3, False),  # ran to the end, one trial failed
    (["TERMINATED", "RUNNING", "PENDING"], 3, True),  # Ctrl-C during a trial
    (["TERMINATED"], 3, True),  # Ctrl-C between a trial's end and the next one's start
])
def test_a_tune_run_cut_short_counts_as_interrupted(statuses, asked, expected):
    from raydistill.commands.search import interrupted

    assert interrupted(_Grid(statuses), asked) is expected
