"""Teacher targets computed once per search, cached on disk, memory-mapped by every trial.

Layout of one store (one source of features × one corpus)::

    <root>/index.json                 utterance ids, frame offsets/counts, source description
    <root>/layer<L>/features.npy      float16 [total_frames, D]: hidden state L of every frame
    <root>/layer<L>/k<K>/centroids.npy  float32 [K, D]
    <root>/layer<L>/k<K>/labels.npy     int32 [total_frames]: nearest centroid (hard labels)
    <root>/layer<L>/k<K>/info.json      inertia, fit time, seed
    <root>/logits/features.npy        float32 [total_frames, C]: the teacher's pre-training logits

``<root>`` is named after the key (source, corpus), so a store is valid for exactly one
teacher and one corpus; layer and K are directories inside it. Every directory is written
under a temporary name and renamed into place, so a crash never leaves a half-written
cache and a rerun picks up whatever finished. Trials open the ``.npy`` files with
``mmap_mode="r"``: the OS shares the pages between trials instead of each loading a copy.
"""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, Sequence

import numpy as np
import torch
from torch import Tensor

from raydistill.corpus.manifest import Corpus, Utterance
from raydistill.targets.kmeans import assign, fit_kmeans
from raydistill.utils import Progress, atomic_dir, atomic_write_text, log


LOGITS = -1  # pseudo-layer: the teacher's pre-training head logits (cos/0.1 over its C units)


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
        """Every array the cache must hold (units need their layer's features for k-means)."""
        layers = set(self.features) | {layer for layer, _ in self.units}
        return tuple(sorted(layers)) + ((LOGITS,) if self.logits else ())


class FeatureSource(Protocol):
    """Frame features of some layers for a batch of audio (a frozen teacher, or MFCCs)."""

    key: str  # identifies the source (e.g. teacher weights hash); part of the cache key

    def frames(self, num_samples: int) -> int:
        """Frames the source yields for ``num_samples`` samples (known before running it)."""

    def layer_features(self, wave: Tensor, lengths: Tensor, layers: Sequence[int]) -> tuple[dict[int, Tensor], Tensor]:
        """wave [B, S], lengths [B] -> ({layer: [B, T, D]}, frame lengths [B])."""


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
    ) -> "TargetStore":
        """Compute whatever is missing: one pass of the source over the audio for all missing
        layers (those of ``layers_and_ks`` plus ``layers``, which may include ``LOGITS``),
        then one k-means per missing (layer, K)."""
        if (self.root / "index.json").is_file():
            ids = self.index["ids"]
            if ids != [u.id for u in utterances]:
                raise RuntimeError(f"target cache {self.root} was built for other utterances")
        wanted = {layer for layer, _ in layers_and_ks} | set(layers)
        missing_layers = sorted(layer for layer in wanted if not self.has_layer(layer))
        if missing_layers:
            self._extract(source, corpus, utterances, missing_layers, device)
        for layer, k in sorted(set(layers_and_ks)):
            if not self.has_kmeans(layer, k):
                self._kmeans(layer, k, seed)
        return self

    def _extract(self, source, corpus, utterances, layers, device) -> None:
        """One pass of ``source`` over the audio, writing every missing layer to a memmap.

        Utterances go one at a time: HuBERT's CNN GroupNorm makes padded batches differ
        from single utterances, and a target must not depend on its batch-mates.
        """
        frames = np.array([source.frames(u.num_samples) for u in utterances], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(frames)])
        started = time.monotonic()
        names = ", ".join("logits" if layer == LOGITS else str(layer) for layer in layers)
        progress = Progress(f"teacher features (layers {names})", len(utterances), " utts")
        with contextlib.ExitStack() as stack:
            tmp = {layer: stack.enter_context(atomic_dir(self._layer_dir(layer))) for layer in layers}
            out: dict[int, np.ndarray] = {}
            for i, utt in enumerate(utterances):
                wave = torch.from_numpy(corpus.load_audio(utt))[None].to(device)
                feats, flen = source.layer_features(wave, torch.tensor([wave.shape[1]], device=device), layers)
                if int(flen[0]) != frames[i]:
                    raise RuntimeError(f"{source.key} gave {int(flen[0])} frames for {utt.id}, expected {frames[i]}")
                for layer in layers:
                    x = feats[layer][0].float().cpu().numpy()
                    if layer not in out:
                        # features in float16 (k-means and feature targets); logits exact, float32
                        dtype = np.float32 if layer == LOGITS else np.float16
                        out[layer] = np.lib.format.open_memmap(
                            tmp[layer] / "features.npy", mode="w+", dtype=dtype, shape=(int(offsets[-1]), x.shape[1])
                        )
                    out[layer][offsets[i] : offsets[i + 1]] = x
                progress.update()
            for array in out.values():
                array.flush()
            del out
        if not (self.root / "index.json").is_file():
            index = {
                "ids": [u.id for u in utterances],
                "offsets": offsets[:-1].tolist(),
                "frames": frames.tolist(),
                "source": source.key,
                "corpus": corpus.key,
            }
            atomic_write_text(self.root / "index.json", json.dumps(index))
        log(f"features of layers {names}: {int(offsets[-1])} frames in {time.monotonic() - started:.1f}s")

    def _kmeans(self, layer: int, k: int, seed: int) -> None:
        started = time.monotonic()
        feats = self.features(layer)
        centroids, inertia = fit_kmeans(feats, k, seed=seed)
        labels = assign(feats, centroids).astype(np.int32)
        seconds = time.monotonic() - started
        with atomic_dir(self._kdir(layer, k)) as tmp:
            np.save(tmp / "centroids.npy", centroids)
            np.save(tmp / "labels.npy", labels)
            info = {"inertia": inertia, "seconds": seconds, "seed": seed, "frames": int(len(labels))}
            (tmp / "info.json").write_text(json.dumps(info))
        usage = np.bincount(labels, minlength=k)
        log(f"k-means layer {layer} K={k}: inertia {inertia:.3f}, {int((usage > 0).sum())}/{k} units used, {seconds:.1f}s")


def store_root(cache_dir: Path, source_key: str, corpus_key: str) -> Path:
    return Path(cache_dir) / "targets" / f"{source_key}-{corpus_key}"
