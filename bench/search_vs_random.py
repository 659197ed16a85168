"""Does the search beat random? TPE + ASHA against random search without early stopping, at
equal compute, over several search seeds, on a cheap proxy of ``search_spaces/dice.yaml``.

Proxy: the space's knobs and base with ``--steps`` training steps (default 100) and the probe
suite (PR + SID) as the final evaluation. TPE + ASHA evaluates at 4 rungs (eval_every = steps/4,
ASHA's reduction factor 2) and runs ``--asha-trials``; random search evaluates once, at the end
(nothing to stop), and runs ``--random-trials``. Measured on seed 0 (a trial's fixed cost, the
Ray Train worker group and the probe evaluations, dominates at 100 steps): a completed TPE + ASHA
trial costs ≈ 135 s (four probe evaluations), a stopped one ≈ 55 s, a random one ≈ 75 s, so 16
TPE + ASHA trials (about half stopped) and 20 random ones spend about the same compute. The
analysis also reads both curves at exactly equal compute: the smaller of the two totals.
Each search confirms its best trial (``--confirm 1``: 3 evaluation seeds, tuned head learning
rates), so the two are compared on confirmed winners too.

Compute is modelled trial-seconds: what each trial did (training steps, probe evaluations, one
start-up), read from its MLflow metrics and priced at the fastest per-step, per-evaluation and
per-start cost seen in any trial (each trial holds one CPU). Other work on the machine slows trials
unevenly, and it did while seed 0 ran here; pricing the work done keeps the two searches on one
axis whatever ran beside them. The wall-clock trial-seconds are printed beside it. The ratio is the
ASHA paper's: compute random search spends to reach its final best, over the compute TPE + ASHA
spends to reach that same score (its anchor: random's quality at a fifth to a tenth of its
compute; > 1: TPE + ASHA is faster; "not reached": it never got there).

    .venv/bin/python bench/search_vs_random.py run [--seeds 0,1,2] [--workdir runs]
    .venv/bin/python bench/search_vs_random.py analyse [--workdir runs] [--figure PATH]
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import emit  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
EXPERIMENT = "bench-search-vs-random"
STRATEGIES = {"tpe-asha": ("tpe", "asha"), "random": ("random", "fifo")}


def proxy_space(steps: int, rungs: int, tmp: Path) -> Path:
    """dice.yaml at ``steps`` steps with ``rungs`` evaluations (the last one the final)."""
    doc = yaml.safe_load((REPO / "search_spaces" / "dice.yaml").read_text())
    doc["base"]["optim"]["max_steps"] = steps
    doc["base"]["eval_every"] = steps // rungs
    path = tmp / f"dice-proxy-{steps}-r{rungs}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def run(args) -> None:
    from raydistill.cli import main

    with tempfile.TemporaryDirectory() as tmp:
        spaces = {"tpe-asha": proxy_space(args.steps, 4, Path(tmp)), "random": proxy_space(args.steps, 1, Path(tmp))}
        for seed in args.seeds:
            for strategy, (sampler, scheduler) in STRATEGIES.items():
                name = f"svr-{strategy}-s{seed}"
                state = search_state(args, name)
                if state == "FINISHED":
                    print(f"bench: {name} is done, skipped", file=sys.stderr)
                    continue
                trials = args.asha_trials if strategy == "tpe-asha" else args.random_trials
                again = ["--resume"] if state is not None else []  # interrupted: continue it
                code = main(["search", "--space", str(spaces[strategy]), "--trials", str(trials), "--seed", str(seed),
                             "--sampler", sampler, "--scheduler", scheduler, "--final-suite", "probe",
                             "--confirm", "1", "--name", name, "--experiment", EXPERIMENT,
                             "--workdir", str(args.workdir), *again,
                             *(["--mlflow-uri", args.mlflow_uri] if args.mlflow_uri else [])])
                if code != 0:
                    raise SystemExit(f"bench: search {name} exited {code}")
    analyse(args)


def search_state(args, name: str):
    """None if the search was never started, else its MLflow run's status (FINISHED when done)."""
    if not (Path(args.workdir) / "ray_results" / name / "tuner.pkl").is_file():
        return None
    from raydistill.tracking.mlflow import KIND, SEARCH_ID, find_run

    client = store(args)
    exp = client.get_experiment_by_name(EXPERIMENT)
    search = find_run(client, exp.experiment_id, {KIND: "search", SEARCH_ID: name}) if exp else None
    return search.info.status if search else "KILLED"


def store(args):
    """The MLflow client of the store the bench's searches log to (--mlflow-uri, else the workdir's)."""
    from mlflow.tracking import MlflowClient
    from raydistill.prepare import Workdir

    return MlflowClient(args.mlflow_uri or Workdir(args.workdir).mlflow_uri)


