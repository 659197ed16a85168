"""Search-level benchmarks, from real searches and their MLflow records.

``overhead``: how much of a finished search's time went to the trials' training loops
(steps + evaluations) rather than to Ray, MLflow and start-up. For the trial phase,
``overhead = 1 − Σ loop seconds / (tune seconds × slots)`` where ``slots`` is the number of
trials run at once; the whole search adds the preparation (corpus, teacher, targets, cached
references) and the post-evaluation of ASHA-stopped trials and the random-init reference.
Read from MLflow, so it can measure any search (default: the newest in the workdir).

``teacher-share``: the same small search twice, identical but for ``teacher_features``:
``cached`` (the teacher's layer features computed once per search, memory-mapped by every
trial) vs ``live`` (every trial runs the teacher on each batch). Reports the wall-time and
loop-time ratios beside the ideal ratio 1 / (1 − teacher share of a step's FLOPs), and the
scores of the trials that had the same configuration in both searches.

    .venv/bin/python bench/search.py overhead [--search ID]
    .venv/bin/python bench/search.py teacher-share [--trials 4]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import sys
import tempfile
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import emit  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def client_for(workdir: Path, uri: str | None):
    from mlflow.tracking import MlflowClient

    return MlflowClient(uri or f"sqlite:///{Path(workdir).resolve() / 'mlflow.db'}")


def search_runs(client, experiment: str, search_id: str | None):
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        raise SystemExit(f"bench: no MLflow experiment {experiment!r}")
    query = "tags.`raydistill.kind` = 'search'" + (f" and tags.`raydistill.search_id` = '{search_id}'" if search_id else "")
    parents = client.search_runs([exp.experiment_id], filter_string=query, order_by=["attributes.start_time DESC"],
                                 max_results=1)
    if not parents:
        raise SystemExit(f"bench: no search {search_id or ''} in experiment {experiment!r}")
    parent = parents[0]
    sid = parent.data.tags["raydistill.search_id"]
    trials = client.search_runs([exp.experiment_id], max_results=10_000, filter_string=(
        f"tags.`raydistill.kind` = 'trial' and tags.`raydistill.search_id` = '{sid}'"))
    return parent, trials


def step_seconds(client, run) -> float:
    """Seconds the trial's training loop spent in its steps (``train_seconds`` accumulates)."""
    return max((m.value for m in client.get_metric_history(run.info.run_id, "train_seconds")), default=0.0)


def loop_seconds(client, run) -> tuple[float, float]:
    """(seconds the trial spent inside its training loop: steps plus evaluations, seconds of
    its post-evaluation): an ASHA-stopped trial's full evaluation from its last checkpoint
    comes after the trial phase and is its last ``eval_seconds`` entry."""
    steps = step_seconds(client, run)
    evals = sorted(client.get_metric_history(run.info.run_id, "eval_seconds"), key=lambda m: m.timestamp)
    post = evals.pop().value if evals and run.data.tags.get("raydistill.evaluated") == "from_last_checkpoint" else 0.0
    return steps + sum(m.value for m in evals), post


