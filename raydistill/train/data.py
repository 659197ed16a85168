"""Training batches: audio from the corpus, frame-aligned targets from the memory-mapped cache.

Batches are length-bucketed and every utterance of a batch is cropped to the batch's
shortest one (as fairseq/torchaudio HuBERT do), so training never sees padding. Crops
start on frame boundaries (multiples of the CNN stride), which keeps the cached
per-frame targets of the full utterance aligned with the student's frames.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Optional

import numpy as np
import torch
from torch import Tensor

from raydistill.config import TargetConfig
from raydistill.corpus.manifest import Corpus, Utterance
from raydistill.models.config import ConvLayers, conv_frames
from raydistill.targets.store import LOGITS, TargetStore, TeacherNeeds


@dataclass
class Batch:
    wave: Tensor  # [B, S] equal-length crops
    labels: Optional[Tensor]  # [B, T] int64 hard unit ids (methods that need units), else None
    features: dict[int, Tensor]  # {layer: [B, T, D]} cached teacher features (LOGITS: logits)
    seconds: float  # audio seconds in the batch


class TrainData:
    """The training split with the cached teacher targets a run reads.

    ``needs`` says which: the k-means units of (at most) one (layer, K), features of some
    layers, the teacher's logits. A :class:`TargetConfig` stands for DiceHuBERT's needs
    (its units, plus its layer's features for soft labels).
    """

    def __init__(self, corpus: Corpus, store: TargetStore, needs: TeacherNeeds | TargetConfig, conv_layers: ConvLayers):
        self.corpus = corpus
        by_id = {u.id: u for u in corpus.utterances}
        slices = store.utterance_slices()
        self.utterances: list[Utterance] = [by_id[i] for i in store.index["ids"]]
        self.slices = [slices[u.id] for u in self.utterances]
        self.stride = 1
        for _, _, s in conv_layers:
            self.stride *= s
        for utt, (_, frames) in zip(self.utterances[:50], self.slices[:50]):
            if conv_frames(utt.num_samples, conv_layers) != frames:
                raise ValueError(
                    f"the student's CNN gives {conv_frames(utt.num_samples, conv_layers)} frames for {utt.id} "
                    f"but the cached targets have {frames}: student and teacher must share the frame rate"
                )
        self.conv_layers = conv_layers
        if isinstance(needs, TargetConfig):
            needs = TeacherNeeds(units=((needs.teacher_layer, needs.num_clusters),),
                                 features=(needs.teacher_layer,) if needs.labels == "soft" else ())
        if len(needs.units) > 1:
            raise ValueError(f"a run reads the units of one (layer, K), found {list(needs.units)}")
        self.needs = needs
        self.labels = store.labels(*needs.units[0]) if needs.units else None
        self.num_classes = needs.units[0][1] if needs.units else 0
        self.centroids = torch.from_numpy(store.centroids(*needs.units[0])) if needs.units else None
        layers = needs.features + ((LOGITS,) if needs.logits else ())
        self.features = {layer: store.features(layer) for layer in layers}

    def __len__(self) -> int:
        return len(self.utterances)

    @property
    def seconds(self) -> float:
        return sum(u.seconds for u in self.utterances)

    def epoch_batches(
        self, batch_seconds: float, max_seconds: float, *, seed: int, epoch: int, rank: int = 0, world: int = 1
    ) -> list[list[int]]:
        """This rank's batches of utterance indices for one epoch.

        Lengths get a little noise before sorting so buckets differ between epochs; each
        batch holds as many utterances as fit ``batch_seconds`` once cropped to its shortest
        member (capped at ``max_seconds``). Every rank gets the same number of batches.
        """
        rng = np.random.default_rng([seed, epoch])
        lengths = np.array([u.num_samples for u in self.utterances], dtype=np.float64)
        order = np.argsort(lengths * rng.uniform(0.9, 1.1, len(lengths)), kind="stable")
        budget = batch_seconds * 16_000
        cap = max_seconds * 16_000
        batches, current, shortest = [], [], None
        for i in order:
            n = min(lengths[i], cap)
            short = n if shortest is None else min(shortest, n)
            if current and (len(current) + 1) * short > budget:
                batches.append(current)
                current, short = [], n
            current.append(int(i))
            shortest = short
        if current:
            batches.append(current)
        rng.shuffle(batches)
        per_rank = len(batches) // world
        if per_rank == 0:
            raise ValueError(f"only {len(batches)} batches for {world} workers: lower batch_seconds or add data")
        return batches[rank * per_rank : (rank + 1) * per_rank]

    def load(self, indices: list[int], max_seconds: float, rng: np.random.Generator) -> Batch:
        """Crop the utterances to a common length (on frame boundaries) and gather their targets."""
        stride = self.stride
        length = min(min(self.utterances[i].num_samples for i in indices), int(max_seconds * 16_000))
        length -= length % stride  # whole frames only
        frames = conv_frames(length, self.conv_layers)
        waves, labels = [], []
        feats: dict[int, list[Tensor]] = {layer: [] for layer in self.features}
        for i in indices:
            utt = self.utterances[i]
            wave = self.corpus.load_audio(utt)
            start = stride * int(rng.integers(0, (len(wave) - length) // stride + 1))
            waves.append(torch.from_numpy(wave[start : start + length]))
            offset = self.slices[i][0] + start // stride
            if self.labels is not None:
                labels.append(torch.from_numpy(np.asarray(self.labels[offset : offset + frames], dtype=np.int64)))
            for layer, array in self.features.items():
                feats[layer].append(torch.from_numpy(np.array(array[offset : offset + frames], dtype=np.float32)))
        return Batch(
            wave=torch.stack(waves),
            labels=torch.stack(labels) if labels else None,
            features={layer: torch.stack(rows) for layer, rows in feats.items()},
            seconds=len(indices) * length / 16_000,
        )

    def iterate(
        self, batch_seconds: float, max_seconds: float, *, seed: int, start_step: int = 0, rank: int = 0, world: int = 1
    ) -> Iterator[Batch]:
        """Endless stream of batches, epoch after epoch; resumable at any step."""
        step, epoch = 0, 0
        while True:
            batches = self.epoch_batches(batch_seconds, max_seconds, seed=seed, epoch=epoch, rank=rank, world=world)
            for b, indices in enumerate(batches):
                if step >= start_step:
                    yield self.load(indices, max_seconds, np.random.default_rng([seed, epoch, b, rank]))
                step += 1
            epoch += 1
