"""One trial = one Ray Train run of the distillation loop, driven from a Ray Tune function.

Ray Train V2 pattern (docs/architecture.md#ray-tune-and-train): the Tune trainable is a small
*driver* function that builds a ``TorchTrainer`` and calls ``fit()``; metrics and checkpoint
paths flow back to Tune through ``TuneReportCallback``. The driver reserves memory but no CPU,
so the Train workers get every core (a 0.01-CPU driver next to 1-CPU workers starves the
second trial on a 2-core machine).

What a trial needs beyond its sampled values (corpus, target cache, base config,
evaluation settings) arrives once through ``tune.with_parameters`` as ``setup``, a
:class:`~raydistill.search.setup.TrialSetup`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Optional

from raydistill.config import TrainConfig
from raydistill.corpus.manifest import Corpus
from raydistill.evaluate.suite import PROBE_TASKS, EvalBudget, evaluate_upstream, score_metrics
from raydistill.methods import describe, teacher_needs
from raydistill.teacher.info import TeacherInfo
from raydistill.evaluate.upstream import HubertUpstream
from raydistill.models.hubert import HubertModel
from raydistill.search.setup import TrialSetup
from raydistill.search.space import merge, set_path
from raydistill.targets.store import TargetStore
from raydistill.teacher.sources import load_teacher
from raydistill.train.data import TrainData
from raydistill.train.loop import train
from raydistill.utils import disk_guard

DRIVER_MEMORY = 256 * 1024**2  # bytes reserved for each trial's driver process (no CPU)


STAGING_PREFIX = "raydistill-ckpt-"  # + the worker's pid + "-" + a random tail, under the temp dir


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def remove_stale_staging() -> None:
    """Remove the checkpoint staging directories (:func:`staging_dir`) of workers no longer
    running on this node."""
    for old in Path(tempfile.gettempdir()).glob(STAGING_PREFIX + "*-*"):
        pid = old.name[len(STAGING_PREFIX):].split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(old, ignore_errors=True)


def staging_dir() -> tempfile.TemporaryDirectory:
    """The local directory a Train worker writes each checkpoint into before Ray copies it to
    the trial's storage. A worker that Ray kills (ASHA stopping its trial, a node failing)
    never leaves its ``with`` block, so its directory, a whole checkpoint, would stay in the
    temp dir for good; the name carries the worker's pid, and every new worker (and the search
    driver once its trials end) removes the directories of pids no longer running there."""
    remove_stale_staging()
    return tempfile.TemporaryDirectory(prefix=f"{STAGING_PREFIX}{os.getpid()}-")


# what a rung's probe evaluation reports, under the final suite's names
PROBE_AS_FINAL = {"probe_pr_per": "pr_per", "probe_sid_acc": "sid_acc", "probe_score": "overall_score"}


def final_is_probe(budgets: dict[str, str]) -> bool:
    """Whether the end-of-trial suite is the probe suite itself (``--final-suite probe``): then a
    trial's last rung already ran its final evaluation."""
    return EvalBudget.named(budgets["full"]) == EvalBudget.named(budgets["probe"]).with_tasks(PROBE_TASKS)


def make_evaluator(corpus: Corpus, budgets: dict[str, str], *, seed: int, device: Any,
                   references: Optional[dict] = None):
    """``evaluate(model, final)`` for the loop: the cheap ``probe`` suite at every rung
    (``probe_score``, what ASHA compares), plus the ``full`` suite at the end (``overall_score``,
    every task's metric, and ``superb_score`` against the ``references``' FBank and teacher)."""
    probe = EvalBudget.named(budgets["probe"]).with_tasks(PROBE_TASKS)
    full = EvalBudget.named(budgets["full"])
    # --final-suite probe: the last rung already ran the final evaluation (same data, seed and heads)
    reuse_last_rung = final_is_probe(budgets)

    def evaluate(model: HubertModel, final: bool) -> dict:
        upstream = HubertUpstream(model, name="student")
        scores = evaluate_upstream(upstream, corpus, probe, seed=seed, device=device)
        # a task without data (e.g. no phone labels) is absent from the scores
        metrics = {f"probe_{k}": scores[k] for k in ("pr_per", "sid_acc") if k in scores}
        metrics["probe_score"] = scores["overall_score"]
        if final:
            # running the same evaluation again would only double its cost
            final_scores = scores if reuse_last_rung else evaluate_upstream(upstream, corpus, full, seed=seed,
                                                                            device=device)
            metrics.update(score_metrics(final_scores, references))
        return metrics

    return evaluate


def trial_config(setup: TrialSetup, values: dict) -> TrainConfig:
    """Base configuration + this trial's sampled values."""
    method = values.get("method", setup.base.get("method"))
    d = merge(merge(setup.base, setup.method_bases.get(method, {})), {"method": method})
    for name, value in values.items():
        set_path(d, name, value)
    return TrainConfig.from_dict(d, where="trial")


