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

The ``check_*`` functions look at the same inputs without writing anything: commands call
them first, so bad input fails in seconds and leaves nothing behind.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional
from urllib.parse import urlparse

import torch

from raydistill.corpus.manifest import MANIFEST, Corpus
from raydistill.corpus.synth import CorpusConfig, build_corpus
from raydistill.errors import UserError
from raydistill.targets.store import TargetStore, TeacherNeeds, store_root
from raydistill.teacher.info import TeacherInfo
from raydistill.teacher.sources import Teacher, load_teacher, parse_spec
from raydistill.tracking.mlflow import client_for
from raydistill.train.pretrain import EMBEDDED_TEACHER, SMOKE_TEACHER, pretrain_teacher
from raydistill.utils import log, one_line, stable_hash


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

    def check(self) -> "Workdir":
        """Fail with one line, writing nothing, if this could not be the workdir: a file, or
        under a file or a directory that cannot be written."""
        check_directory(self.root, "workdir")
        return self

    def check_writable(self) -> "Workdir":
        """Fail early, with one line, if results could not be written here."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=self.root, prefix=".write-test-"):
                pass
        except OSError as e:
            raise UserError(f"workdir {self.root} is not writable: {e.strerror or e}") from None
        return self


def check_directory(path: Path, what: str) -> None:
    """A UserError, writing nothing, unless ``path`` is a directory or could be created as one."""
    if path.exists() and not path.is_dir():
        raise UserError(f"{what} {path} is a file, not a directory")
    parent = path.absolute()
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise UserError(f"{what} {path} is not writable: {parent} is a file")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(f"{what} {path} is not writable: {parent} does not allow writing")


def check_corpus(spec: Optional[str]) -> Optional[Corpus]:
    """A UserError unless ``spec`` is the embedded corpus or a corpus directory with a train
    split; the corpus, loaded (None for the embedded one). Cheap (its manifest): run it before
    anything is written or started."""
    if spec in (None, "embedded"):
        return None
    if not isinstance(spec, (str, os.PathLike)):
        raise UserError(f"corpus must be 'embedded' or a directory, found {spec!r}")
    path = Path(spec)
    if not (path / MANIFEST).is_file():
        raise UserError(
            f"{path} is not a raydistill corpus (no {MANIFEST}); "
            "for a LibriSpeech-layout directory run `raydistill corpus librispeech` first"
        )
    corpus = Corpus.load(path)
    if not corpus.split("train"):
        raise UserError(f"corpus {path} has no train utterances")
    return corpus


def check_mlflow_uri(uri: str, *, existing: bool = False, connect: bool = True) -> None:
    """A UserError, before any store is created, unless MLflow can use ``uri``: a
    ``sqlite:///PATH`` database (``existing``: it must be there already), an ``http(s)://``
    tracking server that answers (asked only with ``connect``), a database URL whose driver is
    installed, or ``databricks``. (MLflow's file store takes no new runs, so a bare path is
    refused too.)"""
    if not uri or not uri.strip():
        raise UserError("--mlflow-uri is empty")
    scheme = urlparse(uri).scheme.split("+")[0]
    works = "use sqlite:///PATH/mlflow.db or an http(s):// tracking server"
    if scheme in ("", "file"):
        raise UserError(f"--mlflow-uri {uri}: MLflow's file store takes no new runs; {works}")
    if scheme in ("http", "https"):
        if connect:
            client_for(uri)  # a server that does not answer is refused now (nothing is written)
        return
    if scheme == "databricks":
        return
    if scheme not in ("sqlite", "postgresql", "mysql", "mssql"):
        raise UserError(f"--mlflow-uri {uri}: unknown scheme {scheme!r}; {works}")
    import sqlalchemy.engine

    try:
        sqlalchemy.engine.make_url(uri).get_dialect().import_dbapi()
    except ImportError as e:
        raise UserError(f"--mlflow-uri {uri}: the database driver is not installed ({e})") from None
    except Exception as e:
        raise UserError(f"--mlflow-uri {uri}: not a database URL ({one_line(e, None, first_line=True)})") from None
    if scheme != "sqlite":
        return
    if not uri.startswith("sqlite:///") or uri == "sqlite:///":
        raise UserError(f"--mlflow-uri {uri}: write a SQLite store as sqlite:///PATH (three slashes, then the path)")
    path = Path(uri[len("sqlite:///"):])
    if existing and not path.is_file():
        raise UserError(f"no MLflow store at {uri}: {path} does not exist")
    if path.exists() and not path.is_file():
        raise UserError(f"--mlflow-uri {uri}: {path} is not a file")
    if path.is_file() and path.stat().st_size > 0:
        with open(path, "rb") as f:
            if f.read(16) != b"SQLite format 3\x00":
                raise UserError(f"--mlflow-uri {uri}: {path} is not a SQLite database")
    check_directory(path.parent, f"--mlflow-uri {uri}: directory")


def masks_teacher_input(config) -> bool:
    """Whether a run of ``config`` feeds the teacher masked input (so it needs the teacher's
    trained mask embedding): ARMHuBERT's masking distillation."""
    return config.method == "armhubert" and config.arm.masking


