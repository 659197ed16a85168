"""The synthetic espeak-ng corpus: determinism, audio format, speakers, splits, balanced labels."""

from __future__ import annotations

import dataclasses
import re
from collections import Counter

import pytest
import soundfile as sf

from raydistill.corpus import Corpus, CorpusConfig, build_corpus
from raydistill.corpus.synth import plan
from raydistill.corpus.text import INTENTS, KEYWORD_CLASSES, KEYWORDS, SILENCE, UNKNOWN, UNKNOWN_WORDS
from raydistill.errors import UserError

# Fewer speakers than the smoke preset: 10 voices, 96 utterances, a few seconds to build.
TINY = CorpusConfig(
    name="espeak-tiny",
    num_seen_speakers=6,
    num_unseen_speakers=4,
    utts_per_seen_speaker=12,
    utts_per_unseen_speaker=6,
)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The tiny corpus built twice, into two directories."""
    root = tmp_path_factory.mktemp("corpora")
    first = build_corpus(TINY, root / "a", progress=False)
    second = build_corpus(TINY, root / "b", progress=False)
    return first, second


@pytest.fixture(scope="module")
def corpus(built) -> Corpus:
    return built[0]


def _intent(utt) -> tuple[str, str, str]:
    return (utt.intent["action"], utt.intent["object"], utt.intent["location"])


def _spread(counts: Counter, classes) -> int:
    """max - min count over ``classes`` (classes never seen count as 0)."""
    values = [counts.get(c, 0) for c in classes]
    return max(values) - min(values)


def test_build_is_deterministic(built):
    a, b = built
    assert (a.root / "manifest.jsonl").read_bytes() == (b.root / "manifest.jsonl").read_bytes()
    assert (a.root / "corpus.json").read_bytes() == (b.root / "corpus.json").read_bytes()
    assert a.key == b.key
    for utt in a.utterances[::17]:
        assert a.audio_path(utt).read_bytes() == b.audio_path(utt).read_bytes(), utt.id


def test_sizes_and_audio_format(corpus):
    assert len(corpus.utterances) == 6 * 12 + 4 * 6
    assert corpus.name == "espeak-tiny"
    assert corpus.info["source"] == "espeak-ng"
    assert corpus.info["config"] == TINY.to_dict()
    assert "workers" not in corpus.info["config"]
    for utt in corpus.utterances:
        assert utt.audio == f"audio/{utt.id}.flac"
        info = sf.info(str(corpus.audio_path(utt)))
        assert (info.samplerate, info.channels, info.format, info.subtype) == (16000, 1, "FLAC", "PCM_16")
        assert info.frames == utt.num_samples
        if utt.kind in ("keyword", "silence"):
            assert utt.num_samples == 16000
    sentences = [u.seconds for u in corpus.utterances if u.kind == "sentence"]
    assert 2.0 <= sum(sentences) / len(sentences) <= 4.0
    wave = corpus.load_audio(corpus.utterances[0])
    assert wave.ndim == 1 and len(wave) == corpus.utterances[0].num_samples
    assert 0.01 < abs(wave).max() <= 1.0


def test_speakers_distinct_and_pooled(corpus):
    speakers = {u.speaker: u.speaker_pool for u in corpus.utterances}
    assert len(speakers) == 10
    assert Counter(speakers.values()) == {"seen": 6, "unseen": 4}
    assert all(re.fullmatch(r"en(-[a-z0-9]+)*\+\S+-p\d\d-s\d+", s) for s in speakers)
    assert len({s.rsplit("-p", 1)[0] for s in speakers}) == 10  # distinct accent+variant pairs
    assert sorted(corpus.info["speakers"]) == sorted(speakers)


def test_splits_keep_unseen_speakers_out_of_train(corpus):
    by_split = {s: {u.speaker for u in corpus.split(s)} for s in ("train", "dev", "test")}
    seen = {u.speaker for u in corpus.utterances if u.speaker_pool == "seen"}
    unseen = {u.speaker for u in corpus.utterances if u.speaker_pool == "unseen"}
    assert by_split["train"] == seen  # every seen speaker trains, no unseen one does
    unseen_dev, unseen_test = by_split["dev"] & unseen, by_split["test"] & unseen
    assert len(unseen_dev) == len(unseen_test) == 2
    assert not unseen_dev & unseen_test
    for kind in ("sentence", "command"):  # stratified: every split has every kind
        assert all(any(u.kind == kind for u in corpus.split(s)) for s in ("train", "dev", "test"))


def test_labels_are_valid_and_balanced(corpus):
    groups: dict = {}
    for u in corpus.utterances:
        groups.setdefault((u.speaker_pool, u.split), []).append(u)
        if u.kind == "command":
            assert _intent(u) in INTENTS
            assert u.keyword is None
        elif u.kind in ("keyword", "silence"):
            assert u.intent is None
            assert (u.kind == "silence") == (u.keyword == SILENCE)
            if u.keyword in KEYWORDS:
                assert u.text == u.keyword
            elif u.keyword == UNKNOWN:
                assert u.text in UNKNOWN_WORDS
        else:
            assert u.keyword is None and u.intent is None
    assert len(groups) == 5  # seen train/dev/test, unseen dev/test
    for group in groups.values():
        keywords = Counter(u.keyword for u in group if u.keyword)
        intents = Counter(_intent(u) for u in group if u.intent)
        assert _spread(keywords, KEYWORD_CLASSES) <= 1
        assert _spread(intents, INTENTS) <= 1


def test_text_and_phones(corpus):
    for u in corpus.utterances:
        if u.kind == "silence":
            assert u.text == "" and u.phones == ()
        else:
            assert re.fullmatch(r"[a-z]+( [a-z]+)*", u.text), u.text
            assert isinstance(u.phones, tuple) and len(u.phones) >= 2, u.id
            assert all(isinstance(p, str) and p and not set(p) & set("',%=|_ ") for p in u.phones)
    sentence_words = [len(u.text.split()) for u in corpus.utterances if u.kind == "sentence"]
    assert 5 <= min(sentence_words) and max(sentence_words) <= 12
    assert 30 <= len(corpus.phones) <= 80
    assert corpus.phones == sorted({p for u in corpus.utterances for p in u.phones})


def test_load_round_trip(corpus):
    again = Corpus.load(corpus.root)
    assert again.utterances == corpus.utterances
    assert again.key == corpus.key


def test_existing_corpus_is_reused_not_rebuilt(corpus):
    manifest = corpus.root / "manifest.jsonl"
    mtime = manifest.stat().st_mtime_ns
    again = build_corpus(TINY, corpus.root, progress=False)
    assert again.key == corpus.key and manifest.stat().st_mtime_ns == mtime
    other = CorpusConfig(**{**TINY.__dict__, "seed": 1})
    with pytest.raises(UserError, match="another config"):
        build_corpus(other, corpus.root, progress=False)


def test_a_corpus_built_before_an_option_existed_is_still_reused(corpus, tmp_path):
    import json
    import shutil

    old = tmp_path / "old"
    shutil.copytree(corpus.root, old)
    info = json.loads((old / "corpus.json").read_text())
    for option in ("flite_frac", "speaker_speed", "noise_per", "reverb", "t60", "drr_db"):  # options added later
        del info["config"][option]
    (old / "corpus.json").write_text(json.dumps(info))
    assert build_corpus(TINY, old, progress=False).key == Corpus.load(old).key


def test_missing_espeak_is_a_user_error(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(UserError, match="apt-get install espeak-ng"):
        build_corpus(TINY, tmp_path / "corpus", progress=False)
    assert not (tmp_path / "corpus").exists()


@pytest.mark.parametrize(
    "change, message",
    [
        ({"num_seen_speakers": 0}, "num_seen_speakers"),
        ({"frac_sentence": 0.6}, "must be 1"),
        ({"frac_keyword": -0.1, "frac_sentence": 0.8}, ">= 0"),
        ({"dev_frac": 0.5, "test_frac": 0.5}, "dev_frac \\+ test_frac"),
        ({"snr_db": (30.0, 10.0)}, "snr_db"),
        ({"speed": (0.1, 1.0)}, "speed"),
        ({"base_pitch": (0, 120)}, "base_pitch"),
        ({"workers": 0}, "workers"),
        ({"flite_frac": 1.5}, "flite_frac"),
        ({"speaker_speed": (1.3, 0.8)}, "speaker_speed"),
        ({"noise_per": "room"}, "noise_per must be utterance or speaker"),
        ({"reverb": "room"}, "reverb must be one of off, speaker, utterance"),
        ({"t60": (0.0, 0.5)}, "t60"),
        ({"drr_db": (10.0, 0.0)}, "drr_db"),
    ],
)
def test_bad_config_raises_value_error(change, message):
    with pytest.raises(ValueError, match=message):
        CorpusConfig(**change)


def test_presets():
    default, smoke = CorpusConfig.default(), CorpusConfig.smoke()
    assert default.num_speakers == 64 >= 40
    assert (default.utts_per_seen_speaker, default.utts_per_unseen_speaker) == (40, 16)
    assert smoke.name == "espeak-smoke" and smoke.num_speakers < default.num_speakers
    assert CorpusConfig(speed=[0.9, 1.1]).speed == (0.9, 1.1)  # lists (from YAML) become tuples
    # the default warps each speaker's vocal tract; the field defaults (what old corpora had) do not
    assert default.speaker_speed == (0.8, 1.25) and CorpusConfig().speaker_speed == (1.0, 1.0)


def test_embedded_corpus_directory_is_per_config(tmp_path):
    """A changed default builds beside the old corpus instead of clashing with its directory."""
    from raydistill.prepare import Workdir, embedded_corpus_dir

    wd = Workdir(tmp_path)
    default = embedded_corpus_dir(wd, CorpusConfig.default())
    assert default.parent == wd.corpora and default.name.startswith("espeak-default-")
    assert embedded_corpus_dir(wd, CorpusConfig.default()) == default
    assert embedded_corpus_dir(wd, CorpusConfig()) != default  # same name, other config
    assert embedded_corpus_dir(wd, dataclasses.replace(CorpusConfig.default(), workers=1)) == default
    # options added later leave the directory of corpora built before them alone, unless set
    assert default.name == "espeak-default-2919ec06"
    assert embedded_corpus_dir(wd, dataclasses.replace(CorpusConfig.default(), reverb="speaker")) != default


def test_default_plan_splits_and_balance():
    """The default corpus's plan (no audio): fractions, per-speaker splits and label balance."""
    planned = [utt for utt, _ in plan(CorpusConfig.default())]
    assert len(planned) == 48 * 40 + 16 * 16
    assert len({u.id for u in planned}) == len(planned)
    assert len({u.speaker for u in planned}) == 64
    seen = [u for u in planned if u.speaker_pool == "seen"]
    for kind in ("sentence", "command"):
        of_kind = [u for u in seen if u.kind == kind]
        fractions = {s: sum(u.split == s for u in of_kind) / len(of_kind) for s in ("train", "dev", "test")}
        assert fractions == pytest.approx({"train": 0.7, "dev": 0.15, "test": 0.15}, abs=0.01)
    splits_of = {}
    for u in seen:
        splits_of.setdefault(u.speaker, set()).add(u.split)
    assert all(s == {"train", "dev", "test"} for s in splits_of.values())
    kinds = Counter(u.kind for u in planned)
    assert kinds["sentence"] == 48 * 20 + 16 * 8 and kinds["command"] == 48 * 12 + 16 * 5
    keywords = Counter(u.keyword for u in planned if u.keyword)
    intents = Counter(_intent(u) for u in planned if u.intent)
    assert _spread(keywords, KEYWORD_CLASSES) <= 5  # at most one extra per (pool, split) group
    assert len(intents) == 31 and _spread(intents, INTENTS) <= 5


