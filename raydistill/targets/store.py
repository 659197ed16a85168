"""Teacher targets computed once per search, cached on disk, memory-mapped by every trial.

Layout of one store (one source of features × one corpus)::

    <root>/index.json                 utterance ids, frame offsets/counts, source description
    <root>/layer<L>/features.npy      float16 [total_frames, D]: hidden state L of every frame
    <root>/layer<L>/k<K>/centroids.npy  float32 [K, D]
    <root>/layer<L>/k<K>/labels.npy     int32 [total_frames]: nearest centroid (hard labels)
    <root>/layer<L>/k<K>/info.json      inertia, fit time, seed
    <root>/logits/features.npy        float32 [total_frames, C]: the teacher's pre-training logits
    <root>/samples/layer<L>.npy       float16 [~120k, D]: k-means sample of a layer not cached
    <root>/.pass-<hash>/              a teacher pass under way (targets/teacher_pass.py); kept
                                      across a killed driver, removed once its outputs are in place

``<root>`` is named after the key (source, corpus), so a store is valid for exactly one
teacher and one corpus; layer and K are directories inside it. Every array is written
under a temporary name and renamed into place, so a crash never leaves a half-written
cache and a rerun picks up whatever finished (a pass, its finished shards). Units need no
cached features: their layer is sampled in the pass, k-means fits on the sample and a second
pass assigns every frame (docs/real-scale.md). Trials open the ``.npy`` files with
``mmap_mode="r"``: the OS shares the pages between trials instead of each loading a copy.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Protocol, Sequence

import numpy as np
from torch import Tensor

from raydistill.corpus.manifest import Corpus, Utterance
from raydistill.targets.kmeans import assign, fit_kmeans
from raydistill.teacher.sources import LOGITS
from raydistill.utils import atomic_dir, atomic_write_text, disk_guard, log, save_npy, stable_hash


KMEANS_POINTS = 100_000  # frames k-means fits on (HuBERT's recipe fits on a 10 % subset of its frames)


@dataclass(frozen=True)
class TeacherNeeds:
    """What trials read from the teacher: k-means units, cached features, logits, or the live model."""

    units: tuple[tuple[int, int], ...] = ()  # (layer, K) pairs of k-means labels
    features: tuple[int, ...] = ()  # hidden-state indices whose features are cached (and read)
    logits: bool = False  # the pre-training head's logits
    live: bool = False  # trials run the teacher themselves (masked input, attention maps, live mode)

    def __or__(self, other: "TeacherNeeds") -> "TeacherNeeds":
        return TeacherNeeds(
            units=tuple(sorted(set(self.units) | set(other.units))),
            features=tuple(sorted(set(self.features) | set(other.features))),
            logits=self.logits or other.logits,
            live=self.live or other.live,
        )

    @property
    def cached_layers(self) -> tuple[int, ...]:
        """The arrays of features the cache holds for trials to read (``LOGITS``: the logits).
        Units need no features cached: k-means fits on a sample drawn in the teacher pass."""
        return tuple(sorted(self.features)) + ((LOGITS,) if self.logits else ())

    @property
    def layers(self) -> tuple[int, ...]:
        """Every hidden state read: of features or of units."""
        return tuple(sorted(set(self.features) | {layer for layer, _ in self.units}))


class FeatureSource(Protocol):
    """Frame features of some layers for a batch of audio (a frozen teacher, or MFCCs)."""

    key: str  # identifies the source (e.g. teacher weights hash); part of the cache key

    def frames(self, num_samples: int) -> int:
        """Frames the source yields for ``num_samples`` samples (known before running it)."""

    def layer_features(self, wave: Tensor, lengths: Tensor, layers: Sequence[int]) -> tuple[dict[int, Tensor], Tensor]:
        """wave [B, S], lengths [B] -> ({layer: [B, T, D]}, frame lengths [B])."""

    def dim(self, layer: int) -> int:
        """Width of ``layer``'s features (``LOGITS``: the number of units)."""


