"""One way to open a run: what ``search``, ``study`` and ``train`` share.

Each command's options subclass :class:`RunOptions` (the flags the three share, checked once
by :meth:`RunOptions.check_run`, writing nothing). After its own checks a command calls
:func:`open_run`, which writes and starts things in one order for all three:

workdir → Ray (and, for a search, the pre-flight check of every node) → MLflow → device →
the cluster's capacity (once) → corpus → teacher.

The :class:`RunContext` it returns then gives the teacher's targets (the teacher pass on GPUs
exactly when the trials will have them), the evaluation budgets, the references and the
:class:`~raydistill.search.setup.TrialSetup`; :func:`make_tuner` wires a Ray Tune run the same
way for a search and a study.
"""

from __future__ import annotations

import math
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, NamedTuple, Optional

from raydistill.corpus.manifest import Corpus
from raydistill.doctor import preflight
from raydistill.errors import UserError
from raydistill.teacher.info import TeacherInfo
from raydistill.prepare import (Workdir, check_corpus, check_mlflow_uri, check_teacher, default_device, ensure_targets,
                                resolve_corpus, resolve_teacher)
from raydistill.search.baselines import Baselines
from raydistill.search.cluster import capacity, check_address_form, check_services, connect
from raydistill.search.setup import TrialSetup, make_setup
from raydistill.search.trial import DRIVER_MEMORY
from raydistill.targets.store import TargetStore, TeacherNeeds
from raydistill.teacher.sources import Teacher
from raydistill.tracking.mlflow import SearchTracker, client_for, experiment_id

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")  # search and study ids: directory, Optuna study and MLflow tag
MAX_SEED = 2**31 - 1  # Optuna's sampler takes 32-bit seeds, and evaluation seeds are offset from it


class Inputs(NamedTuple):
    """The corpus and teacher a run was checked against (:meth:`RunOptions.check_inputs`)."""

    corpus_spec: Optional[str]
    teacher_spec: str
    smoke: bool
    corpus: Optional[Corpus]  # None: the embedded corpus (synthesised by open_run)
    teacher: Optional[Teacher]  # None: the embedded teacher (pretrained by open_run)


