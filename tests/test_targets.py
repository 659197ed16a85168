"""Teacher targets: k-means quality, the on-disk cache, alignment with the CNN's frames."""

import numpy as np
import pytest
import torch

from raydistill.config import TargetConfig
from raydistill.models.config import ARCHITECTURES, conv_frames
from raydistill.models.hubert import HubertModel
from raydistill.targets.kmeans import assign, fit_kmeans, kmeans_plusplus
from raydistill.targets.store import TargetStore
from raydistill.teacher.mfcc import MfccSource
from raydistill.teacher.sources import Teacher
from raydistill.train.data import TrainData


def blobs(seed=0, k=5, n=400, d=8):
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 10, (k, d))
    labels = rng.integers(0, k, n)
    return (centers[labels] + rng.normal(0, 0.5, (n, d))).astype(np.float32), labels


def test_kmeans_recovers_separated_clusters():
    x, truth = blobs()
    centroids, inertia = fit_kmeans(x, 5, seed=0)
    found = assign(x, centroids)
    # every true cluster maps to exactly one found cluster
    pairs = {(t, f) for t, f in zip(truth, found)}
    assert len(pairs) == 5 and len({f for _, f in pairs}) == 5
    assert 1.6 < inertia < 2.4  # the noise: variance 0.25 x 8 dims = 2.0


@pytest.mark.parametrize("error", [
    RuntimeError("faiss-gpu installed but nvidia-cuda-runtime-cu12 is missing"),  # faiss-gpu 1.15's own check
    OSError("libcublas.so.12: cannot open shared object file: No such file or directory"),
])
def test_a_faiss_that_cannot_load_is_one_line_naming_the_fix(monkeypatch, error):
    import builtins
    import sys

    from raydistill.errors import UserError

    real_import = builtins.__import__

    def failing_import(name, *args, **kwargs):
        if name == "faiss":
            raise error
        return real_import(name, *args, **kwargs)

    monkeypatch.delitem(sys.modules, "faiss", raising=False)
    monkeypatch.setattr(builtins, "__import__", failing_import)
    x, _ = blobs()
    with pytest.raises(UserError) as caught:
        fit_kmeans(x, 5)
    message = str(caught.value)
    assert "\n" not in message and str(error) in message and "scripts/setup.sh gpu" in message


def test_kmeans_plusplus_picks_distinct_points():
    x, _ = blobs()
    c = kmeans_plusplus(x, 5, np.random.default_rng(0))
    assert len({tuple(row) for row in c.round(4)}) == 5


def test_kmeans_plusplus_samples_the_next_centre_by_squared_distance():
    """Given the first centre, the second is drawn with probability D² / ΣD² (Arthur &
    Vassilvitskii), D the distance to the first: on the line 0, 1, 3 uniform (1/2 each) or
    D-weighted draws (e.g. 1/4 and 3/4 after centre 0) land far outside the tolerance."""
    x = np.array([[0.0], [1.0], [3.0]], dtype=np.float32)
    draws = [kmeans_plusplus(x, 2, np.random.default_rng(seed))[:, 0] for seed in range(6000)]
    for first in (0.0, 1.0, 3.0):
        seconds = [second for f, second in draws if f == first]
        assert len(seconds) > 1500  # the first centre is uniform
        others = [v for v in (0.0, 1.0, 3.0) if v != first]
        weights = {v: (v - first) ** 2 for v in others}  # D² by hand: after 0 → 1, 9; after 3 → 9, 4
        for v in others:
            frequency = seconds.count(v) / len(seconds)
            assert abs(frequency - weights[v] / sum(weights.values())) < 0.03, (first, v, frequency)


def test_mfcc_frames_align_with_the_cnn():
    source = MfccSource()
    for n in (400, 1000, 16000, 33333):
        feats, frames = source.layer_features(torch.randn(1, n), torch.tensor([n]), [0])
        assert feats[0].shape == (1, source.frames(n), 39) == (1, conv_frames(n, ARCHITECTURES["tiny-teacher"].conv_layers), 39)
        assert int(frames[0]) == source.frames(n)