def work(client, run) -> dict:
    """What one trial did, from its MLflow metric history: training steps, probe evaluations
    (every rung's; a final one on the probe suite reuses the last rung's), and what they took."""
    history = {k: client.get_metric_history(run.info.run_id, k) for k in ("train_seconds", "eval_seconds", "probe_score")}
    evals = len(history["probe_score"])
    steps = max((m.step for m in history["train_seconds"]), default=0)
    train = max((m.value for m in history["train_seconds"]), default=0.0)  # cumulative
    rung_evals = [m.value for m in history["eval_seconds"]][:evals]  # later entries: the post-run scoring
    wall = (run.info.end_time - run.info.start_time) / 1000
    return {"steps": steps, "evals": evals, "wall": wall, "train": train, "eval": rung_evals,
            "start": wall - train - sum(rung_evals)}


def prices(works: list[dict]) -> dict:
    """Seconds per training step, per probe evaluation and per trial start on a quiet machine:
    the fastest seen across every trial of both strategies (other work on the machine only ever
    slows a trial down), so both searches' compute is priced alike whatever ran beside them."""
    return {"step": min(w["train"] / w["steps"] for w in works if w["steps"]),
            "eval": min(e for w in works for e in w["eval"]),
            "start": max(0.0, min(w["start"] for w in works if w["eval"]))}


def cost(w: dict, price: dict) -> float:
    return price["start"] + w["steps"] * price["step"] + w["evals"] * price["eval"]


def curve(runs, works: dict, price: dict) -> dict:
    """Best score so far against compute spent, trials in the order they ended. Compute: each
    trial's steps, evaluations and start priced by :func:`prices` (modelled trial-seconds); the
    wall-clock trial-seconds are kept beside it."""
    spent, best, points = 0.0, -math.inf, []
    for r in runs:
        spent += cost(works[r.info.run_id], price)
        score = r.data.metrics.get("overall_score")
        if score is not None and math.isfinite(score):
            best = max(best, score)
        points.append((spent, best))
    confirmed = [r.data.metrics["confirmed_overall_score"] for r in runs if "confirmed_overall_score" in r.data.metrics]
    stopped = sum(r.data.tags.get("raydistill.status") == "stopped" for r in runs)
    return {"points": points, "compute": spent, "best": best, "trials": len(runs), "stopped": stopped,
            "confirmed_best": max(confirmed) if confirmed else None,
            "wall": sum(works[r.info.run_id]["wall"] for r in runs)}


def rung_fidelity(client, runs) -> dict:
    """How well the first rung's probe score ranks trials by their final score: Spearman's rank
    correlation over TPE + ASHA's completed trials (the only ones with both), pooled over seeds,
    and per later rung. Low values mean ASHA stops on noise."""
    import numpy as np

    def spearman(x, y):
        rx, ry = np.argsort(np.argsort(x)), np.argsort(np.argsort(y))
        return float(np.corrcoef(rx, ry)[0, 1]) if len(x) > 2 else float("nan")

    by_rung: dict[int, list[tuple[float, float]]] = {}
    for r in runs:
        final = r.data.metrics.get("overall_score")
        if r.data.tags.get("raydistill.status") != "completed" or final is None or not math.isfinite(final):
            continue
        for i, m in enumerate(sorted(client.get_metric_history(r.info.run_id, "probe_score"), key=lambda m: m.step)):
            by_rung.setdefault(i + 1, []).append((m.value, final))
    return {f"rung{k}": {"trials": len(v), "spearman": round(spearman(*zip(*v)), 2)}
            for k, v in sorted(by_rung.items()) if len(v) > 2}


def best_within(points, budget: float) -> float:
    """Best score so far once ``budget`` trial-seconds were spent (-inf: nothing scored yet)."""
    return max((best for spent, best in points if spent <= budget + 1e-9), default=-math.inf)


def reach(points, target: float):
    """Compute spent when the best so far first reached ``target`` (None: never)."""
    return next((spent for spent, best in points if best >= target - 1e-9), None)


