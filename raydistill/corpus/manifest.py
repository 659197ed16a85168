"""The corpus on disk: one ``manifest.jsonl`` (an utterance per line), ``corpus.json``, audio files.

Every corpus raydistill reads — the synthetic default or a LibriSpeech-layout
directory — is turned into this one format, so nothing downstream knows where
the audio came from.

``manifest.jsonl``: one JSON object per utterance with the fields of
:class:`Utterance`. ``corpus.json``: what built the corpus (``source``,
``config``), the phone inventory, speaker list and counts. The corpus *key*
(used to name caches of teacher targets) is a hash of the manifest's bytes, so
any change to the audio list or labels invalidates every cache built on it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional

import numpy as np

from raydistill.errors import UserError

SAMPLE_RATE = 16_000
SPLITS = ("train", "dev", "test")
KINDS = ("sentence", "command", "keyword", "silence")
MANIFEST = "manifest.jsonl"
INFO = "corpus.json"


@dataclass(frozen=True)
class Utterance:
    """One utterance of the corpus.

    Attributes:
        id: unique id, also the audio file's stem.
        audio: path of a 16 kHz mono audio file, relative to the corpus root (or absolute).
        num_samples: length of the audio in samples at 16 kHz.
        split: ``train``, ``dev`` or ``test``.
        speaker: speaker id.
        speaker_pool: ``seen`` (speaker has train utterances; SID uses these) or
            ``unseen`` (speaker only in dev/test; for speaker-disjoint tasks).
        kind: ``sentence`` | ``command`` | ``keyword`` | ``silence``.
        text: orthographic text (lower case, no punctuation); empty for silence.
        phones: phone sequence as the synthesiser pronounced it (or as a G2P
            read the transcript); ``None`` when unknown, ``[]`` for silence.
        keyword: keyword-spotting label (one of the keywords, ``_unknown_`` or
            ``_silence_``) for ``keyword``/``silence`` utterances, else ``None``.
        intent: ``{"action", "object", "location"}`` for ``command`` utterances, else ``None``.
        meta: free-form provenance (voice, pitch, rate, noise SNR, speed factor...).
    """

    id: str
    audio: str
    num_samples: int
    split: str
    speaker: str
    speaker_pool: str = "seen"
    kind: str = "sentence"
    text: str = ""
    phones: Optional[tuple[str, ...]] = None
    keyword: Optional[str] = None
    intent: Optional[dict] = None
    meta: dict = field(default_factory=dict)

    @property
    def seconds(self) -> float:
        return self.num_samples / SAMPLE_RATE

    def to_json(self) -> str:
        d = dataclasses.asdict(self)
        if d["phones"] is not None:
            d["phones"] = list(d["phones"])
        return json.dumps(d, sort_keys=True, ensure_ascii=False)

    @classmethod
    def from_dict(cls, d: dict) -> "Utterance":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown field(s) {sorted(unknown)}")
        d = dict(d)
        if d.get("phones") is not None:
            d["phones"] = tuple(d["phones"])
        utt = cls(**d)
        if utt.split not in SPLITS:
            raise ValueError(f"split {utt.split!r} is not one of {SPLITS}")
        if utt.kind not in KINDS:
            raise ValueError(f"kind {utt.kind!r} is not one of {KINDS}")
        if utt.speaker_pool not in ("seen", "unseen"):
            raise ValueError(f"speaker_pool {utt.speaker_pool!r} is not 'seen' or 'unseen'")
        if utt.num_samples <= 0:
            raise ValueError(f"num_samples must be positive, found {utt.num_samples}")
        return utt


@dataclass(frozen=True)
class Corpus:
    """A loaded corpus: its root directory, ``corpus.json`` and the utterances."""

    root: Path
    info: dict
    utterances: tuple[Utterance, ...]
    key: str

    @classmethod
    def load(cls, root: str | Path) -> "Corpus":
        """Read a corpus directory; a missing or malformed one is a :class:`UserError`."""
        root = Path(root)
        manifest, info_file = root / MANIFEST, root / INFO
        if not manifest.is_file():
            raise UserError(f"no corpus at {root}: {manifest} does not exist")
        raw = manifest.read_bytes()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise UserError(f"{manifest} is not a text file (not UTF-8): expected JSON lines") from None
        utts = []
        for lineno, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                utts.append(Utterance.from_dict(json.loads(line)))
            except (ValueError, TypeError) as e:
                raise UserError(f"{manifest}:{lineno}: bad utterance: {e}") from None
        if not utts:
            raise UserError(f"{manifest} lists no utterances")
        ids = [u.id for u in utts]
        if len(set(ids)) != len(ids):
            raise UserError(f"{manifest}: utterance ids are not unique")
        try:
            info = json.loads(info_file.read_text(encoding="utf-8")) if info_file.is_file() else {}
        except ValueError as e:  # bad JSON or not UTF-8
            raise UserError(f"{info_file}: not a valid corpus description: {e}") from None
        if not isinstance(info, dict):
            raise UserError(f"{info_file}: expected a JSON object, found {type(info).__name__}")
        key = hashlib.sha256(raw).hexdigest()[:12]
        return cls(root=root, info=info, utterances=tuple(utts), key=key)

    def split(self, name: str) -> list[Utterance]:
        return [u for u in self.utterances if u.split == name]

    def audio_path(self, utt: Utterance) -> Path:
        p = Path(utt.audio)
        return p if p.is_absolute() else self.root / p

    def load_audio(self, utt: Utterance) -> np.ndarray:
        return load_audio(self.audio_path(utt))

    @property
    def phones(self) -> list[str]:
        """The phone inventory (sorted), from ``corpus.json`` or the utterances."""
        if "phones" in self.info:
            return list(self.info["phones"])
        return sorted({p for u in self.utterances for p in (u.phones or ())})

    @property
    def name(self) -> str:
        return self.info.get("name", self.root.name)


def write_manifest(root: str | Path, utterances: Iterable[Utterance], info: dict) -> None:
    """Write ``manifest.jsonl`` and ``corpus.json`` into ``root`` (utterances in the given order).

    Callers build the corpus in a temporary directory (see :func:`raydistill.utils.atomic_dir`)
    so a reader never sees a half-written corpus.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    utterances = list(utterances)
    (root / MANIFEST).write_text("".join(u.to_json() + "\n" for u in utterances), encoding="utf-8")
    info = dict(info)
    info.setdefault("sample_rate", SAMPLE_RATE)
    info.setdefault("phones", sorted({p for u in utterances for p in (u.phones or ())}))
    info.setdefault("speakers", sorted({u.speaker for u in utterances}))
    counts: dict = {}
    for u in utterances:
        counts.setdefault(u.split, {}).setdefault(u.kind, 0)
        counts[u.split][u.kind] += 1
    info.setdefault("counts", counts)
    info.setdefault("hours", round(sum(u.seconds for u in utterances) / 3600, 4))
    (root / INFO).write_text(json.dumps(info, indent=2, sort_keys=True, ensure_ascii=False) + "\n")


def load_audio(path: str | Path) -> np.ndarray:
    """Read an audio file as float32 mono at 16 kHz (resampling if needed).

    A missing, unreadable or empty file is a :class:`UserError` naming the file.
    """
    import soundfile as sf

    path = Path(path)
    try:
        wave, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as e:  # soundfile raises several types (LibsndfileError, RuntimeError...)
        raise UserError(f"cannot read audio file {path}: {e}") from None
    if wave.shape[0] == 0:
        raise UserError(f"audio file {path} is empty")
    wave = wave.mean(axis=1)
    if sr != SAMPLE_RATE:
        import torch
        import torchaudio.functional as AF

        wave = AF.resample(torch.from_numpy(wave), sr, SAMPLE_RATE).numpy()
    return np.ascontiguousarray(wave, dtype=np.float32)