def overhead(client, experiment: str, search_id: str | None, slots: int | None = None) -> dict:
    parent, trials = search_runs(client, experiment, search_id)
    m = parent.data.metrics
    if "wall_seconds" not in m:
        raise SystemExit(f"bench: search {parent.data.tags['raydistill.search_id']} has not finished")
    workers = int(parent.data.params.get("workers", 1))
    slots = slots or max(1, 2 // workers)  # this machine: 2 cores, 1 CPU per worker
    loops = [loop_seconds(client, r) for r in trials]
    post = m["wall_seconds"] - m["prep_seconds"] - m["tune_seconds"]
    in_tune = sum(loop for loop, _ in loops)
    return {
        "bench": "search_overhead", "search_id": parent.data.tags["raydistill.search_id"], "trials": len(trials),
        "slots": slots, "wall_seconds": round(m["wall_seconds"], 1), "prep_seconds": round(m["prep_seconds"], 1),
        "tune_seconds": round(m["tune_seconds"], 1), "post_seconds": round(post, 1),
        "loop_seconds_sum": round(in_tune, 1),
        "post_evaluation_seconds_sum": round(sum(p for _, p in loops), 1),
        "trial_mean_loop_seconds": round(in_tune / max(1, len(trials)), 1),
        # a trial's MLflow run spans its Tune start to its end (the post-evaluation comes after):
        # what is not loop is start-up, reporting and tear-down
        "trial_mean_outside_loop_seconds": round(sum(
            (r.info.end_time - r.info.start_time) / 1000 - loop
            for r, (loop, _) in zip(trials, loops) if r.info.end_time) / max(1, len(trials)), 1),
        # share of the trial phase's slot-seconds not spent in a training loop
        "overhead_tune_phase": round(1 - in_tune / (m["tune_seconds"] * slots), 4),
        "goal_overhead": 0.10,
        # peak resident memory of a trial's Train worker (logged with every report)
        "trial_peak_host_mb_max": max((r.data.metrics["peak_host_mb"] for r in trials
                                       if "peak_host_mb" in r.data.metrics), default=None),
        "trial_peak_gpu_mb_max": max((r.data.metrics["peak_gpu_mb"] for r in trials
                                      if "peak_gpu_mb" in r.data.metrics), default=None),
    }


def teacher_flop_share(space: dict, workdir: Path) -> float:
    """Teacher forward / (teacher forward + student forward and backward) per audio-second."""
    from raydistill.config import TrainConfig
    from raydistill.methods import get_method
    from raydistill.models.macs import macs_per_second
    from raydistill.prepare import Workdir, resolve_corpus, resolve_teacher

    wd = Workdir(workdir)
    teacher = resolve_teacher("embedded", wd, resolve_corpus(None, wd))
    config = TrainConfig.from_dict(space["base"], where="bench")
    student = get_method(config.method).build(config, teacher.info).model
    t, s = macs_per_second(teacher.model), macs_per_second(student)
    return t / (t + 3 * s)


def teacher_share(args) -> None:
    from raydistill.commands.search import SearchOptions, run_search

    raw = yaml.safe_load(Path(args.space).read_text())
    # one knob that does not change a step's cost, so every trial costs the same in both searches
    raw["params"] = {"optim.lr": raw["params"]["optim.lr"]}
    raw["base"].setdefault("distil", {})["init_from_teacher"] = False  # cached mode then loads no teacher
    stamp = f"{dt.datetime.now():%Y%m%d-%H%M%S}"
    records = {}
    for mode in ("cached", "live"):
        space = {**raw, "base": {**raw["base"], "teacher_features": mode}}
        evals = space["base"]["optim"]["max_steps"] // space["base"]["eval_every"]
        with tempfile.TemporaryDirectory(prefix="raydistill-bench-") as tmp:
            path = Path(tmp) / f"teacher-{mode}.yaml"
            path.write_text(yaml.safe_dump(space))
            with contextlib.redirect_stdout(sys.stderr):  # Tune's progress tables: stdout keeps the JSON line
                summary = run_search(SearchOptions(
                    space=path, trials=args.trials, workdir=args.workdir, experiment=args.experiment,
                    name=f"bench-teacher-{mode}-{stamp}", grace_period=evals, final_suite=args.final_suite, seed=0))
        client = client_for(args.workdir, None)
        parent, trials = search_runs(client, args.experiment, summary["search_id"])
        records[mode] = {
            "wall": summary["wall_seconds"], "tune": summary["tune_seconds"],
            "train": sum(step_seconds(client, r) for r in trials),
            "scores": {round(float(r.data.params["optim.lr"]), 8): r.data.metrics.get("overall_score")
                       for r in trials},
        }
    share = teacher_flop_share(raw, args.workdir)
    ideal = 1 / (1 - share)
    c, live = records["cached"], records["live"]
    same = sorted(set(c["scores"]) & set(live["scores"]))
    emit({
        "bench": "teacher_share", "trials": args.trials, "space": str(args.space), "final_suite": args.final_suite,
        "teacher_flop_share": round(share, 4), "ideal_speedup": round(ideal, 3),
        "wall_cached": c["wall"], "wall_live": live["wall"], "speedup_wall": round(live["wall"] / c["wall"], 3),
        "speedup_tune_phase": round(live["tune"] / c["tune"], 3),
        "train_seconds_cached": round(c["train"], 1), "train_seconds_live": round(live["train"], 1),
        "speedup_train_loop": round(live["train"] / c["train"], 3),
        "reached_of_ideal_train_loop": round((live["train"] / c["train"] - 1) / (ideal - 1), 3),
        "same_config_scores": [{"lr": lr, "cached": c["scores"][lr], "live": live["scores"][lr]} for lr in same],
        "goal_reached_of_ideal": 0.9,
    })


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="what", required=True)
    o = sub.add_parser("overhead", help="overhead of a finished search, from MLflow")
    o.add_argument("--search", help="search id (default: the newest in the experiment)")
    o.add_argument("--slots", type=int, help="trials run at once (default: 2 / workers)")
    t = sub.add_parser("teacher-share", help="cached vs live teacher: the same search twice")
    t.add_argument("--trials", type=int, default=4)
    t.add_argument("--space", type=Path, default=REPO / "search_spaces" / "distil.yaml")
    t.add_argument("--final-suite", default="probe", choices=["probe", "full"])
    for q in (o, t):
        q.add_argument("--workdir", type=Path, default=Path("runs"))
        q.add_argument("--experiment", default="raydistill" if q is o else "bench")
    args = p.parse_args(argv)
    if args.what == "overhead":
        emit(overhead(client_for(args.workdir, None), args.experiment, args.search, args.slots))
    else:
        teacher_share(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
