"""Full evaluation of trials that ASHA stopped, from their last checkpoint.

ASHA stops a trial by killing it, before its end-of-run evaluation; scoring its last
checkpoint afterwards gives every trial of the search the same metrics in MLflow.
Runs as Ray tasks with a trial worker's resources, in parallel.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

from raydistill.corpus.manifest import Corpus
from raydistill.evaluate.suite import EvalBudget, evaluate_upstream, score_metrics
from raydistill.evaluate.upstream import HubertUpstream
from raydistill.methods import load_student
from raydistill.models.checkpoint import STUDENT_FILE
from raydistill.search.setup import TrialSetup
from raydistill.search.trial import PROBE_AS_FINAL, final_is_probe
from raydistill.utils import Progress, is_number, log


def _evaluate(checkpoint_dir: str, setup: TrialSetup, seed: Optional[int] = None, lr_scales: Sequence[float] = (1.0,)) -> dict:
    """The full suite of a trial's checkpoint: the trial's evaluation seed and fixed head learning
    rates by default; ``seed`` and ``lr_scales`` (heads' learning rates tuned on dev) to confirm."""
    import torch

    torch.set_num_threads(max(1, int(setup.cpus_per_worker)))
    device = "cuda" if setup.gpus_per_worker > 0 and torch.cuda.is_available() else "cpu"
    _, module, _ = load_student(Path(checkpoint_dir) / STUDENT_FILE)
    corpus = Corpus.load(setup.corpus_dir)
    budget = EvalBudget.named(setup.budgets["full"]).with_lr_scales(lr_scales)
    scores = evaluate_upstream(HubertUpstream(module.model, name="student").to(device), corpus, budget,
                               seed=setup.eval_seed if seed is None else seed, device=device)
    return score_metrics(scores, setup.references)


def evaluate_stopped_trials(tracker, results, setup: TrialSetup) -> int:
    """Score every trial that ended without ``overall_score``; return how many were scored."""
    import ray

    todo = []
    for result in results:
        metrics = result.metrics or {}
        if result.error is None and "overall_score" not in metrics and metrics.get("checkpoint_path"):
            run_id, _ = tracker.trial_run(metrics["trial_id"])
            if is_number(tracker.run_metrics(run_id).get("overall_score")):
                continue  # scored before this search was resumed (a new run holds NaN)
            if final_is_probe(setup.budgets) and "probe_score" in metrics:
                # its last rung ran the final suite already, on this very checkpoint
                scores = {final: metrics[probe] for probe, final in PROBE_AS_FINAL.items() if probe in metrics}
                tracker.log_evaluated(run_id, score_metrics(scores, setup.references), "last_rung",
                                      step=metrics.get("step"))
                continue
            todo.append((metrics["trial_id"], metrics["checkpoint_path"], metrics.get("step")))
    if not todo:
        return 0
    log(f"full evaluation of {len(todo)} trial(s) stopped early by ASHA, from their last checkpoint")
    task = ray.remote(num_cpus=setup.cpus_per_worker, num_gpus=setup.gpus_per_worker)(_evaluate)
    pending = {task.remote(path, setup): (trial_id, step) for trial_id, path, step in todo}
    bar = Progress("full evaluation of stopped trials", len(todo), " trials", every_s=0)
    while pending:  # log each trial as soon as it is scored: a long evaluation shows progress
        (ref,), _ = ray.wait(list(pending), num_returns=1)
        trial_id, step = pending.pop(ref)
        run_id, _ = tracker.trial_run(trial_id)
        tracker.log_evaluated(run_id, ray.get(ref), "from_last_checkpoint", step=step)
        bar.update(1, note=f"trial {trial_id} scored")
    return len(todo)