@dataclass(kw_only=True)
class RunOptions:
    """The options ``search``, ``study`` and ``train`` share."""

    workdir: Path = Path("runs")
    mlflow_uri: Optional[str] = None  # default: SQLite in the workdir
    experiment: str = "raydistill"
    address: Optional[str] = None  # an existing Ray cluster (ray:// or host:port); default: start one
    corpus: Optional[str] = None  # default: the embedded espeak-ng corpus
    teacher: Optional[str] = "embedded"
    smoke: Optional[bool] = False
    workers: Optional[int] = None  # Ray Train workers per trial (DDP when > 1); default: the resources asked for, else 1
    cpus_per_worker: Optional[float] = None  # default: the resources asked for, else 1
    gpus_per_worker: Optional[float] = None  # default: the resources asked for, else 1 if the cluster has GPUs, else 0
    seed: int = 0  # the evaluation seed: the same for every trial, so scores compare
    max_failures: int = 1  # restarts per trial from its checkpoint: Train workers, and Tune's trial driver

    preflight: ClassVar[bool] = False  # open_run checks every node's software and view of the workdir first

    def check_run(self, resources: Optional[dict] = None) -> None:
        """The shared options checked without writing anything: workdir, experiment, resources
        per worker (that a local cluster can give them), seed, restarts, and the forms of the
        MLflow URI and Ray address. Resources left open are filled in from ``resources`` (a
        search space's or a plan's), else one worker of one CPU."""
        defaults = {"workers": 1, "cpus_per_worker": 1.0, **(resources or {})}
        for name in ("workers", "cpus_per_worker", "gpus_per_worker"):
            if getattr(self, name) is None:
                setattr(self, name, defaults.get(name))
        Workdir(self.workdir).check()
        if not self.experiment or not self.experiment.strip():
            raise UserError("--experiment must not be empty")
        if self.workers < 1:
            raise UserError(f"--workers must be >= 1, found {self.workers}")
        if not (math.isfinite(self.cpus_per_worker) and self.cpus_per_worker > 0):
            raise UserError(f"--cpus-per-worker must be a number > 0, found {self.cpus_per_worker}")
        gpus = self.gpus_per_worker
        if gpus is not None and not (math.isfinite(gpus) and gpus >= 0 and (gpus <= 1 or float(gpus).is_integer())):
            raise UserError(f"--gpus-per-worker must be 0, a fraction of one GPU, or a whole number, found {gpus}")
        if self.workers > 1 and gpus is not None and 0 < gpus < 1:
            # NCCL refuses two ranks of one process group on one GPU; a fraction shares a GPU between trials
            raise UserError(f"--workers {self.workers} with --gpus-per-worker {gpus:g}: DDP's ranks need a whole GPU "
                            "each (NCCL refuses two on one GPU); share GPUs between single-worker trials (--workers 1) "
                            "instead")
        if not 0 <= self.seed <= MAX_SEED:
            raise UserError(f"--seed must be between 0 and {MAX_SEED}, found {self.seed}")
        if self.max_failures < 0:
            raise UserError(f"--max-failures must be >= 0, found {self.max_failures}")
        ray = sys.modules.get("ray")
        if self.address is None and not (ray and ray.is_initialized()):
            # a local cluster will be started: a trial asking for more than this machine has would wait forever
            cpus = os.cpu_count() or 1
            if self.workers * self.cpus_per_worker > cpus:
                raise UserError(f"--workers {self.workers} x --cpus-per-worker {self.cpus_per_worker:g} needs more "
                                f"CPUs than this machine has ({cpus}); pass --address to use a cluster")
            if gpus:
                import torch

                if self.workers * gpus > torch.cuda.device_count():
                    raise UserError(f"--workers {self.workers} x --gpus-per-worker {gpus:g} needs more GPUs than "
                                    f"this machine has ({torch.cuda.device_count()}); pass --address to use a cluster")
        check_address_form(self.address)
        if self.mlflow_uri is not None:
            check_mlflow_uri(self.mlflow_uri, connect=False)

    def check_inputs(self, corpus: Optional[str], teacher: str, *, smoke: bool, needs: Callable, masked: bool,
                     what: str) -> Inputs:
        """The corpus and teacher the run will use, checked (and a file's loaded) before anything
        is written: ``needs(TeacherInfo)`` what the run asks of the teacher, ``masked`` whether it
        feeds the teacher masked input (``what`` names the run's source in the refusal)."""
        checked_corpus = check_corpus(corpus)
        checked_teacher = check_teacher(teacher, smoke=smoke, needs=needs, masked=masked, what=what)
        return Inputs(corpus, teacher, smoke, checked_corpus, checked_teacher)

    def check_services(self) -> None:
        """Last of the checks (they may take seconds): a remote MLflow server and the Ray cluster answer."""
        check_services(self)

    @property
    def mlflow_store(self) -> str:
        return self.mlflow_uri or Workdir(self.workdir).mlflow_uri


@dataclass(kw_only=True)
class TunedOptions(RunOptions):
    """The options of the commands whose trials Ray Tune schedules (``search``, ``study``)."""

    name: Optional[str] = None  # the search's or study's id; default: <space>-<timestamp>, or the plan's name (+ "-smoke")
    max_concurrent: Optional[int] = None  # default: as many trials as the cluster's CPUs/GPUs fit

    def check_run(self, resources: Optional[dict] = None) -> None:
        super().check_run(resources)
        if self.max_concurrent is not None and self.max_concurrent < 1:
            raise UserError(f"--max-concurrent must be >= 1, found {self.max_concurrent}")


