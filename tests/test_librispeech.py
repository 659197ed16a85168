"""Reading a LibriSpeech-layout tree: splits from subset names, speaker pools, G2P, skipped files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from raydistill.corpus import Corpus, read_librispeech
from raydistill.errors import UserError

# subset -> speaker -> chapter -> {utterance number: transcript}
TREE = {
    "train-clean-100": {
        "100": {"1000": {0: "YES", 1: "HELLO WORLD", 2: "DON'T STOP"}, "1001": {0: "GOOD MORNING", 1: "THE CAT SAT"}},
        "200": {"2000": {0: "GO LEFT", 1: "TURN RIGHT NOW"}},
    },
    "dev-clean": {
        "200": {"2001": {0: "ONE TWO THREE", 1: "FOUR FIVE"}},
        "300": {"3000": {0: "SEVEN EIGHT", 1: "NINE TEN"}},
    },
}
CORRUPT = "train-clean-100/200/2000/200-2000-0002.flac"  # garbage bytes
EMPTY = "train-clean-100/200/2000/200-2000-0003.flac"  # zero bytes


def _write_tree(root: Path) -> dict[str, int]:
    """Write :data:`TREE` as FLAC noise (plus a corrupt and an empty file); return frames per id."""
    rng = np.random.default_rng(0)
    frames = {}
    for subset, speakers in TREE.items():
        for spk, chapters in speakers.items():
            for chapter, utts in chapters.items():
                folder = root / subset / spk / chapter
                folder.mkdir(parents=True)
                lines = []
                for n, text in utts.items():
                    utt_id = f"{spk}-{chapter}-{n:04d}"
                    frames[utt_id] = 4000 + 800 * n
                    wave = 0.1 * rng.standard_normal(frames[utt_id]).astype(np.float32)
                    sf.write(folder / f"{utt_id}.flac", wave, 16000, subtype="PCM_16")
                    lines.append(f"{utt_id} {text}")
                if chapter == "2000":  # the bad files have transcripts, so only the audio is at fault
                    lines += ["200-2000-0002 BROKEN FILE", "200-2000-0003 EMPTY FILE"]
                (folder / f"{spk}-{chapter}.trans.txt").write_text("\n".join(lines) + "\n")
    (root / CORRUPT).write_bytes(b"not a flac file " * 64)
    (root / EMPTY).write_bytes(b"")
    return frames


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> tuple[Path, dict[str, int]]:
    root = tmp_path_factory.mktemp("LibriSpeech")
    return root, _write_tree(root)


@pytest.fixture(scope="module")
def corpus(tree, tmp_path_factory) -> Corpus:
    root, _ = tree
    return read_librispeech(root, tmp_path_factory.mktemp("out") / "libri", progress=False)


def test_rows_splits_and_pools(corpus, tree):
    root, frames = tree
    by_id = {u.id: u for u in corpus.utterances}
    assert sorted(by_id) == sorted(frames)  # 11 utterances; the corrupt and empty files are not rows
    assert len(by_id) == 11
    assert {u.id for u in corpus.split("train")} == {i for i in frames if i.startswith(("100-", "200-2000"))}
    assert {u.id for u in corpus.split("dev")} == {"200-2001-0000", "200-2001-0001", "300-3000-0000", "300-3000-0001"}
    assert corpus.split("test") == []
    pools = {u.speaker: u.speaker_pool for u in corpus.utterances}
    assert pools == {"100": "seen", "200": "seen", "300": "unseen"}
    for utt_id, utt in by_id.items():
        assert Path(utt.audio).is_absolute() and Path(utt.audio).is_file()
        assert Path(utt.audio).name == f"{utt_id}.flac"
        assert utt.num_samples == frames[utt_id]
        assert utt.kind == "sentence" and utt.keyword is None and utt.intent is None
    assert len(corpus.load_audio(by_id["300-3000-0001"])) == frames["300-3000-0001"]


def test_transcripts_and_phones(corpus):
    by_id = {u.id: u for u in corpus.utterances}
    assert by_id["100-1000-0002"].text == "don't stop"
    assert by_id["200-2001-0000"].text == "one two three"
    assert by_id["100-1000-0000"].phones == ("j", "E", "s")  # espeak-ng en-us reading "yes"
    for utt in corpus.utterances:
        assert len(utt.phones) >= 2 or utt.text == "yes"
        assert utt.meta["phones_source"] == "espeak-ng-g2p"
    assert {"j", "E", "s", "h", "l", "w"} <= set(corpus.phones)


def test_skipped_files_are_counted(corpus):
    skipped = corpus.info["skipped"]
    assert skipped["total"] == 2
    assert skipped["by_reason"] == {"unreadable": 1, "empty": 1}
    assert sorted(skipped["examples"]) == sorted([f"{CORRUPT} (unreadable)", f"{EMPTY} (empty)"])
    assert corpus.info["source"] == "librispeech"


def test_without_g2p_phones_are_unknown(tree, tmp_path, capsys):
    root, _ = tree
    corpus = read_librispeech(root, tmp_path / "libri", g2p=False, progress=False)
    assert len(corpus.utterances) == 11
    assert all(u.phones is None for u in corpus.utterances)
    assert corpus.phones == []
    assert "skipped 2 of 13 audio files" in capsys.readouterr().err


def test_single_subset_split(tree, tmp_path):
    root, _ = tree
    inferred = read_librispeech(root / "dev-clean", tmp_path / "dev", g2p=False, progress=False)
    assert {u.split for u in inferred.utterances} == {"dev"}
    assert {u.speaker_pool for u in inferred.utterances} == {"unseen"}  # no train audio at all
    named = read_librispeech(root / "dev-clean", tmp_path / "test", split="test", g2p=False, progress=False)
    assert {u.split for u in named.utterances} == {"test"} and len(named.utterances) == 4


def test_user_errors(tree, tmp_path):
    root, _ = tree
    with pytest.raises(UserError, match=str(tmp_path / "nowhere")):
        read_librispeech(tmp_path / "nowhere", tmp_path / "out", progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no LibriSpeech utterances under"):
        read_librispeech(tmp_path / "empty", tmp_path / "out", progress=False)
    with pytest.raises(UserError, match="no LibriSpeech utterances under"):  # a speaker, not a subset
        read_librispeech(root / "train-clean-100" / "100", tmp_path / "out", progress=False)
    with pytest.raises(UserError, match="holds subset directories"):
        read_librispeech(root, tmp_path / "out", split="dev", progress=False)
    with pytest.raises(UserError, match="split must be one of"):
        read_librispeech(root / "dev-clean", tmp_path / "out", split="valid", progress=False)
    assert not (tmp_path / "out").exists()


def test_audio_without_transcript_is_skipped(tmp_path):
    folder = tmp_path / "train-clean-5" / "7" / "70"
    folder.mkdir(parents=True)
    sf.write(folder / "7-70-0000.flac", np.zeros(1600, np.float32), 16000)
    (folder / "7-70.trans.txt").write_text("7-70-0001 A TRANSCRIPT WITHOUT AUDIO\n")
    with pytest.raises(UserError, match=r"1 files skipped"):
        read_librispeech(tmp_path, tmp_path / "out", g2p=False, progress=False)