def test_store_builds_once_and_trials_read_aligned_targets(tiny_corpus, tmp_path):
    torch.manual_seed(0)
    teacher = Teacher(model=HubertModel(ARCHITECTURES["tiny-teacher"]), spec="test", key="tiny")
    train = tiny_corpus.split("train")
    store = TargetStore(tmp_path / "store").ensure(teacher, tiny_corpus, train, [(2, 8), (3, 8)], layers=[2, 3])
    index = store.index
    assert index["ids"] == [u.id for u in train]
    assert index["frames"] == [teacher.frames(u.num_samples) for u in train]
    labels = store.labels(2, 8)
    assert isinstance(labels, np.memmap) and labels.shape == (sum(index["frames"]),)
    assert 0 <= labels.min() and labels.max() < 8
    # the cached features are the teacher's, frame for frame
    utt = train[3]
    offset, frames = store.utterance_slices()[utt.id]
    wave = torch.from_numpy(tiny_corpus.load_audio(utt))[None]
    feats, _ = teacher.layer_features(wave, torch.tensor([wave.shape[1]]), [3])
    np.testing.assert_allclose(store.features(3)[offset: offset + frames], feats[3][0].numpy(), atol=2e-2, rtol=1e-2)
    # a rerun computes nothing (the files are untouched)
    mtime = (store.root / "layer2" / "k8" / "labels.npy").stat().st_mtime_ns
    store.ensure(teacher, tiny_corpus, train, [(2, 8)])
    assert (store.root / "layer2" / "k8" / "labels.npy").stat().st_mtime_ns == mtime
    # training batches: equal-length crops with their frames' labels
    data = TrainData(tiny_corpus, store, TargetConfig(teacher_layer=2, num_clusters=8, labels="soft"),
                     ARCHITECTURES["tiny-teacher"].conv_layers)
    indices = data.epoch_batches(8.0, 15.6, seed=0, epoch=0)[0]
    batch = data.load(indices, 15.6, np.random.default_rng(0))
    assert batch.wave.shape[1] % 320 == 0
    assert batch.labels.shape == (len(indices), conv_frames(batch.wave.shape[1], data.conv_layers))
    assert batch.features[2].shape[:2] == batch.labels.shape and data.centroids.shape == (8, ARCHITECTURES["tiny-teacher"].embed_dim)


def test_batches_split_evenly_across_workers(tiny_corpus, tmp_path):
    store = TargetStore(tmp_path / "mfcc").ensure(MfccSource(), tiny_corpus, tiny_corpus.split("train"), [(0, 8)])
    data = TrainData(tiny_corpus, store, TargetConfig(teacher_layer=0, num_clusters=8),
                     ARCHITECTURES["tiny-teacher"].conv_layers)
    one = data.epoch_batches(6.0, 15.6, seed=0, epoch=0)
    a = data.epoch_batches(6.0, 15.6, seed=0, epoch=0, rank=0, world=2)
    b = data.epoch_batches(6.0, 15.6, seed=0, epoch=0, rank=1, world=2)
    assert len(a) == len(b) == len(one) // 2
    assert not set(map(tuple, a)) & set(map(tuple, b))
    assert data.epoch_batches(6.0, 15.6, seed=0, epoch=1) != one  # buckets change between epochs


def test_student_with_another_frame_rate_is_refused(tiny_corpus, tmp_path):
    store = TargetStore(tmp_path / "mfcc").ensure(MfccSource(), tiny_corpus, tiny_corpus.split("train"), [(0, 8)])
    with pytest.raises(ValueError, match="frame rate"):
        TrainData(tiny_corpus, store, TargetConfig(teacher_layer=0, num_clusters=8), ((32, 10, 5), (32, 3, 2)))
