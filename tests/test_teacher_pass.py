"""The teacher pass: length-batched = one utterance at a time, resumable shards, units of
layers that are not cached, a bounded k-means sample; a pass whose tasks ask for what the cluster
does not have says so. (Ray tasks over shards: test_cluster.py.)"""

import json
import time

import numpy as np
import pytest
import torch

from raydistill.models.config import ARCHITECTURES
from raydistill.models.hubert import HubertModel
from raydistill.targets import teacher_pass as tp
from raydistill.targets.kmeans import assign
from raydistill.targets.store import TargetStore
from raydistill.teacher.sources import Teacher
from raydistill.utils import length_batches

ALONE = 1e-6  # batch_seconds that puts every utterance in a batch of its own


@pytest.fixture(scope="module")
def teacher():
    torch.manual_seed(0)
    model = HubertModel(ARCHITECTURES["tiny-teacher"]).eval()
    assert model.cfg.extractor_mode == "group_norm"  # HuBERT-base's CNN: padding would change its frames
    return Teacher(model=model, spec="test", key="tiny-pass")


@pytest.fixture(scope="module")
def alone(teacher, tiny_corpus, tmp_path_factory):
    """Features of layers 1 and 4, every utterance run on its own (the reference)."""
    store = TargetStore(tmp_path_factory.mktemp("alone") / "s")
    return store.ensure(teacher, tiny_corpus, tiny_corpus.split("train"), [], layers=[1, 4], batch_seconds=ALONE)


def test_length_batches_are_padded_and_match_one_utterance_at_a_time(teacher, tiny_corpus, alone, tmp_path):
    train = tiny_corpus.split("train")
    batches = length_batches([u.num_samples for u in train], 30.0 * tp.SAMPLE_RATE, longest_first=False)
    padded = [b for b in batches if len({train[i].num_samples for i in b}) > 1]
    assert len(batches) < len(train) and padded  # real batches, with rows of different lengths
    for b in batches:
        assert len(b) == 1 or len(b) * max(train[i].num_samples for i in b) <= 30.0 * 16000
    batched = TargetStore(tmp_path / "s").ensure(teacher, tiny_corpus, train, [], layers=[1, 4], batch_seconds=30.0,
                                                 shard_seconds=10.0)
    for layer in (1, 4):
        a, b = np.asarray(alone.features(layer), np.float32), np.asarray(batched.features(layer), np.float32)
        assert a.shape == b.shape and np.abs(a).mean() > 0.1
        np.testing.assert_allclose(b, a, atol=5e-3, rtol=5e-3)  # float16 storage: ~1e-3 relative
    # what the per-row CNN guards against: the same padded batch through the CNN in one go
    rows = padded[0]
    waves = [torch.from_numpy(tiny_corpus.load_audio(train[i])) for i in rows]
    wave = torch.nn.utils.rnn.pad_sequence(waves, batch_first=True)
    short = min(range(len(rows)), key=lambda j: len(waves[j]))
    with torch.no_grad():
        together = teacher.model.encoder.feature_extractor(wave)[short]
        single = teacher.model.encoder.feature_extractor(waves[short][None])[0]
    assert (together[: len(single)] - single).abs().max() > 0.1 * single.abs().max()  # GroupNorm saw the zeros


def test_a_failed_pass_resumes_from_its_finished_shards(teacher, tiny_corpus, alone, tmp_path):
    train = tiny_corpus.split("train")

    class Dies:  # the teacher, killed during its 20th forward pass
        def __init__(self):
            self.calls, self.key, self.source = 0, teacher.key, teacher.source

        def __getattr__(self, name):
            return getattr(teacher, name)

        def layer_features(self, *args):
            self.calls += 1
            if self.calls == 20:
                raise RuntimeError("node lost")
            return teacher.layer_features(*args)

    store = TargetStore(tmp_path / "s")
    kwargs = dict(layers=[1, 4], batch_seconds=ALONE, shard_seconds=8.0)
    with pytest.raises(RuntimeError, match="node lost"):
        store.ensure(Dies(), tiny_corpus, train, [], **kwargs)
    (pass_dir,) = store.root.glob(".pass-*")
    done = tp.done_shards(pass_dir)
    shards = tp.make_shards([u.num_samples / 16000 for u in train], 8.0)
    assert 0 < len(done) < len(shards) and not store.has_layer(1)  # nothing half-written in the store
    survivor = Dies()
    store.ensure(survivor, tiny_corpus, train, [], **kwargs)
    finished = sum(len(range(*shards[i])) for i in done)
    assert survivor.calls == len(train) - finished  # the finished shards were not run again
    assert not list(store.root.glob(".pass-*"))
    for layer in (1, 4):
        np.testing.assert_array_equal(np.asarray(store.features(layer)), np.asarray(alone.features(layer)))