def analyse(args) -> None:
    client = store(args)
    exp = client.get_experiment_by_name(EXPERIMENT)
    if exp is None:
        raise SystemExit(f"bench: no experiment {EXPERIMENT!r}: run `search_vs_random.py run` first")
    seeds = sorted({int(r.data.tags["raydistill.search_id"].rsplit("-s", 1)[1])
                    for r in client.search_runs([exp.experiment_id], "tags.`raydistill.kind` = 'search'")})
    from raydistill.tracking.mlflow import trial_runs

    runs = {(seed, strategy): sorted((r for r in trial_runs(client, exp.experiment_id, f"svr-{strategy}-s{seed}")
                                      if r.info.end_time), key=lambda r: r.info.end_time)
            for seed in seeds for strategy in STRATEGIES}
    works = {r.info.run_id: work(client, r) for rs in runs.values() for r in rs}
    price = prices(list(works.values()))
    emit({"bench": "search_vs_random_prices", **{k: round(v, 2) for k, v in price.items()}})
    rows = []
    for seed in seeds:
        if not all(runs[seed, s] for s in STRATEGIES):
            continue  # one of the two searches has not run yet
        curves = {s: curve(runs[seed, s], works, price) for s in STRATEGIES}
        rnd, asha = curves["random"], curves["tpe-asha"]
        target = rnd["best"]
        r_spent, a_spent = reach(rnd["points"], target), reach(asha["points"], target)
        budget = min(rnd["compute"], asha["compute"])
        row = {"seed": seed, "equal_compute": budget,
               **{f"{s}_best_at_equal": best_within(c["points"], budget) for s, c in curves.items()},
               **{f"{s}_{k}": c[k] for s, c in curves.items()
                  for k in ("trials", "stopped", "compute", "wall", "best", "confirmed_best")},
               "target": target, "random_reached_at": r_spent, "tpe_asha_reached_at": a_spent,
               "ratio": (r_spent / a_spent) if r_spent and a_spent else None}
        rows.append({**row, "curves": {s: c["points"] for s, c in curves.items()}})
        emit({"bench": "search_vs_random", **row})
    asha_runs = [r for (seed, strategy), rs in runs.items() if strategy == "tpe-asha" for r in rs]
    emit({"bench": "search_vs_random_rung_fidelity", **rung_fidelity(client, asha_runs)})
    if args.figure and rows:
        figure(rows, Path(args.figure))
    print(table(rows))


def table(rows) -> str:
    def f(x, d=1):
        return "–" if x is None else f"{x:.{d}f}"

    lines = ["| search seed | TPE+ASHA trials (stopped) | compute s (wall) | best | confirmed | random trials | compute s (wall) | "
             "best | confirmed | equal compute s | best there: TPE+ASHA / random | random reaches its best at | "
             "TPE+ASHA reaches it at | ratio |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['seed']} | {r['tpe-asha_trials']} ({r['tpe-asha_stopped']}) | {f(r['tpe-asha_compute'], 0)} "
                     f"({f(r['tpe-asha_wall'], 0)}) | "
                     f"{f(r['tpe-asha_best'], 2)} | {f(r['tpe-asha_confirmed_best'], 2)} | {r['random_trials']} | "
                     f"{f(r['random_compute'], 0)} ({f(r['random_wall'], 0)}) | {f(r['random_best'], 2)} | {f(r['random_confirmed_best'], 2)} | "
                     f"{f(r['equal_compute'], 0)} | {f(r['tpe-asha_best_at_equal'], 2)} / {f(r['random_best_at_equal'], 2)} | "
                     f"{f(r['random_reached_at'], 0)} s | "
                     f"{f(r['tpe_asha_reached_at'], 0) + ' s' if r['tpe_asha_reached_at'] else 'not reached'} | "
                     f"{f(r['ratio'], 2) if r['ratio'] else '–'} |")
    return "\n".join(lines)


def figure(rows, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    colours = {"tpe-asha": "tab:blue", "random": "tab:orange"}
    for r in rows:
        for strategy, points in r["curves"].items():
            pts = [(s / 60, b) for s, b in points if math.isfinite(b)]
            ax.step([p[0] for p in pts], [p[1] for p in pts], where="post", color=colours[strategy], alpha=0.8,
                    label=strategy if r is rows[0] else None)
    ax.set_xlabel("compute spent (modelled trial-minutes: steps, probe evaluations and starts priced)")
    ax.set_ylabel("best overall_score so far (probe suite)")
    ax.set_title("TPE + ASHA vs random search, dice.yaml proxy, one line per search seed")
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def seed_list(text: str) -> list[int]:
    try:
        return [int(s) for s in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected search seeds like 0,1,2, found {text!r}") from None


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    for name in ("run", "analyse"):
        q = sub.add_parser(name)
        q.add_argument("--workdir", type=Path, default=REPO / "runs")
        q.add_argument("--mlflow-uri")
        q.add_argument("--figure", default=str(REPO / "docs" / "figures" / "search_vs_random.png"))
        if name == "run":
            q.add_argument("--seeds", type=seed_list, default="0,1,2")
            q.add_argument("--steps", type=int, default=100)
            q.add_argument("--asha-trials", type=int, default=16)
            q.add_argument("--random-trials", type=int, default=20)
    return p.parse_args(argv)


if __name__ == "__main__":
    args = parse()
    run(args) if args.command == "run" else analyse(args)
