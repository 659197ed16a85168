"""What every trial needs besides its own configuration: :class:`TrialSetup`.

``search``, ``train`` and ``study`` build one on the driver (:func:`make_setup`). It reaches each
trial's Tune driver through ``tune.with_parameters`` and each Ray Train worker through
``train_loop_config``; both pickle it, so every field is a plain value (paths as strings, the
teacher's description as the dict ``Teacher.describe()`` returns) and the class lives in a module
the workers import anyway.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from raydistill.config import PRETRAIN
from raydistill.search.cluster import capacity

BUDGETS = ("probe", "full")  # the keys of TrialSetup.budgets


@dataclass(frozen=True, kw_only=True)
class TrialSetup:
    """Built once per search, study or ``train`` run; the same for each of its trials.

    Keyword-only: an unknown or missing field is a TypeError that names it."""

    search_id: str  # the search's (study's, train run's) id: the prefix of every Ray Train run's name
    corpus_dir: str  # the corpus every trial trains on and is evaluated on (Corpus.load)
    targets_dir: str  # the teacher's target cache (features, k-means units) the trials read
    teacher: dict  # Teacher.describe(): spec, key, source and shape; sizes students, loads a live teacher
    budgets: dict[str, str]  # evaluation suites (EvalBudget.named): "probe" at every rung, "full" at the end
    eval_seed: int  # seeds the evaluation heads (--seed): the same for every trial, so scores compare
    workers: int  # Ray Train workers per trial (DDP when > 1)
    cpus_per_worker: float
    gpus_per_worker: float  # 0: CPU only; a fraction < 1 shares a GPU (and caps this worker's memory share)
    storage_path: str  # where Ray Train keeps the trials' checkpoints (the workdir's ray_results)
    max_failures: int  # restarts of a trial's Train workers from their last checkpoint
    base: dict = field(default_factory=dict)  # the search space's base configuration ({}: train and study)
    method_bases: dict = field(default_factory=dict)  # a composed space's base per method, merged over base
    references: Optional[dict] = None  # FBank's and the teacher's scores: superb_score's 0 and 1000
    pretrain_targets_dir: Optional[str] = None  # MFCC units for a study's hubert-pretrain arms

    def __post_init__(self):
        if sorted(self.budgets) != sorted(BUDGETS):  # else a trial would fail in a worker, minutes later
            raise ValueError(f"TrialSetup.budgets must have the keys {', '.join(BUDGETS)}, found {self.budgets!r}")

    def targets_for(self, method: str) -> str:
        """The target store a trial of ``method`` reads: a study's self-supervised arms (HuBERT
        iteration 1) learn MFCC units, every other method the teacher's targets."""
        if method != PRETRAIN:
            return self.targets_dir
        if self.pretrain_targets_dir is None:
            raise ValueError(f"{PRETRAIN} trains on MFCC units, which only a study prepares (pretrain_targets_dir)")
        return self.pretrain_targets_dir

    @property
    def worker_resources(self) -> dict:
        """One Ray Train worker's resources (Ray's names)."""
        resources = {"CPU": self.cpus_per_worker}
        if self.gpus_per_worker > 0:
            resources["GPU"] = self.gpus_per_worker
        return resources

    def trials_at_once(self, cluster: dict) -> int:
        """How many trials the cluster's CPUs (and GPUs, when trials ask for them) run at once, at least 1."""
        fit = int(cluster.get("CPU", 1) // (self.workers * self.cpus_per_worker))
        if self.gpus_per_worker > 0:
            fit = min(fit, int(cluster.get("GPU", 0) // (self.workers * self.gpus_per_worker)))
        return max(1, fit)


def make_setup(opts, search_id: str, corpus, store, teacher, budgets: dict[str, str], workdir, ray, *,
               resources: Optional[dict] = None, **more) -> TrialSetup:
    """The setup of a search, study or ``train`` run from its options (``workers``,
    ``cpus_per_worker``, ``gpus_per_worker``, ``seed``, ``max_failures``) and what it prepared;
    ``resources``: the cluster's capacity if already read (else read from ``ray``); ``more``: the
    optional fields (base, method_bases, references, pretrain_targets_dir)."""
    if resources is None:
        resources = capacity(ray)
    gpus = opts.gpus_per_worker if opts.gpus_per_worker is not None else \
        (1.0 if resources.get("GPU", 0) > 0 else 0.0)  # GPU workers the autoscaler may start count
    return TrialSetup(
        search_id=search_id,
        corpus_dir=str(corpus.root),
        targets_dir=str(store.root),
        teacher={**teacher.describe()},
        budgets=budgets,
        eval_seed=opts.seed,
        workers=opts.workers,
        cpus_per_worker=opts.cpus_per_worker,
        gpus_per_worker=gpus,
        storage_path=str(workdir.ray_results),
        max_failures=getattr(opts, "max_failures", 1),
        **more,
    )