def check_teacher(spec: str, *, smoke: bool, needs: Callable, masked: bool, what: str) -> Optional[Teacher]:
    """A UserError, before anything is written or started, unless the teacher ``spec`` serves
    the run: its spec and file, the layers and head ``needs(TeacherInfo)`` asks for, and, when
    the run feeds it masked input (``masked``), a trained mask embedding. A file teacher is
    loaded to check it and returned for reuse; the embedded one (None) is checked from its
    configuration: it is pretrained later by masked prediction, with its head."""
    if not isinstance(spec, str):
        raise UserError(f"teacher must be a spec such as 'embedded' or 'torchaudio:PATH', found {spec!r}")
    kind, _ = parse_spec(spec)
    if kind == "embedded":
        config = SMOKE_TEACHER if smoke else EMBEDDED_TEACHER
        teacher = None
        info = TeacherInfo(config.student.num_layers, config.student.embed_dim, config.targets.num_clusters)
        trained = True
    else:
        teacher = load_teacher(spec)
        info, trained = teacher.info, teacher.mask_embedding
    check_needs(needs(info), info.num_layers, info.num_classes > 0, spec)
    if masked and not trained:
        raise UserError(
            f"teacher {spec} has no trained mask embedding, but {what} runs it on masked input (masking "
            "distillation): use a hubert_pretrain_* state dict, a Hugging Face checkpoint that holds "
            f"masked_spec_embed, or give the embedding as --teacher '{spec}?mask_emb=FILE'")
    return teacher


def check_needs(needs: TeacherNeeds, teacher_layers: int, has_head: bool, spec: str) -> None:
    """A UserError if a run asks the teacher for a layer it lacks, or for logits without a head."""
    for layer in needs.layers:
        if layer > teacher_layers:
            raise UserError(f"teacher layer {layer} does not exist: the teacher has {teacher_layers} layers")
    if needs.logits and not has_head:
        raise UserError(f"teacher {spec} has no pre-training head: logit distillation (kd) "
                        "needs a checkpoint with final_proj and label embeddings, or one given with ?head=FILE")


def embedded_corpus_dir(workdir: Workdir, config) -> Path:
    """Where the embedded corpus of ``config`` lives: one directory per config, so a changed
    default builds a new corpus beside the old one instead of clashing with it."""
    return workdir.corpora / f"{config.name}-{stable_hash(config.identity(), 8)}"