def test_flite_speakers_and_per_speaker_warp(tmp_path):
    """flite_frac voices a share of each pool with flite (its ARPAbet phones mapped to espeak-ng's
    inventory); speaker_speed gives every speaker one resampling factor for all its utterances."""
    import dataclasses

    from raydistill.corpus.voices import ARPABET

    config = dataclasses.replace(TINY, name="mixed", flite_frac=0.5, speaker_speed=(0.8, 1.25))
    corpus = build_corpus(config, tmp_path / "mixed", progress=False)
    flite = [u for u in corpus.utterances if u.meta["voice"].startswith("flite:")]
    assert {u.speaker_pool for u in flite} == {"seen", "unseen"}
    assert len({u.speaker for u in flite}) == 3 + 2  # half of 6 seen, half of 4 unseen
    assert {u.speaker for u in flite} == {u.speaker for u in corpus.utterances if u.speaker.startswith("flite+")}
    spoken = [u for u in flite if u.kind == "sentence"]
    assert spoken and all(u.phones and set(u.phones) <= set(ARPABET.values()) for u in spoken)
    assert all(sf.info(corpus.audio_path(u)).samplerate == 16000 for u in flite[:5])
    # one factor per speaker: an utterance's speed is it times the per-utterance (0.95, 1.05)
    by_speaker = {}
    for u in corpus.utterances:
        if u.kind != "silence":
            by_speaker.setdefault(u.speaker, []).append(u.meta["speed"])
    spans = [max(v) / min(v) for v in by_speaker.values()]
    assert max(spans) < 1.05 / 0.95 + 0.01  # within a speaker: only the per-utterance spread
    lows = sorted(min(v) for v in by_speaker.values())
    assert lows[-1] / lows[0] > 1.1  # across speakers: the per-speaker factor


