"""Reference scores beside the trials: the teacher, FBank features and a random-init student.

Each is scored with exactly the trials' full evaluation, computed once per (corpus,
teacher or architecture, budget, seed), cached under ``<workdir>/cache/baselines`` and
logged to MLflow as a ``raydistill.kind=baseline`` run, so the comparison view shows how
far distillation got (above random init) and how far it has to go (the teacher). FBank and
the teacher are also the two ends of every ``superb_score`` (0 and 1000).
"""

from __future__ import annotations

import hashlib
import json
from typing import Optional

import torch

from raydistill.config import TrainConfig
from raydistill.corpus.manifest import Corpus
from raydistill.evaluate.suite import EvalBudget, evaluate_upstream, score_metrics
from raydistill.evaluate.upstream import FBankUpstream
from raydistill.methods import student_model
from raydistill.evaluate.upstream import HubertUpstream
from raydistill.models.macs import count_params
from raydistill.prepare import Workdir
from raydistill.teacher.sources import Teacher
from raydistill.utils import atomic_write_text, log, stable_hash

NAMES = ("teacher", "random_init", "fbank")


class Baselines:
    def __init__(self, workdir: Workdir, corpus: Corpus, teacher: Teacher, tracker, budget: str, *,
                 device: str = "cpu", seed: int = 0):
        self.workdir, self.corpus, self.teacher, self.tracker = workdir, corpus, teacher, tracker
        self.budget, self.device, self.seed = budget, device, seed
        self.run_ids: dict[str, str] = {}  # reference name -> its MLflow run (logged ones)

    def references(self) -> dict:
        """The FBank and teacher scores (``superb_score``'s 0 and 1000), computed once per corpus."""
        return {name: self.score(name)[1] for name in ("fbank", "teacher")}

    def key(self, name: str, student: Optional[dict] = None) -> str:
        """The cache key of one reference. A random-init student is keyed by its initial weights,
        so trials that differ only in training settings (learning rate, loss weights, targets)
        share one score."""
        return self._keyed(name, student)[0]

    def _keyed(self, name: str, student: Optional[dict]) -> tuple[str, Optional[tuple]]:
        """(key, the random-init upstream and its size, built to key it; None for the others)."""
        built = None
        if name == "random_init":
            built = self._upstream(name, student)
            what = weights_digest(built[0].model)
        else:
            what = {"teacher": self.teacher.key, "fbank": "fbank-240"}[name]
        return stable_hash([name, what, self.corpus.key, self.budget, self.seed]), built

    def score(self, name: str, student: Optional[dict] = None) -> tuple[str, dict]:
        """(key, metrics) of one reference, from the cache or computed (then cached)."""
        key, built = self._keyed(name, student)
        cache = self.workdir.cache / "baselines" / f"{name}-{key}.json"
        if cache.is_file():
            return key, json.loads(cache.read_text())
        log(f"scoring the {name} reference ({self.budget} evaluation)")
        upstream, params = built or self._upstream(name, student)
        scores = evaluate_upstream(upstream, self.corpus, EvalBudget.named(self.budget),
                                   seed=self.seed, device=self.device, progress=True)
        metrics = {**score_metrics(scores), "params": params}
        atomic_write_text(cache, json.dumps(metrics))
        return key, metrics

    def log(self, name: str, *, student: Optional[dict] = None) -> dict:
        """Score (or read the cached score of) one reference, add its ``superb_score``, and log
        it to MLflow.

        ``student`` (random_init): the run configuration (``TrainConfig.to_dict()``) whose
        student is scored at its random initialisation.
        """
        key, metrics = self.score(name, student)
        metrics = {**metrics, **score_metrics(metrics, self.references())}
        if self.tracker is not None:
            self.run_ids[name] = self.tracker.log_baseline(name, key, metrics, {"corpus": self.corpus.key,
                                                                                "budget": self.budget,
                                                                                "teacher": self.teacher.spec})
        return metrics

    def _upstream(self, name: str, student: Optional[dict]):
        if name == "teacher":
            return HubertUpstream(self.teacher.model, name="teacher").to(self.device), count_params(self.teacher.model)
        if name == "fbank":
            return FBankUpstream(), 0
        config = TrainConfig.from_dict(student, where="random_init")
        model = student_model(config, self.teacher.info, seed=self.seed)
        return HubertUpstream(model, name="random_init").to(self.device), count_params(model)


def weights_digest(model: torch.nn.Module) -> str:
    """A digest of a model's parameters and buffers: names, shapes, dtypes and bytes."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]