@dataclass(frozen=True)
class TargetStore:
    root: Path

    # ---------------------------------------------------------------- reading
    @property
    def index(self) -> dict:
        return json.loads((self.root / "index.json").read_text())

    def utterance_slices(self) -> dict[str, tuple[int, int]]:
        """utt id -> (first frame, number of frames) in the flat per-frame arrays."""
        idx = self.index
        return {u: (o, n) for u, o, n in zip(idx["ids"], idx["offsets"], idx["frames"])}

    def has_layer(self, layer: int) -> bool:
        return (self._layer_dir(layer) / "features.npy").is_file()

    def has_kmeans(self, layer: int, k: int) -> bool:
        return (self._kdir(layer, k) / "labels.npy").is_file()

    def features(self, layer: int) -> np.ndarray:
        """[total_frames, D] memory-mapped (``LOGITS``: the teacher's logits)."""
        return np.load(self._layer_dir(layer) / "features.npy", mmap_mode="r")

    def labels(self, layer: int, k: int) -> np.ndarray:
        return np.load(self._kdir(layer, k) / "labels.npy", mmap_mode="r")

    def centroids(self, layer: int, k: int) -> np.ndarray:
        return np.load(self._kdir(layer, k) / "centroids.npy")

    def _layer_dir(self, layer: int) -> Path:
        return self.root / ("logits" if layer == LOGITS else f"layer{layer}")

    def _kdir(self, layer: int, k: int) -> Path:
        return self._layer_dir(layer) / f"k{k}"

    def has_sample(self, layer: int) -> bool:
        return (self.root / "samples" / f"layer{layer}.npy").is_file()

    def sample(self, layer: int) -> np.ndarray:
        """The k-means sample of ``layer``: a bounded random subset of its frames [N, D] float16."""
        return np.load(self.root / "samples" / f"layer{layer}.npy")

    # ---------------------------------------------------------------- building
    def ensure(
        self,
        source: FeatureSource,
        corpus: Corpus,
        utterances: Sequence[Utterance],
        layers_and_ks: Sequence[tuple[int, int]],
        *,
        layers: Sequence[int] = (),
        seed: int = 0,
        device: str = "cpu",
        batch_seconds: Optional[float] = None,
        shard_seconds: Optional[float] = None,
        cpus: float = 1.0,
        max_workers: Optional[int] = None,
        max_points: int = KMEANS_POINTS,
        distributed: bool = False,
        gpus: Optional[bool] = None,
    ) -> "TargetStore":
        """Compute whatever is missing, in at most two passes of the teacher over the audio
        (``targets/teacher_pass.py``: Ray tasks over shards when Ray is up, else here):

        1. features of the missing ``layers`` (which may include ``LOGITS``), and a bounded
           k-means sample of every layer whose units are missing;
        2. k-means per missing (layer, K) on that sample; labels of every frame from the
           cached features in chunks, or — for a layer not cached — from a second pass that
           assigns them as the teacher computes the layer.

        ``distributed``: the passes run as Ray tasks (Ray initialised, a :class:`Teacher` that a
        task can load from its spec, a corpus and cache every node sees); else in this process.
        """
        index = self._index(source, corpus, utterances)
        total = int(sum(index["frames"]))
        missing_layers = sorted(layer for layer in set(layers) if not self.has_layer(layer))
        missing_units = sorted(c for c in set(layers_and_ks) if not self.has_kmeans(*c))
        # units of a layer that is not cached: k-means fits on a sample drawn in the pass
        sampled = sorted({layer for layer, _ in missing_units if layer not in missing_layers
                          and not self.has_layer(layer) and not self.has_sample(layer)})
        pass_args = dict(source=source, corpus=corpus, utterances=utterances, index=index, device=device,
                         batch_seconds=batch_seconds, shard_seconds=shard_seconds, cpus=cpus,
                         max_workers=max_workers, seed=seed, distributed=distributed, gpus=gpus)
        if missing_layers or sampled:
            prob = min(1.0, 1.2 * max_points / max(total, 1))
            self._pass(layers=tuple(missing_layers), sample_layers=tuple(sampled), sample_prob=prob, **pass_args)
        live_units = []
        for layer, k in missing_units:
            started = time.monotonic()
            cached = self.has_layer(layer)
            # a cached layer's memmap is subsampled by row (never read whole); else the pass's sample
            x = self.features(layer) if cached else self.sample(layer)
            centroids, inertia = fit_kmeans(x, k, seed=seed, max_points=max_points)
            info = {"inertia": inertia, "seed": seed, "frames": total, "fit_frames": int(min(len(x), max_points))}
            if cached:
                with atomic_dir(self._kdir(layer, k)) as tmp:
                    labels = np.lib.format.open_memmap(tmp / "labels.npy", mode="w+", dtype=np.int32, shape=(total,))
                    reserve(tmp / "labels.npy")
                    assign(x, centroids, out=labels)
                    labels.flush()
                    del labels
                    self._write_kmeans(tmp, centroids, {**info, "seconds": time.monotonic() - started})
                log(f"k-means layer {layer} K={k}: inertia {inertia:.3f}, {time.monotonic() - started:.1f}s")
            else:
                live_units.append((layer, k, centroids, info))
        if live_units:  # layers not cached: a second teacher pass assigns their units
            self._pass(units=tuple((layer, k) for layer, k, _, _ in live_units),
                       centroids={(layer, k): (c, info) for layer, k, c, info in live_units}, **pass_args)
        if not (self.root / "index.json").is_file():  # trials that read nothing cached still need the index
            atomic_write_text(self.root / "index.json", json.dumps(index))
        return self

    def _index(self, source: FeatureSource, corpus: Corpus, utterances: Sequence[Utterance]) -> dict:
        """The store's index (ids, frame offsets and counts), checked against an existing one."""
        frames = [source.frames(u.num_samples) for u in utterances]
        index = {"ids": [u.id for u in utterances], "offsets": np.concatenate([[0], np.cumsum(frames)])[:-1].tolist(),
                 "frames": frames, "source": source.key, "corpus": corpus.key}
        if (self.root / "index.json").is_file() and self.index["ids"] != index["ids"]:
            raise RuntimeError(f"target cache {self.root} was built for other utterances")
        return index

    def _pass(self, *, source, corpus, utterances, index, device, batch_seconds, shard_seconds, cpus, max_workers,
              seed, distributed, gpus, layers=(), sample_layers=(), sample_prob=1.0, units=(), centroids=None) -> None:
        """One teacher pass (resumable: its directory keeps finished shards), then its outputs
        renamed into the store."""
        from raydistill.targets import teacher_pass as tp  # lazy: the pass is a Ray program; reading a built store needs none of it

        seconds = [u.num_samples / 16000 for u in utterances]
        # default: 10-600 s of audio a shard, at least 64 shards below 10 h (work for every worker)
        shard_seconds = shard_seconds or min(600.0, max(10.0, sum(seconds) / 64))
        what = {"layers": list(layers), "sample_layers": list(sample_layers), "units": [list(u) for u in units],
                "batch_seconds": batch_seconds, "seed": seed, "sample_prob": sample_prob,
                "shard_seconds": shard_seconds}  # a resumed pass must cut the same shards
        out = self.root / f".pass-{stable_hash(what, 10)}"
        for stale in self.root.glob(".pass-*"):  # an interrupted pass of other needs: not resumable here
            if stale != out:
                shutil.rmtree(stale, ignore_errors=True)
        spec = tp.PassSpec(source=getattr(source, "source", source.key), corpus_dir=str(corpus.root), out=str(out),
                           layers=tuple(layers), sample_layers=tuple(sample_layers), sample_prob=sample_prob,
                           units=tuple(units), batch_seconds=batch_seconds, seed=seed)
        dims = {layer: source.dim(layer) for layer in layers}
        extra = {tp.centroids_name(*u): c for u, (c, _) in (centroids or {}).items()}
        tp.prepare(spec, index, dims, extra)
        shards = tp.make_shards(seconds, shard_seconds)
        names = ", ".join(["logits" if x == LOGITS else f"layer {x}" for x in layers]
                          + [f"sample of layer {x}" for x in sample_layers] + [f"units l{a} K{b}" for a, b in units])
        stats = tp.run_pass(spec, shards, seconds, teacher=source, corpus=corpus, device=device, cpus=cpus,
                            max_workers=max_workers, label=f"teacher pass ({names})",
                            distributed=distributed, gpus=gpus)
        # every shard is done: move the outputs into the store
        # every shard is done: rename the outputs into the store (files: a layer's directory
        # may already hold the units of that layer)
        for layer in layers:
            self._layer_dir(layer).mkdir(parents=True, exist_ok=True)
            os.replace(out / tp.output_name(layer), self._layer_dir(layer) / "features.npy")
        for layer in sample_layers:
            save_npy(self.root / "samples" / f"layer{layer}.npy", tp.collect_samples(out, layer))
        for layer, k in units:
            _, info = centroids[(layer, k)]
            with atomic_dir(self._kdir(layer, k)) as tmp:
                os.replace(out / tp.units_name(layer, k), tmp / "labels.npy")
                # the centroids the shards assigned with: a resumed pass keeps the first fit's file
                self._write_kmeans(tmp, np.load(out / tp.centroids_name(layer, k)),
                                   {**info, "assigned": "in the teacher pass"})
        if not (self.root / "index.json").is_file():
            atomic_write_text(self.root / "index.json", json.dumps(index))
        shutil.rmtree(out, ignore_errors=True)
        log(f"teacher pass ({names}): {stats.seconds:.0f} audio-s in {stats.wall:.1f}s "
            f"({stats.speed:.0f} audio-s/s, {stats.workers} worker(s), {stats.shards} shards run, {stats.skipped} resumed)")

    @staticmethod
    def _write_kmeans(folder: Path, centroids: np.ndarray, info: dict) -> None:
        save_npy(folder / "centroids.npy", centroids)
        atomic_write_text(folder / "info.json", json.dumps(info))


def reserve(path: Path) -> None:
    """Allocate the whole of a (sparse) file about to be written through a memory map: a page
    written into a full disk kills the process (SIGBUS); a full disk here is a one-line error."""
    with disk_guard(path, path.stat().st_size), open(path, "r+b") as f:
        try:
            os.posix_fallocate(f.fileno(), 0, path.stat().st_size)
        except OSError as e:  # a file system that cannot allocate ahead: write as before
            if e.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
                raise


def store_root(cache_dir: Path, source_key: str, corpus_key: str) -> Path:
    return Path(cache_dir) / "targets" / f"{source_key}-{corpus_key}"