def student_size(config: TrainConfig, teacher: dict) -> dict:
    """The student's size, reported with every result of a trial (the objectives a multi-objective
    search may minimise): ``params``, its parameters at inference (training-only heads left out),
    and ``macs_per_second``, its multiply-accumulates per second of 16 kHz audio. ``teacher`` is
    the teacher's description (``TrialSetup.teacher``): some students are shaped by it."""
    sizes = describe(config, TeacherInfo.of(teacher))
    return {"params": int(sizes["params"]), "macs_per_second": float(sizes["macs_per_second"])}


def train_worker(loop_config: dict) -> None:
    """Runs on every Ray Train worker: the plain loop, wired to ``ray.train.report``."""
    import ray.train
    import ray.train.torch
    import torch

    setup: TrialSetup = loop_config["setup"]
    config = TrainConfig.from_dict(loop_config["config"], where="trial")
    torch.set_num_threads(max(1, int(setup.cpus_per_worker)))
    corpus = Corpus.load(setup.corpus_dir)
    needs = teacher_needs(config, TeacherInfo.of(setup.teacher))
    data = TrainData(corpus, TargetStore(Path(setup.targets_for(config.method))), needs, config.student.conv_layers)
    # methods that run the teacher in the loop (masked input, attention maps) load it here
    live_teacher = load_teacher(setup.teacher["source"]) if needs.live else None
    device = ray.train.torch.get_device()
    if device.type == "cuda" and 0 < setup.gpus_per_worker < 1:
        # Ray's GPU fractions are logical only: cap this process's share of the memory so
        # students sharing a GPU cannot starve each other (an OOM stays in its own trial).
        total = torch.cuda.get_device_properties(device).total_memory
        torch.cuda.set_per_process_memory_fraction(memory_fraction(setup.gpus_per_worker, total), device)
    rank = ray.train.get_context().get_world_rank()
    evaluate = make_evaluator(corpus, setup.budgets, seed=setup.eval_seed, device=device,
                              references=setup.references) if rank == 0 else None
    size = student_size(config, setup.teacher)  # once per trial; objectives of a multi-objective search

    def report(metrics: dict, checkpoint_dir) -> None:
        checkpoint = ray.train.Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir else None
        needed = sum(p.stat().st_size for p in Path(checkpoint_dir).iterdir()) if checkpoint_dir else None
        with disk_guard(Path(setup.storage_path), needed):  # Ray copies the checkpoint there
            ray.train.report({**metrics, **size}, checkpoint=checkpoint)

    restored = ray.train.get_checkpoint()
    with staging_dir() as local:
        with restored.as_directory() if restored else contextlib.nullcontext(None) as resume:
            train(config, data, report=report, checkpoint_dir=Path(local), evaluate=evaluate,
                  resume=Path(resume) if resume else None, teacher=setup.teacher, live_teacher=live_teacher,
                  device=device)


# What a process holds on its GPU outside PyTorch's caching allocator: the CUDA context, its
# loaded kernels and cuBLAS/cuDNN workspaces (a few hundred MB each on current GPUs).
CUDA_CONTEXT_BYTES = 1024**3


def memory_fraction(share: float, total_bytes: int) -> float:
    """The allocator cap for a worker holding ``share`` of a GPU of ``total_bytes``:
    ``set_per_process_memory_fraction`` caps only the allocator, so the context's memory
    (:data:`CUDA_CONTEXT_BYTES`) comes out of the share, or two trials at 0.5 would together
    ask for more than the card has."""
    return max(0.05, share - CUDA_CONTEXT_BYTES / total_bytes)


def make_trainer(setup: TrialSetup, config: TrainConfig, name: str, callbacks=()):
    """A ``TorchTrainer`` running :func:`train_worker` for one configuration (the setup object
    itself travels in ``train_loop_config``: Ray Train pickles it to every worker)."""
    import ray.train
    from ray.train.torch import TorchTrainer

    return TorchTrainer(
        train_worker,
        train_loop_config={"setup": setup, "config": config.to_dict()},
        scaling_config=ray.train.ScalingConfig(
            num_workers=setup.workers,
            use_gpu=setup.gpus_per_worker > 0,
            resources_per_worker=setup.worker_resources,
        ),
        run_config=ray.train.RunConfig(
            # Deterministic name: a restarted run finds its Train checkpoints and resumes.
            name=name,
            storage_path=setup.storage_path,
            callbacks=list(callbacks),
            failure_config=ray.train.FailureConfig(max_failures=setup.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
        ),
    )


def trial_driver(values: dict, setup: TrialSetup) -> None:
    """The Tune trainable: build this trial's TorchTrainer and run it to the end."""
    import ray.tune
    from ray.tune.integration.ray_train import TuneReportCallback

    trial_id = ray.tune.get_context().get_trial_id()
    trainer = make_trainer(setup, trial_config(setup, values), f"{setup.search_id}-{trial_id}", [TuneReportCallback()])
    trainer.fit()
