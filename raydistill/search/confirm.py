"""Confirm a search's winners beyond evaluation noise (``search --confirm K``).

A trial's ``overall_score`` is one evaluation: one seed of the heads' training, the suite's fixed
head learning rates. Over seeds that score moves by 0.6-2.0 points on the embedded default
(``compare``), about the gap between good trials, and the best of several noisy scores is
biased upwards (the winner's curse). So at the end of a search the top K trials by that score
are scored again with ``compare``'s protocol: the full suite at several evaluation seeds, every
head's learning rate tuned on dev over ``lr × LR_SCALES``, each evaluation a Ray task with a
trial worker's resources (all of them at once where the cluster has room).

Each confirmed trial's run gets ``confirmed_overall_score`` (the mean), ``confirmed_spread``
(max − min), ``confirmed_seeds`` and the mean of every task metric as ``confirmed_<metric>``,
and the tag ``raydistill.confirmed`` (the protocol). The summary, the report, ``best_trial``
and ``export`` rank confirmed trials first, by their confirmed mean (``tracking.mlflow.ranked``).
A resumed search does not confirm a trial twice.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from raydistill.search.posteval import _evaluate
from raydistill.search.setup import TrialSetup
from raydistill.tracking.mlflow import CHECKPOINT, CONFIRMED, scored, trial_runs
from raydistill.utils import Progress, log

SEEDS = 3  # evaluation seeds per confirmed trial (compare's default)
LR_SCALES = (0.3, 1.0, 3.0)  # compare's default lr grid: SUPERB tunes each head's learning rate on dev


def confirm_top(tracker, search_id: str, setup: TrialSetup, k: int, *, seeds: int = SEEDS,
                lr_scales=LR_SCALES) -> list[dict]:
    """Score the top ``k`` scored trials again (see the module docstring); return, for each
    trial confirmed now or before, its run name, single-evaluation and confirmed scores."""
    import ray

    runs = [r for r in trial_runs(tracker.client, tracker.experiment, search_id, ["metrics.overall_score DESC"])
            if scored(r)][:k]
    todo = [r for r in runs if CONFIRMED not in r.data.metrics]
    eval_seeds = [setup.eval_seed + i for i in range(seeds)]
    protocol = (f"seeds {','.join(map(str, eval_seeds))}; head lr tuned on dev over x{','.join(f'{s:g}' for s in lr_scales)}; "
                f"suite {setup.budgets['full']}")
    if todo:
        log(f"confirming the top {len(runs)} trial(s) beyond evaluation noise: {len(todo) * seeds} evaluations "
            f"({protocol})")
        task = ray.remote(num_cpus=setup.cpus_per_worker, num_gpus=setup.gpus_per_worker)(_evaluate)
        with tempfile.TemporaryDirectory(prefix="raydistill-confirm-") as tmp:
            pending = {}
            for run in todo:
                checkpoint = _checkpoint_dir(tracker.client, run, Path(tmp), CHECKPOINT)
                for seed in eval_seeds:
                    pending[task.remote(str(checkpoint), setup, seed, tuple(lr_scales))] = (run, seed)
            scores: dict[str, list[dict]] = {r.info.run_id: [] for r in todo}
            bar = Progress("confirming the top trials", len(pending), " evaluations", every_s=0)
            while pending:
                (ref,), _ = ray.wait(list(pending), num_returns=1)
                run, seed = pending.pop(ref)
                result = ray.get(ref)
                scores[run.info.run_id].append(result)
                bar.update(1, note=f"{run.info.run_name} seed {seed}: overall {result['overall_score']:.2f}")
        for run in todo:
            tracker.log_confirmed(run.info.run_id, confirmed_metrics(scores[run.info.run_id]), protocol)
        runs = [tracker.client.get_run(r.info.run_id) for r in runs]
    return [{"run_id": r.info.run_id, "run_name": r.info.run_name, "overall_score": r.data.metrics["overall_score"],
             "confirmed": r.data.metrics.get(CONFIRMED), "spread": r.data.metrics.get("confirmed_spread")}
            for r in runs]


def confirmed_metrics(scores: list[dict]) -> dict:
    """Means over the evaluations of every metric they all have (``confirmed_<metric>``), with
    the spread of overall_score and the number of seeds."""
    keys = [k for k in scores[0] if all(k in s for s in scores)]
    out = {f"confirmed_{k}": float(np.mean([s[k] for s in scores])) for k in keys}
    out["confirmed_spread"] = float(np.ptp([s["overall_score"] for s in scores]))
    out["confirmed_seeds"] = float(len(scores))
    return out


def _checkpoint_dir(client, run, tmp: Path, checkpoint_tag: str) -> Path:
    """The directory of a trial's last checkpoint: its Ray Train checkpoint if this machine sees
    it, else the student logged to MLflow, downloaded here."""
    path = run.data.tags.get(checkpoint_tag)
    if path and (Path(path) / "student.pt").is_file():
        return Path(path)
    local = tmp / run.info.run_id
    local.mkdir()
    client.download_artifacts(run.info.run_id, "student/student.pt", str(local))
    return local / "student"