@dataclass
class RunContext:
    """An opened run: what :func:`open_run` wrote, started and resolved."""

    opts: RunOptions
    workdir: Workdir
    uri: str  # the MLflow store
    ray: Any  # the ray module, connected
    resources: dict  # the cluster's capacity (search/cluster.py), read once
    device: str
    corpus: Corpus
    teacher: Teacher
    smoke: bool
    client: Any  # MlflowClient
    experiment: str  # its id
    tracker: Optional[SearchTracker] = None  # a search's or study's parent run (None: train)

    @property
    def info(self) -> TeacherInfo:
        return self.teacher.info

    @property
    def gpus(self) -> bool:
        """Whether trials (and so the teacher pass) run on GPUs: when they ask for them, else when
        the cluster has or may start GPU nodes (an autoscaling cluster may have none up yet)."""
        gpus = self.opts.gpus_per_worker
        return (gpus if gpus is not None else self.resources.get("GPU", 0)) > 0

    def targets(self, needs: TeacherNeeds) -> TargetStore:
        """The teacher's targets the trials read, computed once (cached across runs): the teacher
        pass runs where the trials will."""
        return ensure_targets(self.teacher, self.corpus, self.workdir, needs, device=self.device, distributed=True,
                              gpus=self.gpus)

    def budgets(self, full: str, tasks=()) -> dict[str, str]:
        """The evaluation suites: ``probe`` at every rung, ``full`` at the end (``smoke``: both tiny),
        restricted to ``tasks`` (a corpus without keyword or intent labels, e.g. LibriSpeech)."""
        budgets = {"probe": "smoke", "full": "smoke"} if self.smoke else {"probe": "probe", "full": full}
        if tasks and budgets["full"] != "probe":
            budgets["full"] += ":" + ",".join(tasks)
        return budgets

    def baselines(self, budgets: dict[str, str]) -> Baselines:
        """The references (teacher, FBank, random init), scored like every trial and logged to the tracker."""
        return Baselines(self.workdir, self.corpus, self.teacher, self.tracker, budgets["full"], device=self.device)

    def setup(self, run_id: str, store: TargetStore, budgets: dict[str, str], **more) -> TrialSetup:
        return make_setup(self.opts, run_id, self.corpus, store, self.teacher, budgets, self.workdir, self.ray,
                          resources=self.resources, **more)

    def concurrent(self, setup: TrialSetup, most: Optional[int] = None) -> int:
        """Trials at once: ``--max-concurrent``, else as many as the cluster fits (at most ``most``)."""
        if getattr(self.opts, "max_concurrent", None) is not None:
            return self.opts.max_concurrent
        fit = setup.trials_at_once(self.resources)
        return fit if most is None else min(fit, most)


def open_run(opts: RunOptions, inputs: Inputs, tracker_id: Optional[str] = None) -> RunContext:
    """Open a run whose options and inputs were checked: the workdir, Ray, MLflow (a parent run's
    tracker for ``tracker_id``), the device, the cluster's capacity, the corpus and the teacher
    (the embedded ones built here, once, cached in the workdir)."""
    workdir = Workdir(opts.workdir).check_writable()
    uri = opts.mlflow_uri or workdir.mlflow_uri
    artifact_root = None if opts.mlflow_uri else workdir.mlflow_artifacts
    ray = connect(opts.address)
    if opts.preflight:
        preflight(ray, workdir.root, uri, opts.address)  # every node's software and view of the workdir; MLflow's store
    if tracker_id is not None:
        tracker = SearchTracker(uri, opts.experiment, tracker_id, artifact_root=artifact_root)
        client, experiment = tracker.client, tracker.experiment
    else:
        tracker, client = None, client_for(uri)
        experiment = experiment_id(client, opts.experiment, artifact_root)
    device = default_device()
    resources = capacity(ray)
    corpus = resolve_corpus(inputs.corpus_spec, workdir, smoke=inputs.smoke, checked=inputs.corpus)
    teacher = resolve_teacher(inputs.teacher_spec, workdir, corpus, smoke=inputs.smoke, device=device,
                              checked=inputs.teacher)
    return RunContext(opts, workdir, uri, ray, resources, device, corpus, teacher, inputs.smoke, client, experiment,
                      tracker)


def make_tuner(ctx: RunContext, driver: Callable, *, name: str, callback, concurrent: int, restore: bool = False,
               param_space: Optional[dict] = None, num_samples: int = 1, search_alg=None, scheduler=None, **params):
    """The Ray Tune run of a search or study: ``driver`` (given ``params``, e.g. the setup) as each
    trial's driver (no CPU of its own: its Train workers hold them), ``callback`` mirroring the
    trials into MLflow, state under the workdir's ray_results/``name``; ``restore``: the
    interrupted run of that name, continued (its searcher and callback come back with it)."""
    from ray import tune  # lazy: ray.tune takes seconds to import; --dry-run and the checks do not need it

    trainable = tune.with_resources(tune.with_parameters(driver, **params), {"cpu": 0, "memory": DRIVER_MEMORY})
    if restore:
        return tune.Tuner.restore(str(ctx.workdir.ray_results / name), trainable=trainable, resume_unfinished=True,
                                  resume_errored=True, restart_errored=False)
    return tune.Tuner(
        trainable,
        param_space=param_space,
        tune_config=tune.TuneConfig(num_samples=num_samples, search_alg=search_alg, scheduler=scheduler,
                                    max_concurrent_trials=concurrent),
        run_config=tune.RunConfig(name=name, storage_path=str(ctx.workdir.ray_results), callbacks=[callback],
                                  verbose=1, failure_config=tune.FailureConfig(max_failures=ctx.opts.max_failures)),
    )
