"""Tests for raydistill.evaluate on a tiny synthetic "tone" corpus built here.

Each phone is a tone of its own frequency (so a linear probe can learn phones) and each
speaker adds a constant hum at its own frequency plus its own harmonic colour (so pooled
features without CMVN identify the speaker). Utterance-level CMVN removes the hum, which is
why CMVN'd FBank scores ~chance on SID, as in SUPERB.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from raydistill.corpus.manifest import SAMPLE_RATE, Corpus, Utterance, write_manifest
from raydistill.evaluate import (
    EvalBudget,
    FBankUpstream,
    SIDHead,
    WeightedSum,
    ctc_greedy_decode,
    edit_distance,
    evaluate_upstream,
    extract_features,
    overall_score,
    stratified_subset,
    train_pr_probe,
    train_sid_probe,
)
from raydistill.evaluate.heads_fit import shuffled_batches
from raydistill.evaluate.suite import TASKS
from raydistill.utils import length_batches

PHONES = ["a", "e", "i", "o", "u", "m"]
PHONE_HZ = {p: 250.0 * 1.4**k for k, p in enumerate(PHONES)}  # 250 .. 1345 Hz


def _tone_wave(phones: list[str], speaker: int, rng: np.random.Generator) -> np.ndarray:
    """One utterance: 100 ms silence, one 50-90 ms tone per phone, 100 ms silence; plus the
    speaker's hum (2-5 kHz), its harmonic colour and faint noise."""
    pieces = [np.zeros(1600)]
    for p in phones:
        n = int(rng.integers(800, 1440))
        t = np.arange(n) / SAMPLE_RATE
        f = PHONE_HZ[p]
        tone = np.sin(2 * np.pi * f * t) + 0.5 * (speaker % 3) / 2 * np.sin(4 * np.pi * f * t)
        pieces.append(0.3 * tone * np.hanning(n) ** 0.25)
    pieces.append(np.zeros(1600))
    wave = np.concatenate(pieces)
    t = np.arange(len(wave)) / SAMPLE_RATE
    wave += 0.05 * np.sin(2 * np.pi * (2000.0 + 450.0 * speaker) * t)
    wave += 0.003 * rng.standard_normal(len(wave))
    return wave.astype(np.float32)


def make_tone_corpus(
    root: Path, *, seen: int = 6, per_split: dict | None = None, seed: int = 0
) -> Corpus:
    """Write a tone corpus: ``seen`` speakers with train/dev/test audio, one unseen speaker
    (dev/test only) and one silence utterance per split."""
    per_split = per_split or {"train": 16, "dev": 4, "test": 4}
    rng = np.random.default_rng(seed)
    utts = []

    def add(uid: str, split: str, speaker: int, pool: str, phones: list[str], kind: str = "sentence"):
        wave = _tone_wave(phones, speaker, rng) if phones else 0.003 * rng.standard_normal(4800)
        path = root / "audio" / f"{uid}.flac"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, wave.astype(np.float32), SAMPLE_RATE)
        utts.append(Utterance(
            id=uid, audio=f"audio/{uid}.flac", num_samples=len(wave), split=split,
            speaker=f"spk{speaker}", speaker_pool=pool, kind=kind,
            text=" ".join(phones), phones=tuple(phones),
        ))

    def random_phones() -> list[str]:
        out: list[str] = []
        while len(out) < rng.integers(3, 8):
            p = PHONES[rng.integers(len(PHONES))]
            if not out or out[-1] != p:  # no repeats: a tone run has no boundary to hear
                out.append(p)
        return out

    for split, n in per_split.items():
        for s in range(seen):
            for k in range(n):
                add(f"{split}-s{s}-{k}", split, s, "seen", random_phones())
        if split != "train":
            for k in range(n):
                add(f"{split}-unseen-{k}", split, seen, "unseen", random_phones())
        add(f"{split}-silence", split, 0, "seen", [], kind="silence")
    write_manifest(root, utts, {"name": "tones", "phones": PHONES})
    return Corpus.load(root)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Corpus:
    return make_tone_corpus(tmp_path_factory.mktemp("tones"))


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The probes' small matmuls gain nothing from 2 threads, and on a busy 2-core machine
    OpenMP threads fighting for cores made this module 5x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class ConstantUpstream:
    """Ignores the audio: every frame of every state is the same vector."""

    name, num_states, dim = "constant", 2, 8

    def hidden_states(self, wave, lengths):
        frames = lengths // 320
        x = torch.ones(wave.shape[0], int(frames.max()), self.dim)
        return [x, 2 * x], frames


