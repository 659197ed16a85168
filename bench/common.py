"""Helpers shared by the benchmarks: JSON-line output, peak memory, machine description."""

from __future__ import annotations

import json
import os
import platform
import sys
from pathlib import Path


def machine() -> dict:
    import torch

    info = {"python": platform.python_version(), "torch": torch.__version__, "cpus": os.cpu_count()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def peak_memory_mb(device="cpu") -> dict[str, float]:
    """raydistill's peak host (and CUDA) memory of this process, rounded for the JSON line."""
    from raydistill.utils import peak_memory

    return {k: round(v, 1) for k, v in peak_memory(device).items()}


def emit(record: dict) -> None:
    """One measurement = one JSON line on stdout (progress goes to stderr)."""
    print(json.dumps({**record, "machine": machine()}), flush=True)


def find_features(workdir: Path, layer: int) -> Path:
    """The embedded teacher's cached layer features in ``workdir`` (written by the main command),
    found through raydistill's own cache layout; exit 2 with a hint when they are not there."""
    from raydistill.corpus.manifest import INFO, Corpus
    from raydistill.corpus.synth import CorpusConfig
    from raydistill.prepare import Workdir, embedded_corpus_dir
    from raydistill.targets.store import store_root
    from raydistill.teacher.sources import load_teacher
    from raydistill.train.pretrain import EMBEDDED_TEACHER, teacher_dir

    wd = Workdir(workdir)
    corpus_dir = embedded_corpus_dir(wd, CorpusConfig.default())  # where the main command builds it
    checkpoint = None
    if (corpus_dir / INFO).is_file():
        corpus = Corpus.load(corpus_dir)
        checkpoint = teacher_dir(corpus, wd.cache, EMBEDDED_TEACHER) / "student.pt"
    if checkpoint is not None and checkpoint.is_file():
        teacher = load_teacher(f"raydistill:{checkpoint}")
        path = store_root(wd.cache, teacher.key, corpus.key) / f"layer{layer}" / "features.npy"
        if path.is_file():
            return path
    print(f"bench: no cached features of the embedded teacher's layer {layer} under {workdir}: "
          "run the main command first (README) or pass --features/--synthetic", file=sys.stderr)
    raise SystemExit(2)
