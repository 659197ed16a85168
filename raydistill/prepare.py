"""Everything a search or a training run needs before its first step.

Workdir layout (``--workdir``, default ``./runs``)::

    corpora/<name>-<hash>/     synthesised corpora, one per config (manifest.jsonl, corpus.json, audio/)
    cache/teacher/             the embedded teacher's checkpoint, per (corpus, config)
    cache/targets/             teacher features + k-means units, per (teacher, corpus)
    cache/baselines/           scores of the teacher / FBank / random-init references
    ray_results/               Ray Tune and Ray Train state (checkpoints; what --resume reads)
    mlflow.db, mlartifacts/    the default MLflow tracking store (SQLite) and its artifacts
    optuna.db                  the Optuna studies (one per search)

Each stage is cached under a content key, so a rerun reuses the corpus, the teacher and
the targets, and changing any input recomputes only what depends on it.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from raydistill.corpus.manifest import MANIFEST, Corpus
from raydistill.errors import UserError
from raydistill.targets.store import TargetStore, TeacherNeeds, store_root
from raydistill.teacher.sources import Teacher, load_teacher, parse_spec
from raydistill.utils import log, stable_hash


@dataclass(frozen=True)
class Workdir:
    root: Path

    def __post_init__(self):
        object.__setattr__(self, "root", Path(self.root).expanduser().resolve())

    @property
    def corpora(self) -> Path:
        return self.root / "corpora"

    @property
    def cache(self) -> Path:
        return self.root / "cache"

    @property
    def ray_results(self) -> Path:
        return self.root / "ray_results"

    @property
    def mlflow_uri(self) -> str:
        return f"sqlite:///{self.root / 'mlflow.db'}"

    @property
    def mlflow_artifacts(self) -> Path:
        return self.root / "mlartifacts"

    @property
    def optuna_uri(self) -> str:
        return f"sqlite:///{self.root / 'optuna.db'}"

    def check_writable(self) -> "Workdir":
        """Fail early, with one line, if results could not be written here."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=self.root, prefix=".write-test-"):
                pass
        except OSError as e:
            raise UserError(f"workdir {self.root} is not writable: {e.strerror or e}") from None
        return self


def check_corpus(spec: Optional[str]) -> None:
    """A UserError unless ``spec`` is the embedded corpus or a corpus directory (cheap: run it
    before anything is written or started)."""
    if spec in (None, "embedded"):
        return
    path = Path(spec)
    if not (path / MANIFEST).is_file():
        raise UserError(
            f"{path} is not a raydistill corpus (no {MANIFEST}); "
            "for a LibriSpeech-layout directory run `raydistill corpus librispeech` first"
        )


def embedded_corpus_dir(workdir: Workdir, config) -> Path:
    """Where the embedded corpus of ``config`` lives: one directory per config, so a changed
    default builds a new corpus beside the old one instead of clashing with it."""
    return workdir.corpora / f"{config.name}-{stable_hash(config.identity(), 8)}"


def resolve_corpus(spec: Optional[str], workdir: Workdir, *, smoke: bool = False) -> Corpus:
    """``None``/``embedded``: synthesise (once) the embedded corpus; otherwise a corpus directory."""
    if spec in (None, "embedded"):
        from raydistill.corpus.synth import CorpusConfig, build_corpus

        config = CorpusConfig.smoke() if smoke else CorpusConfig.default()
        return build_corpus(config, embedded_corpus_dir(workdir, config))
    check_corpus(spec)
    return Corpus.load(Path(spec))


def resolve_teacher(spec: str, workdir: Workdir, corpus: Corpus, *, smoke: bool = False, device: str = "cpu") -> Teacher:
    """Load the teacher; ``embedded`` pretrains the small HuBERT on ``corpus`` first (cached)."""
    kind, _ = parse_spec(spec)
    if kind != "embedded":
        return load_teacher(spec)
    from raydistill.train.pretrain import EMBEDDED_TEACHER, SMOKE_TEACHER, pretrain_teacher

    path = pretrain_teacher(corpus, workdir.cache, SMOKE_TEACHER if smoke else EMBEDDED_TEACHER, device=device)
    teacher = load_teacher(f"raydistill:{path}")
    teacher.spec = "embedded"  # what the user asked for; teacher.source still loads it
    return teacher


def ensure_targets(
    teacher: Teacher, corpus: Corpus, workdir: Workdir, needs: TeacherNeeds, *, device: str = "cpu"
) -> TargetStore:
    """The teacher's targets of the train split that trials read: k-means units for every
    (layer, K) in ``needs.units``, features of ``needs.features``, logits if asked."""
    for layer in needs.cached_layers:
        if layer > teacher.num_layers:
            raise UserError(f"teacher layer {layer} does not exist: the teacher has {teacher.num_layers} layers")
    if needs.logits and teacher.head is None:
        teacher.logits(None)  # the one-line error: no pre-training head
    train = corpus.split("train")
    if not train:
        raise UserError(f"corpus {corpus.root} has no train utterances")
    store = TargetStore(store_root(workdir.cache, teacher.key, corpus.key))
    missing = [c for c in needs.units if not store.has_kmeans(*c)]
    missing_layers = [layer for layer in needs.cached_layers if not store.has_layer(layer)]
    if missing or missing_layers:
        log(f"computing teacher targets: (layer, K) = {missing}, features {missing_layers} "
            "(once; every trial reads the cache)")
        teacher.to(device)
        store.ensure(teacher, corpus, train, needs.units, layers=needs.cached_layers, device=device)
        teacher.to("cpu")
    return store


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() and os.environ.get("CUDA_VISIBLE_DEVICES", "x") != "" else "cpu"