def test_room_response_and_convolution():
    """The RIR: a unit direct path, a tail holding 1/10^(drr/10) of its energy, 60 dB down at t60."""
    import numpy as np

    from raydistill.corpus.synth import _reverberate, room_response

    rir = room_response(0.4, 6.0, seed=1)
    assert len(rir) == int(0.4 * 16000) and rir[0] == 1.0
    assert 10 * np.log10(1 / np.sum(rir[1:] ** 2)) == pytest.approx(6.0)
    early, late = np.sum(rir[1:800] ** 2), np.sum(rir[-800:] ** 2)
    assert 10 * np.log10(early / late) > 40  # the last 50 ms are ~55 dB below the first
    assert np.array_equal(rir, room_response(0.4, 6.0, seed=1)) and not np.array_equal(rir, room_response(0.4, 6.0, 2))
    click = np.zeros(8000, np.float32)
    click[100] = 1.0
    wet = _reverberate(click, rir)
    assert len(wet) == len(click) and np.allclose(wet[100 : 100 + len(rir)], rir, atol=1e-6)
    assert np.allclose(wet[:100], 0, atol=1e-6) and np.allclose(wet[100 + len(rir) :], 0, atol=1e-6)


def test_rooms_per_speaker_or_per_utterance():
    """reverb="speaker": one (t60, drr) per speaker, different between speakers; "utterance": a new
    room per utterance; `_silence_` clips (noise only) and the default ("off") are dry."""
    def rooms(reverb):
        config = dataclasses.replace(TINY, reverb=reverb)
        return [(utt, job.room) for utt, job in plan(config)]

    per_speaker = rooms("speaker")
    by_speaker = {}
    for utt, room in per_speaker:
        if utt.kind == "silence":
            assert room is None and "t60" not in utt.meta
        else:
            assert (utt.meta["t60"], utt.meta["drr_db"]) == room[:2]
            assert TINY.t60[0] <= room[0] <= TINY.t60[1] and TINY.drr_db[0] <= room[1] <= TINY.drr_db[1]
            by_speaker.setdefault(utt.speaker, set()).add(room)
    assert all(len(r) == 1 for r in by_speaker.values()) and len(set.union(*by_speaker.values())) == TINY.num_speakers
    per_utt = [room for utt, room in rooms("utterance") if room]
    assert len(set(per_utt)) == len(per_utt)
    assert all(room is None for _, room in rooms("off")) and CorpusConfig().reverb == "off"