def test_units_of_a_layer_that_is_not_cached(teacher, tiny_corpus, alone, tmp_path):
    train = tiny_corpus.split("train")
    store = TargetStore(tmp_path / "s").ensure(teacher, tiny_corpus, train, [(4, 8)], batch_seconds=30.0)
    assert store.has_kmeans(4, 8) and store.has_sample(4) and not store.has_layer(4)
    info = json.loads((store.root / "layer4" / "k8" / "info.json").read_text())
    assert info["assigned"] == "in the teacher pass" and info["frames"] == len(store.labels(4, 8))
    # the labels the pass assigned = nearest centroid of the features computed on their own
    expected = assign(alone.features(4), store.centroids(4, 8))
    agree = (np.asarray(store.labels(4, 8)) == expected).mean()
    assert agree > 0.99, agree
    assert len(np.unique(store.labels(4, 8))) > 4


def test_kmeans_fits_on_a_bounded_sample(teacher, tiny_corpus, tmp_path):
    train = tiny_corpus.split("train")
    store = TargetStore(tmp_path / "s").ensure(teacher, tiny_corpus, train, [(2, 8)], max_points=300)
    total = len(store.labels(2, 8))
    assert total > 10 * 300
    sample = store.sample(2)
    assert 250 < len(sample) < 480 and sample.dtype == np.float16  # ~1.2 x 300 frames, whatever the corpus size
    info = json.loads((store.root / "layer2" / "k8" / "info.json").read_text())
    assert info["fit_frames"] == 300


def test_shards_cover_the_corpus_once():
    seconds = [3.0, 5.0, 1.0, 9.0, 2.0, 2.0, 7.0]
    shards = tp.make_shards(seconds, 6.0)
    assert shards[0][0] == 0 and shards[-1][1] == len(seconds)
    assert all(a[1] == b[0] for a, b in zip(shards, shards[1:]))
    assert shards == [(0, 2), (2, 4), (4, 7)]


def test_write_rows_touches_only_its_rows(tmp_path):
    path = tmp_path / "a.npy"
    array = np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=(10, 3))
    array[:] = 7
    array.flush()
    del array
    tp.write_rows(path, 4, np.arange(6, dtype=np.float32).reshape(2, 3))
    out = np.load(path)
    assert out[4:6].tolist() == [[0, 1, 2], [3, 4, 5]]
    assert (out[:4] == 7).all() and (out[6:] == 7).all()
    with pytest.raises(ValueError, match="past its 10 rows"):
        tp.write_rows(path, 9, np.zeros((2, 3)))


def test_a_store_of_nothing_still_indexes_the_utterances(teacher, tiny_corpus, tmp_path):
    """Trials that run the teacher live (masking distillation) read no cached array, but their
    batches come from the store's index: it is written without a teacher pass."""
    train = tiny_corpus.split("train")
    store = TargetStore(tmp_path / "s").ensure(teacher, tiny_corpus, train, [])
    assert store.index["ids"] == [u.id for u in train]
    assert not list(store.root.glob("layer*")) and not list(store.root.glob(".pass-*"))


class _Told(Exception):
    pass


@pytest.mark.slow
def test_a_pass_asking_for_a_gpu_no_node_has_fails_after_its_deadline(ray_cluster, tmp_path, monkeypatch):
    """The local cluster has no GPU and no autoscaler: once no shard has finished for
    ``stall_seconds``, the pass names the demand and what the cluster has, cancels its tasks and
    fails (before: it waited forever, silently). With an autoscaler it says so once and waits."""
    from raydistill.errors import UserError

    spec = tp.PassSpec(source="never-loaded", corpus_dir=str(tmp_path), out=str(tmp_path / "pass"))
    assert not tp.autoscaler_configured()  # Ray's monitor reports only anonymous node_<id> types
    started = time.monotonic()
    with pytest.raises(UserError) as raised:
        tp.run_pass(spec, [(0, 1), (1, 2)], [1.0, 1.0], gpus=True, stall_seconds=3)
    assert 3 <= time.monotonic() - started < 40
    message = str(raised.value)
    assert "no shard finished in 3 s; 2 task(s) wait, each asking for CPU 1, GPU 1" in message
    assert "GPU 0 free of 0" in message and "no autoscaler" in message

    told = []

    def log(line):
        told.append(line)
        raise _Told  # the pass would wait on: stop it here

    monkeypatch.setattr(tp, "autoscaler_configured", lambda: True)
    monkeypatch.setattr(tp, "log", log)
    with pytest.raises(_Told):
        tp.run_pass(spec, [(0, 1)], [1.0], gpus=True, stall_seconds=2)
    assert len(told) == 1 and "waiting for the autoscaler to add one" in told[0], told
