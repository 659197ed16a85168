"""The embedded teacher: a small HuBERT pretrained on the corpus (HuBERT iteration 1).

MFCC features -> k-means (K = 100) -> masked prediction of those units, with the same
loop that trains students. The result is cached under a key of (corpus, config) and
reused by every later search; an interrupted pretraining resumes from its last checkpoint.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from pathlib import Path

from raydistill.config import PRETRAIN, OptimConfig, TargetConfig, TrainConfig
from raydistill.corpus.manifest import Corpus
from raydistill.models.checkpoint import STATE_FILE, STUDENT_FILE
from raydistill.models.config import ARCHITECTURES
from raydistill.targets.store import TargetStore, store_root
from raydistill.teacher.mfcc import MfccSource
from raydistill.train.data import TrainData
from raydistill.train.loop import train
from raydistill.utils import log, stable_hash

# HuBERT iteration 1, scaled to minutes on 2 CPU cores. Two documented departures from the
# fairseq recipe, both measured on the embedded corpus (docs/embedded-default.md): the loss
# also covers unmasked frames (pred_nomask_weight 1; with masked frames only, 600 steps stay
# near chance), and the CNN gets full gradients (feature_grad_mult 1 instead of 0.1). The two
# sums are normalised each by its own frame count (nomask_norm "per_term", not fairseq's one
# count): the loss the cached teachers were trained with.
EMBEDDED_TEACHER = TrainConfig(
    method=PRETRAIN,
    student=ARCHITECTURES["tiny-teacher"],
    targets=TargetConfig(teacher_layer=0, num_clusters=100),  # layer 0 of the MFCC "source"
    optim=OptimConfig(lr=2e-3, max_steps=800, batch_seconds=24.0, warmup_frac=0.1, feature_grad_mult=1.0),
    nomask_weight=1.0,
    nomask_norm="per_term",
    eval_every=100,
)
SMOKE_TEACHER = dataclasses.replace(
    EMBEDDED_TEACHER,
    targets=TargetConfig(teacher_layer=0, num_clusters=20),
    optim=dataclasses.replace(EMBEDDED_TEACHER.optim, max_steps=30, batch_seconds=16.0),
    eval_every=10,
)


def _identity(config: TrainConfig) -> dict:
    """The config as the cache key sees it: speed-only options at their defaults, and later
    options at the value the earlier teachers were trained with, are left out, so adding such an
    option does not invalidate teachers pretrained before it existed."""
    d = config.to_dict()
    for name, default in (("precision", "auto"), ("compile", False)):
        if d["optim"].get(name) == default:
            del d["optim"][name]
    if d.get("nomask_norm") == "per_term":  # the loss of every teacher pretrained before the option
        del d["nomask_norm"]
    for name in ("frac", "frac_end"):  # masking by fraction: unused (0) by every teacher so far
        if d["mask"].get(name) == 0.0:
            del d["mask"][name]
    return d


def teacher_dir(corpus: Corpus, cache_dir: Path, config: TrainConfig, *, cmvn: bool = True) -> Path:
    """Where the embedded teacher pretrained on ``corpus`` with ``config`` is cached (it holds
    ``student.pt`` once pretrained)."""
    key = stable_hash([corpus.key, _identity(config), MfccSource(cmvn=cmvn).key])
    return Path(cache_dir) / "teacher" / f"embedded-{key}"


def pretrain_teacher(
    corpus: Corpus, cache_dir: Path, config: TrainConfig, *, cmvn: bool = True, device: str = "cpu"
) -> Path:
    """Return the path of the embedded teacher's checkpoint, pretraining it if not cached.

    ``cmvn``: normalise each utterance's MFCCs before k-means (see :mod:`raydistill.teacher.mfcc`).
    """
    source = MfccSource(cmvn=cmvn)
    final = teacher_dir(corpus, cache_dir, config, cmvn=cmvn)
    if (final / STUDENT_FILE).is_file():
        return final / STUDENT_FILE
    partial = final.with_name(final.name + ".partial")
    resume = partial if (partial / STATE_FILE).is_file() else None
    train_utts = corpus.split("train")
    store = TargetStore(store_root(cache_dir, source.key, corpus.key))
    # MFCCs are 39 numbers a frame: cached, so k-means and its labels read them (one pass)
    store.ensure(source, corpus, train_utts, [(0, config.targets.num_clusters)], layers=[0], seed=config.seed)
    data = TrainData(corpus, store, config.targets, config.student.conv_layers)
    log(
        f"pretraining the embedded teacher ({config.student.num_layers} layers x {config.student.embed_dim}, "
        f"{config.optim.max_steps} steps on {data.seconds / 60:.0f} min of audio)"
        + (" - resuming" if resume else "")
    )
    started = time.monotonic()

    def report(metrics: dict, _checkpoint) -> None:
        log(
            f"[teacher] step {metrics['step']}/{config.optim.max_steps} loss {metrics['loss']:.3f} "
            f"unit acc {metrics['unit_acc']:.3f} ({metrics['audio_seconds_per_second']:.1f} audio-s/s, "
            f"{time.monotonic() - started:.0f}s)"
        )

    train(config, data, report=report, checkpoint_dir=partial, resume=resume, device=device,
          teacher={"spec": source.key, "corpus": corpus.key})
    (partial / STATE_FILE).unlink()
    if final.exists():  # another process finished first
        shutil.rmtree(partial)
    else:
        partial.rename(final)
    log(f"embedded teacher ready in {time.monotonic() - started:.0f}s: {final / STUDENT_FILE}")
    return final / STUDENT_FILE