class NoiseUpstream:
    """Ignores the audio: fresh seeded Gaussian noise for every frame."""

    name, num_states, dim = "noise", 3, 16

    def __init__(self, seed: int = 0):
        self.gen = torch.Generator().manual_seed(seed)

    def hidden_states(self, wave, lengths):
        frames = lengths // 320
        shape = (wave.shape[0], int(frames.max()), self.dim)
        return [torch.randn(shape, generator=self.gen) for _ in range(self.num_states)], frames


class ChunkUpstream(torch.nn.Module):
    """20 ms frames whose values identify the audio: [chunk mean, chunk max, frame index, state]."""

    name, num_states, dim = "chunks", 3, 4

    def hidden_states(self, wave, lengths):
        assert not self.training and torch.is_inference_mode_enabled()
        b, s = wave.shape
        chunks = wave[:, : s // 320 * 320].reshape(b, s // 320, 320)
        t = torch.arange(s // 320, dtype=torch.float32).expand(b, -1)
        states = [
            torch.stack([chunks.mean(-1), chunks.amax(-1), t, torch.full_like(t, k)], -1)
            for k in range(self.num_states)
        ]
        return states, lengths // 320


# --- metrics --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "ref, hyp, dist",
    [
        ("", "", 0), ("abc", "abc", 0), ("abc", "", 3), ("", "ab", 2),
        ("kitten", "sitting", 3), ("flaw", "lawn", 2), ("abcdef", "azced", 3),
        (["sh", "ih", "p"], ["sh", "ip"], 2),
    ],
)
def test_edit_distance(ref, hyp, dist):
    assert edit_distance(ref, hyp) == dist
    assert edit_distance(hyp, ref) == dist


def test_ctc_greedy_decode_collapses_repeats_and_drops_blanks():
    best_path = [0, 1, 1, 0, 1, 2, 2, 2, 0, 0, 3, 1]
    logits = torch.full((len(best_path), 4), -5.0)
    logits[torch.arange(len(best_path)), best_path] = 3.0
    assert ctc_greedy_decode(logits) == [1, 1, 2, 3, 1]
    assert ctc_greedy_decode(torch.zeros(5, 4).index_fill_(1, torch.tensor([0]), 1.0)) == []


def test_overall_score_uses_error_rates_as_100_minus_x():
    assert overall_score({"pr_per": 20.0, "sid_acc": 70.0}) == pytest.approx(75.0)
    assert overall_score({"sid_acc": 70.0, "other": 3.0}) == pytest.approx(70.0)


# --- probes ---------------------------------------------------------------------------------


def test_weighted_sum_starts_uniform():
    ws = WeightedSum(4)
    states = torch.randn(2, 5, 4, 3)
    assert torch.equal(ws.weights.detach(), torch.zeros(4))
    assert ws.layer_weights() == pytest.approx([0.25] * 4)
    torch.testing.assert_close(ws(states), states.mean(-2))


def test_sid_pooled_first_equals_superb_order():
    torch.manual_seed(0)
    head = SIDHead(num_states=3, dim=10, num_classes=5)
    with torch.no_grad():
        head.featurizer.weights.copy_(torch.randn(3))
    lengths = torch.tensor([7, 3, 11])
    states = torch.randn(3, 11, 3, 10)
    states[torch.arange(11)[None, :] >= lengths[:, None]] = 1e3  # padding must not leak
    pooled = torch.stack([states[i, :n].mean(0) for i, n in enumerate(lengths.tolist())])
    # SUPERB: weighted sum -> Linear(D, 256) on every frame -> mean over valid frames -> Linear
    w = head.featurizer.weights.softmax(-1)
    frames = [head.projector((states[i, :n] * w[:, None]).sum(-2)) for i, n in enumerate(lengths.tolist())]
    superb = head.out(torch.stack([f.mean(0) for f in frames]))
    torch.testing.assert_close(head(pooled), superb, atol=1e-5, rtol=0)
    torch.testing.assert_close(head.forward_frames(states, lengths), superb, atol=1e-5, rtol=0)


def _pr_data(corpus: Corpus, feats: dict):
    ids = {p: i + 1 for i, p in enumerate(corpus.phones)}
    out = []
    for split in ("train", "dev", "test"):
        utts = [u for u in corpus.split(split) if u.phones]
        out.append(([feats[u.id] for u in utts], [[ids[p] for p in u.phones] for u in utts]))
    return out


_FEATURES: dict = {}


def _features(upstream, corpus: Corpus) -> dict:
    """{utterance id: [T, L, D]} for the whole corpus, computed once per upstream and corpus."""
    key = (upstream.name, corpus.root)
    if key not in _FEATURES:
        feats = extract_features(upstream, corpus, corpus.utterances)
        _FEATURES[key] = dict(zip((u.id for u in corpus.utterances), feats))
    return _FEATURES[key]


PR_ARGS = dict(num_phones=len(PHONES), steps=150, batch_size=8, lr=1e-2, eval_every=25)


def test_pr_probe_learns_tone_phones(corpus):
    # Without CMVN: on spectrally sparse tones, per-utterance CMVN blows the noise of bins
    # whose tone is absent up to unit variance, and 96 utterances are too few for a linear
    # probe to learn to ignore it (with ~250 utterances it reaches ~10 % PER).
    out = train_pr_probe(*_pr_data(corpus, _features(FBankUpstream(cmvn=False), corpus)), **PR_ARGS)
    assert out["per"] < 20.0 and out["per_dev"] < 20.0, out
    assert len(out["layer_weights"]) == 1


def test_pr_probe_on_constant_upstream_is_near_100(corpus):
    out = train_pr_probe(*_pr_data(corpus, _features(ConstantUpstream(), corpus)), **PR_ARGS)
    assert out["per"] > 85.0, out


def _sid_data(corpus: Corpus, feats: dict):
    label = {f"spk{s}": s for s in range(6)}
    out = []
    for split in ("train", "dev", "test"):
        utts = [u for u in corpus.split(split) if u.speaker_pool == "seen" and u.kind != "silence"]
        out.append((np.stack([feats[u.id].astype(np.float32).mean(0) for u in utts]),
                    [label[u.speaker] for u in utts]))
    return out


SID_ARGS = dict(num_classes=6, steps=60, lr=1e-2, eval_every=10)


def test_sid_probe_separates_speakers(corpus):
    out = train_sid_probe(*_sid_data(corpus, _features(FBankUpstream(cmvn=False), corpus)), **SID_ARGS)
    assert out["acc"] > 90.0, out


@pytest.mark.parametrize("upstream", [ConstantUpstream(), NoiseUpstream(), FBankUpstream(cmvn=True)],
                         ids=lambda u: u.name)
def test_sid_probe_is_at_chance_without_speaker_information(corpus, upstream):
    out = train_sid_probe(*_sid_data(corpus, _features(upstream, corpus)), **SID_ARGS)
    assert out["acc"] < 45.0, out  # chance is 16.7 % (6 speakers, 24 test utterances)


def test_probes_depend_on_their_seed_alone_and_keep_the_best_dev_head(corpus):
    feats = _features(NoiseUpstream(), corpus)  # 3 states: the layer weights move
    runs = {}
    for seed, global_seed in ((0, 1), (0, 2), (1, 1)):
        torch.manual_seed(global_seed)
        runs[seed, global_seed] = (
            train_pr_probe(*_pr_data(corpus, feats), **{**PR_ARGS, "steps": 40, "eval_every": 5}, seed=seed),
            train_sid_probe(*_sid_data(corpus, feats), **SID_ARGS, seed=seed),
        )
    assert runs[0, 1] == runs[0, 2]
    for a, b in zip(runs[0, 1], runs[1, 1]):
        assert a["layer_weights"] != b["layer_weights"]
    pr, sid = runs[0, 1]
    assert len(pr["layer_weights"]) == 3 and sum(pr["layer_weights"]) == pytest.approx(1.0)
    # dev selection: the reported dev metric is the best of the curve, at best_step, and
    # on this noise the last check is not the best, so keeping the last head would fail
    assert [pr["best_step"], pr["per_dev"]] == min(pr["dev_curve"], key=lambda c: (c[1], c[0]))
    assert [sid["best_step"], sid["acc_dev"]] == max(sid["dev_curve"], key=lambda c: (c[1], -c[0]))
    assert pr["dev_curve"][-1][1] > pr["per_dev"] and sid["dev_curve"][-1][1] < sid["acc_dev"]
    # and the test metric comes from that head: a run stopped at best_step reports the same
    torch.manual_seed(0)
    pr_args = {**PR_ARGS, "steps": pr["best_step"], "eval_every": 5}
    pr_stop = train_pr_probe(*_pr_data(corpus, feats), **pr_args)
    sid_stop = train_sid_probe(*_sid_data(corpus, feats), **{**SID_ARGS, "steps": sid["best_step"]})
    for full, stop in ((pr, pr_stop), (sid, sid_stop)):
        full.pop("dev_curve"), stop.pop("dev_curve")
        assert stop == full



def test_shuffled_batches_cover_the_pool_once_per_epoch():
    pool = [3, 5, 7, 11, 13, 17]
    batches = shuffled_batches(pool, 4, torch.Generator().manual_seed(0))
    seen = [next(batches) for _ in range(6)]  # 24 items: exactly 4 epochs
    assert all(len(b) == 4 for b in seen)
    items = [i for b in seen for i in b]
    assert all(sorted(items[k : k + 6]) == pool for k in range(0, 24, 6))
    assert len({tuple(items[k : k + 6]) for k in range(0, 24, 6)}) > 1  # each epoch reshuffled
    again = shuffled_batches(pool, 4, torch.Generator().manual_seed(0))
    assert [next(again) for _ in range(6)] == seen
    # a pool smaller than a batch gives one shuffle per step, not a padded batch
    assert sorted(next(shuffled_batches([1, 2], 4, torch.Generator()))) == [1, 2]

# --- upstream and extraction ---------------------------------------------------------------


def test_fbank_padded_batch_equals_one_by_one():
    fbank = FBankUpstream()
    rng = np.random.default_rng(0)
    waves = [torch.from_numpy(rng.standard_normal(n).astype(np.float32)) for n in (16000, 5000, 300, 9999)]
    lengths = torch.tensor([len(w) for w in waves])
    batch = torch.nn.utils.rnn.pad_sequence(waves, batch_first=True)
    (states,), frames = fbank.hidden_states(batch, lengths)
    assert states.shape == (4, 98, 240)
    assert frames.tolist() == [98, 29, 1, 60]  # 1 + (S - 400) // 160, at least one frame
    for i, w in enumerate(waves):
        (alone,), n = fbank.hidden_states(w[None], lengths[i : i + 1])
        assert n.item() == frames[i]
        torch.testing.assert_close(states[i, : frames[i]], alone[0], atol=1e-5, rtol=1e-5)
    assert torch.isfinite(states).all()


def test_length_batches_respect_the_budget():
    lengths = [5, 50, 20, 20, 120, 1]
    batches = length_batches(lengths, max_samples=60, longest_first=True)
    assert sorted(i for b in batches for i in b) == list(range(6))
    assert batches[0] == [4]  # too long for any budget: alone
    for b in batches[1:]:
        assert len(b) * max(lengths[i] for i in b) <= 60


def test_extract_features_keeps_order_and_trims_padding(corpus):
    upstream = ChunkUpstream().train()
    utts = list(corpus.utterances[::-3])  # mixed lengths, not sorted
    feats = extract_features(upstream, corpus, utts, batch_seconds=2.0)
    assert upstream.training  # mode restored after the frozen pass
    assert len(feats) == len(utts)
    for u, f in zip(utts, feats):
        assert f.dtype == np.float16 and f.shape == (u.num_samples // 320, 3, 4)
        (alone,) = extract_features(upstream, corpus, [u])
        np.testing.assert_array_equal(f, alone)
        wave = corpus.load_audio(u)[: f.shape[0] * 320].reshape(-1, 320)
        np.testing.assert_allclose(f[:, 0, 0], wave.mean(-1), atol=1e-3)
        np.testing.assert_array_equal(f[:, 2, 3], 2.0)


def test_stratified_subset_covers_every_speaker(corpus):
    train = corpus.split("train")
    sub = stratified_subset(train, 6, seed=3)
    assert len({u.speaker for u in sub}) == 6
    assert stratified_subset(train, 6, seed=3) == sub
    assert stratified_subset(train, 6, seed=4) != sub
    assert len(stratified_subset(train, 10_000, seed=0)) == len(train)


# --- the suite ------------------------------------------------------------------------------


def test_evaluate_upstream_smoke_is_deterministic(corpus):
    fbank = FBankUpstream(cmvn=False)
    runs = []
    for seed, global_seed in ((0, 1), (0, 2), (1, 1)):
        torch.manual_seed(global_seed)  # the result must depend on `seed` alone
        r = evaluate_upstream(fbank, corpus, EvalBudget.smoke(), seed=seed)
        runs.append({k: v for k, v in r.items() if not k.endswith("_seconds")})
    a, b, other_seed = runs
    assert a == b
    assert a["pr_layer_weights"] == [1.0]
    assert (other_seed["pr_per_dev"], other_seed["sid_acc_dev"]) != (a["pr_per_dev"], a["sid_acc_dev"])
    assert a["pr_per"] < 50.0 and a["sid_acc"] > 80.0, a
    # the tone corpus has sentences (ASR runs) but no keywords, intents or 2 unseen speakers
    assert not any(k.startswith(("ks_", "ic_", "asv_", "qbe_")) for k in a)
    assert a["overall_score"] == pytest.approx((100 - a["pr_per"] + a["sid_acc"] + 100 - a["asr_wer"]) / 3)
    pr_sid = evaluate_upstream(fbank, corpus, EvalBudget.smoke().with_tasks(["pr", "sid"]), seed=0)
    assert "asr_wer" not in pr_sid and pr_sid["pr_per"] == a["pr_per"] and pr_sid["sid_acc"] == a["sid_acc"]
    assert pr_sid["overall_score"] == pytest.approx((100 - a["pr_per"] + a["sid_acc"]) / 2)
    assert a["sid_speakers"] == 6 and a["train_utts"] == a["pr_train_utts"] == 48
    # unseen speakers (4 of 28 dev/test utterances) are left out of SID, silence out of both
    assert a["test_utts"] == a["pr_test_utts"] == 16 and 8 <= a["sid_test_utts"] < 16


def test_budget_validation_and_presets():
    assert EvalBudget.named("probe") == EvalBudget.probe()
    with pytest.raises(Exception, match="unknown eval budget"):
        EvalBudget.named("huge")
    with pytest.raises(Exception, match="pr_steps must be > 0"):
        EvalBudget(**{**EvalBudget.smoke().__dict__, "pr_steps": 0})
    with pytest.raises(Exception, match="unknown tasks \\['sd'\\]"):
        EvalBudget.full().with_tasks(["pr", "sd"])
    assert EvalBudget.probe().tasks == ("pr", "sid") and set(EvalBudget.full().tasks) == set(TASKS)


@pytest.mark.parametrize("final_suite, calls", [("smoke:pr,sid", 1), ("smoke", 2)])
def test_trial_evaluator_reuses_the_last_rung_when_the_final_suite_is_the_probe(corpus, monkeypatch, final_suite,
                                                                                calls):
    # A search with --final-suite probe scores a trial's end with the suite its last ASHA rung
    # just ran (same data, seed and heads): the evaluation must run once, not twice.
    from raydistill.models.config import ARCHITECTURES
    from raydistill.models.hubert import HubertModel
    from raydistill.search import trial

    seen = []
    real = trial.evaluate_upstream
    monkeypatch.setattr(trial, "evaluate_upstream", lambda up, c, budget, **kw: seen.append(budget) or real(up, c, budget, **kw))
    torch.manual_seed(0)
    model = HubertModel(ARCHITECTURES["tiny-teacher"]).eval()
    evaluate = trial.make_evaluator(corpus, {"probe": "smoke", "full": final_suite}, seed=0, device="cpu")
    rung = evaluate(model, final=False)
    assert len(seen) == 1 and set(rung) == {"probe_score", "probe_pr_per", "probe_sid_acc"}
    end = evaluate(model, final=True)
    assert len(seen) == 1 + calls
    assert end["probe_score"] == rung["probe_score"]  # the probe depends on its seed alone
    if calls == 1:
        assert end["overall_score"] == end["probe_score"] and end["pr_per"] == end["probe_pr_per"]
    else:
        assert "asr_wer" in end and seen[-1].tasks != seen[-2].tasks