def resolve_corpus(spec: Optional[str], workdir: Workdir, *, smoke: bool = False,
                   checked: Optional[Corpus] = None) -> Corpus:
    """``None``/``embedded``: synthesise (once) the embedded corpus; otherwise a corpus directory.
    ``checked``: what :func:`check_corpus` already loaded for ``spec`` (not read again)."""
    if checked is not None:
        return checked
    if spec in (None, "embedded"):
        config = CorpusConfig.smoke() if smoke else CorpusConfig.default()
        return build_corpus(config, embedded_corpus_dir(workdir, config))
    return check_corpus(spec)


def resolve_teacher(spec: str, workdir: Workdir, corpus: Corpus, *, smoke: bool = False, device: str = "cpu",
                    checked: Optional[Teacher] = None) -> Teacher:
    """Load the teacher; ``embedded`` pretrains the small HuBERT on ``corpus`` first (cached).
    ``checked``: what :func:`check_teacher` already loaded for ``spec`` (not loaded again)."""
    if checked is not None:
        return checked
    kind, _ = parse_spec(spec)
    if kind != "embedded":
        return load_teacher(spec)
    path = pretrain_teacher(corpus, workdir.cache, SMOKE_TEACHER if smoke else EMBEDDED_TEACHER, device=device)
    teacher = load_teacher(f"raydistill:{path}")
    teacher.spec = "embedded"  # what the user asked for; teacher.source still loads it
    return teacher


def ensure_targets(
    teacher: Teacher, corpus: Corpus, workdir: Workdir, needs: TeacherNeeds, *, device: str = "cpu",
    distributed: bool = False, gpus: Optional[bool] = None,
) -> TargetStore:
    """The teacher's targets of the train split that trials read: k-means units for every
    (layer, K) in ``needs.units``, features of ``needs.features``, logits if asked.
    ``distributed``: the teacher pass runs as Ray tasks over shards (``targets/teacher_pass.py``),
    each on one GPU if ``gpus`` (default: if the cluster has GPUs)."""
    check_needs(needs, teacher.num_layers, teacher.head is not None, teacher.spec)
    train = corpus.split("train")
    if not train:
        raise UserError(f"corpus {corpus.root} has no train utterances")
    store = TargetStore(store_root(workdir.cache, teacher.key, corpus.key))
    missing = [c for c in needs.units if not store.has_kmeans(*c)]
    missing_layers = [layer for layer in needs.cached_layers if not store.has_layer(layer)]
    if missing or missing_layers or not (store.root / "index.json").is_file():
        if missing or missing_layers:
            log(f"computing teacher targets: (layer, K) = {missing}, features {missing_layers} "
                "(once; every trial reads the cache)")
        teacher.to(device)
        store.ensure(teacher, corpus, train, needs.units, layers=needs.cached_layers, device=device,
                     distributed=distributed, gpus=gpus)
        teacher.to("cpu")
    return store


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() and os.environ.get("CUDA_VISIBLE_DEVICES", "x") != "" else "cpu"


UNITS = ("B", "KB", "MB", "GB", "TB", "PB")


def human_bytes(n: float) -> str:
    for unit in UNITS:
        if abs(n) < 1000 or unit == UNITS[-1]:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} PB"


def parse_bytes(text: str, what: str = "--cache-budget") -> int:
    """``500G``, ``1.5T``, ``800GB``, ``10000000`` -> bytes (decimal units, as disks are sold)."""
    s = str(text).strip().upper().removesuffix("B")
    scale = 1
    for i, unit in enumerate("KMGTP", start=1):
        if s.endswith(unit):
            s, scale = s[:-1], 1000 ** i
            break
    try:
        value = float(s)
    except ValueError:
        raise UserError(f"{what} {text!r}: write a size such as 500G, 1.5T or 800GB") from None
    if not value >= 0:
        raise UserError(f"{what} {text!r}: must be >= 0")
    return int(value * scale)


def available_bytes(path: Path) -> int:
    """Free bytes on the file system that holds (or will hold) ``path``."""
    path = Path(path).absolute()
    while not path.exists():
        path = path.parent
    return shutil.disk_usage(path).free