def test_reverberant_render_is_the_dry_one_through_the_room(tmp_path):
    """Rendering with a room gives the dry rendering convolved with that room's RIR (rescaled)."""
    import numpy as np

    from raydistill.corpus.synth import _render, _reverberate, room_response

    utt, job = next((u, j) for u, j in plan(dataclasses.replace(TINY, reverb="speaker", noise=False))
                    if u.kind == "sentence")
    (tmp_path / "wet").mkdir()
    (tmp_path / "dry").mkdir()
    _render(job, str(tmp_path / "wet"))
    _render(dataclasses.replace(job, room=None), str(tmp_path / "dry"))
    wet, _ = sf.read(tmp_path / "wet" / f"{utt.id}.flac", dtype="float32")
    dry, _ = sf.read(tmp_path / "dry" / f"{utt.id}.flac", dtype="float32")
    expected = _reverberate(dry, room_response(*job.room))
    expected *= np.abs(wet).max() / np.abs(expected).max()
    assert len(wet) == len(dry)
    assert np.corrcoef(wet, expected)[0, 1] > 0.99 and np.corrcoef(wet, dry)[0, 1] < 0.98


def test_noise_per_speaker_or_per_utterance():
    """noise_per="speaker": each speaker keeps one noise colour and SNR (its recording place), and
    speakers differ; "utterance" (the field default) draws them for every utterance."""
    def environments(noise_per):
        by_speaker = {}
        for utt, _ in plan(dataclasses.replace(TINY, noise_per=noise_per)):
            by_speaker.setdefault(utt.speaker, set()).add((utt.meta["noise"], utt.meta["snr_db"]))
        return by_speaker

    per_speaker = environments("speaker")
    assert all(len(envs) == 1 for envs in per_speaker.values())
    assert len(set.union(*per_speaker.values())) == TINY.num_speakers
    assert all(len(envs) > 3 for envs in environments("utterance").values())
    assert CorpusConfig().noise_per == "utterance"
