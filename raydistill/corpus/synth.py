"""The default corpus: multi-speaker English speech synthesised with espeak-ng.

No speech data set can be downloaded offline, so raydistill makes its own: every
utterance is planned up front (who says what, in which split, with which pitch, rate,
gain, noise and speed), then ``workers`` threads render the plan to FLAC. Everything
random is drawn from a per-utterance RNG seeded by ``(config.seed, utterance id)``,
so the same config gives a byte-identical manifest whatever the number of workers
or the order they finish in.

Threads rather than processes: each rendering is an espeak-ng subprocess followed by
torch/numpy/libsndfile calls, all of which release the GIL, so threads keep ``workers``
cores busy without a process pool's start-up cost (importing torch takes ~4 s per
spawned process) or fork's pitfalls. Measured on 2 cores, 360 utterances: 10.0 s with
2 threads, 11.1 s with a 2-process fork pool, 36 s serially.

Splits follow SUPERB's needs:

* *seen* speakers have train/dev/test utterances (70/15/15 per kind, so every seen
  speaker is in every split: speaker identification is closed-set);
* *unseen* speakers have no train audio; half of them are dev-only, half test-only
  (speaker-disjoint evaluation, as SUPERB's IC/KS/ASV test sets are).

Labels are handed out in cycles per (speaker pool, split, kind), so keyword classes and
intents are balanced to within one utterance in every split of every pool.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import random
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from raydistill.corpus.manifest import INFO, MANIFEST, SAMPLE_RATE, Corpus, Utterance, write_manifest
from raydistill.corpus.text import (
    INTENT_SLOTS,
    INTENTS,
    KEYWORD_CLASSES,
    SILENCE,
    command_text,
    intent_dict,
    keyword_text,
    sentence,
)
from raydistill.corpus.voices import (
    ESPEAK_SAMPLE_RATE,
    FLITE_VOICES,
    Voice,
    espeak_version,
    flite_speak,
    pick_flite_voices,
    pick_voices,
    require_espeak,
    require_flite,
    speak,
)
from raydistill.errors import UserError
from raydistill.utils import Progress, atomic_dir, log

KEYWORD_SAMPLES = SAMPLE_RATE  # keyword and silence clips are exactly 1 s, as in Speech Commands
_PEAK = 0.9  # speech peak before the random gain: leaves headroom for the added noise
_NOMINAL_SPEECH_RMS = 0.1  # a typical speech clip's RMS, sets the level of `_silence_` noise
_NOISE_ALPHA = {"brown": 2.0, "pink": 1.0, "white": 0.0}  # noise power spectrum ∝ 1/f^alpha
_REVERB = ("off", "speaker", "utterance")  # CorpusConfig.reverb: who shares a room
# Options added after embedded-corpus directories were first named by `CorpusConfig.identity`:
# left out of it while at their defaults, so corpora built before them keep their directory.
_NAMED_WITHOUT = ("noise_per", "reverb", "t60", "drr_db")


@dataclass(frozen=True)
class CorpusConfig:
    """What to synthesise. ``workers`` only sets speed and is not part of the corpus's identity."""

    name: str = "espeak-default"  # corpus.json "name"
    seed: int = 0
    num_seen_speakers: int = 48  # speakers with train/dev/test audio (the SID classes)
    num_unseen_speakers: int = 16  # held-out speakers: half dev-only, half test-only
    utts_per_seen_speaker: int = 40
    utts_per_unseen_speaker: int = 16
    frac_sentence: float = 0.5  # read sentences: PR, ASR, speaker tasks
    frac_command: float = 0.3  # FSC-style commands: intent classification
    frac_keyword: float = 0.2  # Speech Commands classes, `_silence_` included (1 in 12)
    dev_frac: float = 0.15  # of each seen speaker's utterances of each kind
    test_frac: float = 0.15
    base_pitch: tuple[int, int] = (0, 99)  # a speaker's espeak-ng -p, drawn once per speaker
    base_rate: tuple[int, int] = (130, 200)  # a speaker's espeak-ng -s (words per minute)
    pitch_jitter: int = 8  # per utterance: pitch = base ± this (espeak-ng pitch units)
    rate_jitter: float = 0.08  # per utterance: rate = base × (1 ± this)
    gain_db: tuple[float, float] = (-12.0, 0.0)  # per-utterance level, relative to a 0.9 peak
    noise: bool = True  # add white/pink/brown noise to speech (`_silence_` is noise regardless)
    snr_db: tuple[float, float] = (10.0, 30.0)
    # Who shares a noise colour and SNR: "utterance" draws both for every utterance; "speaker"
    # once per speaker, the place it records in (channel follows speaker, as in LibriSpeech).
    noise_per: str = "utterance"
    speed: tuple[float, float] = (0.95, 1.05)  # speed perturbation by resampling (tempo and pitch)
    # A speaker's own resampling factor, drawn once per speaker: it scales formants (a
    # vocal-tract-length change), pitch and tempo together, on top of the per-utterance `speed`.
    speaker_speed: tuple[float, float] = (1.0, 1.0)
    # Share of the seen and of the unseen speakers voiced by flite instead of espeak-ng (its
    # voices come from recordings of real speakers: less regular spectra than formant synthesis).
    flite_frac: float = 0.0
    # Room acoustics: speech convolved with a synthetic room impulse response (a direct path and
    # an exponentially decaying noise tail, Polack's statistical model) with reverberation time
    # `t60` seconds and direct-to-reverberant energy ratio `drr_db`, drawn per room. "speaker":
    # one room per speaker, the place it records in (channel follows speaker, as in LibriSpeech);
    # "utterance": a new room for every utterance; "off": dry speech. Noise is added afterwards.
    reverb: str = "off"
    t60: tuple[float, float] = (0.2, 0.6)
    drr_db: tuple[float, float] = (0.0, 12.0)
    workers: int = 2  # synthesis threads, each driving one espeak-ng process at a time

    def __post_init__(self):
        ranges = ("base_pitch", "base_rate", "gain_db", "snr_db", "speed", "speaker_speed", "t60", "drr_db")
        for name in ranges:  # YAML gives lists
            object.__setattr__(self, name, tuple(getattr(self, name)))
        _check(self.num_seen_speakers >= 1, "num_seen_speakers must be >= 1", self.num_seen_speakers)
        _check(self.num_unseen_speakers >= 0, "num_unseen_speakers must be >= 0", self.num_unseen_speakers)
        _check(self.utts_per_seen_speaker >= 1, "utts_per_seen_speaker must be >= 1", self.utts_per_seen_speaker)
        _check(
            self.utts_per_unseen_speaker >= 1, "utts_per_unseen_speaker must be >= 1", self.utts_per_unseen_speaker
        )
        fracs = (self.frac_sentence, self.frac_command, self.frac_keyword)
        _check(all(f >= 0 for f in fracs), "frac_sentence/command/keyword must be >= 0", fracs)
        _check(abs(sum(fracs) - 1) < 1e-6, "frac_sentence + frac_command + frac_keyword must be 1", fracs)
        _check(self.dev_frac >= 0 and self.test_frac >= 0, "dev_frac and test_frac must be >= 0",
               (self.dev_frac, self.test_frac))
        _check(self.dev_frac + self.test_frac < 1, "dev_frac + test_frac must be < 1 (train needs utterances)",
               (self.dev_frac, self.test_frac))
        _check_range("base_pitch", self.base_pitch, 0, 99)
        _check_range("base_rate", self.base_rate, 80, 450)
        _check(0 <= self.pitch_jitter <= 50, "pitch_jitter must be in [0, 50]", self.pitch_jitter)
        _check(0 <= self.rate_jitter < 0.5, "rate_jitter must be in [0, 0.5)", self.rate_jitter)
        _check_range("gain_db", self.gain_db, -60, 6)
        _check_range("snr_db", self.snr_db, -20, 100)
        _check_range("speed", self.speed, 0.5, 2.0)
        _check_range("speaker_speed", self.speaker_speed, 0.5, 2.0)
        _check(0.0 <= self.flite_frac <= 1.0, "flite_frac must be in [0, 1]", self.flite_frac)
        _check(self.noise_per in ("utterance", "speaker"), "noise_per must be utterance or speaker", self.noise_per)
        _check(self.reverb in _REVERB, f"reverb must be one of {', '.join(_REVERB)}", self.reverb)
        _check_range("t60", self.t60, 0.05, 2.0)
        _check_range("drr_db", self.drr_db, -20, 40)
        _check(self.workers >= 1, "workers must be >= 1", self.workers)

    @classmethod
    def default(cls) -> "CorpusConfig":
        """64 voices, 2176 utterances (about 1.4 h), half a minute on 2 cores.

        Each speaker gets its own resampling factor in [0.8, 1.25]: without it espeak-ng's
        formant voices share one vocal tract, FBank (strong at phones) leads a random-init
        student (strong at speakers) by 2.8 overall over 3 seeds; with it the random init leads
        by 0.4, still inside the seed spread (docs/embedded-default.md#why-it-looks-the-way-it-does). The field defaults leave every option off (what corpora built
        before it had).
        """
        return cls(speaker_speed=(0.8, 1.25))

    @classmethod
    def smoke(cls) -> "CorpusConfig":
        """20 voices, 184 utterances: builds in seconds, for CI and first tries."""
        return cls(
            name="espeak-smoke",
            num_seen_speakers=16,
            num_unseen_speakers=4,
            utts_per_seen_speaker=10,
            utts_per_unseen_speaker=6,
        )

    @property
    def num_speakers(self) -> int:
        return self.num_seen_speakers + self.num_unseen_speakers

    def to_dict(self) -> dict:
        """The config as corpus.json records it (JSON types; ``workers`` left out)."""
        d = dataclasses.asdict(self)
        del d["workers"]
        return json.loads(json.dumps(d))

    def identity(self) -> dict:
        """What names the corpus's directory: :meth:`to_dict` without the options of
        ``_NAMED_WITHOUT`` that are at their defaults."""
        d, defaults = self.to_dict(), CorpusConfig().to_dict()
        return {k: v for k, v in d.items() if k not in _NAMED_WITHOUT or v != defaults[k]}


def _check(ok: bool, message: str, found) -> None:
    if not ok:
        raise ValueError(f"CorpusConfig: {message}, found {found!r}")


def _check_range(name: str, pair: tuple, low: float, high: float) -> None:
    ok = len(pair) == 2 and low <= pair[0] <= pair[1] <= high
    _check(ok, f"{name} must be (lo, hi) with {low} <= lo <= hi <= {high}", pair)


# -- planning: who says what, where (cheap, deterministic) -------------------------------------


@dataclass(frozen=True)
class _Job:
    """Everything a worker needs to render one utterance; it decides nothing that is recorded."""

    utt_id: str
    kind: str
    text: str
    engine: str  # "espeak" or "flite"
    voice: str
    pitch: int
    rate: int
    speed_hz: int  # the synthesiser's output (espeak-ng 22.05 kHz, flite 8/16 kHz) is read as if sampled at this rate
    gain_db: float
    noise: Optional[str]
    snr_db: Optional[float]
    seed: int
    room: Optional[tuple[float, float, int]] = None  # (t60 s, drr dB, RIR seed); None: dry


class _Stratifier:
    """Splits each seen speaker's utterances of one kind into train/dev/test.

    Running totals per kind track ``dev_frac``/``test_frac`` (error diffusion), so the corpus
    hits the fractions even when each speaker has only a few utterances of a kind; each
    speaker keeps at least one utterance of every kind it has in train.
    """

    def __init__(self, dev_frac: float, test_frac: float):
        self.fracs = {"dev": dev_frac, "test": test_frac}
        self.total: Counter = Counter()
        self.given: Counter = Counter()

    def __call__(self, kind: str, n: int) -> dict[str, int]:
        self.total[kind] += n
        room = max(n - 1, 0)
        counts = {}
        for split, frac in self.fracs.items():
            k = min(max(round(self.total[kind] * frac) - self.given[kind, split], 0), room)
            counts[split] = k
            room -= k
            self.given[kind, split] += k
        return {"train": n - counts["dev"] - counts["test"], **counts}


def _kind_counts(n: int, config: CorpusConfig) -> dict[str, int]:
    """``n`` utterances shared out by the kind mix (largest remainder, so they sum to ``n``)."""
    fracs = {"sentence": config.frac_sentence, "command": config.frac_command, "keyword": config.frac_keyword}
    counts = {kind: int(n * f) for kind, f in fracs.items()}
    by_remainder = sorted(fracs, key=lambda kind: counts[kind] - n * fracs[kind])
    for kind in by_remainder[: n - sum(counts.values())]:
        counts[kind] += 1
    return counts


def utt_seed(seed: int, utt_id: str) -> int:
    """The per-utterance RNG seed: independent of planning order and of the process."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{utt_id}".encode()).digest()[:8], "little")


def speakers(config: CorpusConfig) -> list[Voice]:
    """The seen speakers, then the unseen ones; ``flite_frac`` of each pool voiced by flite."""
    n_flite = [round(config.flite_frac * n) for n in (config.num_seen_speakers, config.num_unseen_speakers)]
    espeak = pick_voices(config.num_speakers - sum(n_flite), config.seed, config.base_pitch, config.base_rate)
    if not sum(n_flite):
        return espeak
    flite = pick_flite_voices(sum(n_flite), config.seed)
    n_seen = config.num_seen_speakers - n_flite[0]
    seen, unseen = espeak[:n_seen] + flite[: n_flite[0]], espeak[n_seen:] + flite[n_flite[0]:]
    rng = random.Random(f"speakers:{config.seed}")
    rng.shuffle(seen)
    rng.shuffle(unseen)  # unseen speakers alternate dev/test: both get flite voices
    return seen + unseen


def plan(config: CorpusConfig) -> list[tuple[Utterance, _Job]]:
    """Every utterance of the corpus (``num_samples``/``phones`` still unknown) and its job."""
    voices = speakers(config)
    stratify = _Stratifier(config.dev_frac, config.test_frac)
    handed_out: Counter = Counter()  # (pool, split, kind) -> labels given so far
    planned = []
    for index, voice in enumerate(voices):
        seen = index < config.num_seen_speakers
        pool = "seen" if seen else "unseen"
        n = config.utts_per_seen_speaker if seen else config.utts_per_unseen_speaker
        slots = []
        for kind, count in _kind_counts(n, config).items():
            if seen:
                splits = stratify(kind, count)
            else:  # alternate so dev and test get equally many unseen speakers
                splits = {"dev" if (index - config.num_seen_speakers) % 2 == 0 else "test": count}
            slots += [(split, kind) for split, k in splits.items() for _ in range(k)]
        for j, (split, kind) in enumerate(slots):
            utt_id = f"{voice.id}_{j:03d}"
            # Each group starts its label cycle at a seeded place, so the classes that get one
            # extra utterance differ between groups instead of always being the first ones.
            turn = handed_out[pool, split, kind] + utt_seed(config.seed, f"{pool}/{split}/{kind}")
            handed_out[pool, split, kind] += 1
            planned.append(_plan_one(config, voice, utt_id, pool, split, kind, turn))
    return planned


def _plan_one(
    config: CorpusConfig, voice: Voice, utt_id: str, pool: str, split: str, kind: str, turn: int
) -> tuple[Utterance, _Job]:
    seed = utt_seed(config.seed, utt_id)
    rng = random.Random(seed)
    keyword = intent = None
    if kind == "command":
        intent = INTENTS[turn % len(INTENTS)]
        text = command_text(intent, rng)
    elif kind == "keyword":
        keyword = KEYWORD_CLASSES[turn % len(KEYWORD_CLASSES)]
        kind = "silence" if keyword == SILENCE else kind
        text = keyword_text(keyword, rng)
    else:
        text = sentence(rng)
    # espeak-ng: pitch in its 0-99 units, rate in words/min; flite: mean F0 in Hz, stretch in %
    pitch = voice.pitch + rng.randint(-config.pitch_jitter, config.pitch_jitter)
    pitch = min(max(pitch, 0), 99) if voice.engine == "espeak" else pitch
    rate = round(voice.rate * (1 + rng.uniform(-config.rate_jitter, config.rate_jitter)))
    native_hz = ESPEAK_SAMPLE_RATE if voice.engine == "espeak" else FLITE_VOICES[voice.variant]
    # A multiple of 100 Hz keeps gcd(speed_hz, 16000) >= 100, so the resampling kernel is small.
    speaker_factor = random.Random(utt_seed(config.seed, f"speaker:{voice.id}")).uniform(*config.speaker_speed)
    speed_hz = 100 * round(native_hz * speaker_factor * rng.uniform(*config.speed) / 100)
    gain_db = round(rng.uniform(*config.gain_db), 2)
    noise_rng = random.Random(utt_seed(config.seed, f"noise:{voice.id}")) if config.noise_per == "speaker" else rng
    noise = noise_rng.choice(sorted(_NOISE_ALPHA)) if config.noise or kind == "silence" else None
    snr_db = round(noise_rng.uniform(*config.snr_db), 2) if noise else None
    room = _room(config, voice, utt_id) if kind != "silence" else None
    name = voice.espeak_name if voice.engine == "espeak" else voice.variant
    job = _Job(utt_id, kind, text, voice.engine, name, pitch, rate, speed_hz, gain_db, noise, snr_db, seed, room)
    meta = {
        "voice": voice.espeak_name if voice.engine == "espeak" else f"flite:{voice.variant}",
        "pitch": pitch,
        "rate": rate,
        "speed": round(speed_hz / native_hz, 4),
        "gain_db": gain_db,
        "noise": noise,
        "snr_db": snr_db,  # for `_silence_`: relative to a nominal speech level at this gain
        **({"t60": room[0], "drr_db": room[1]} if room else {}),
    }
    utt = Utterance(
        id=utt_id,
        audio=f"audio/{utt_id}.flac",
        num_samples=0,  # known once rendered
        split=split,
        speaker=voice.id,
        speaker_pool=pool,
        kind=kind,
        text=text,
        keyword=keyword,
        intent=intent_dict(intent) if intent else None,
        meta=meta,
    )
    return utt, job


def _room(config: CorpusConfig, voice: Voice, utt_id: str) -> Optional[tuple[float, float, int]]:
    """The room ``utt_id`` is spoken in: (t60, drr_db, RIR seed), or ``None`` for dry speech."""
    if config.reverb == "off":
        return None
    rng = random.Random(utt_seed(config.seed, f"room:{voice.id if config.reverb == 'speaker' else utt_id}"))
    return round(rng.uniform(*config.t60), 3), round(rng.uniform(*config.drr_db), 2), rng.getrandbits(63)


# -- rendering: espeak-ng -> 16 kHz FLAC (worker threads) -------------------------------------


def _render(job: _Job, audio_dir: str) -> tuple[int, tuple[str, ...]]:
    """Synthesise one utterance into ``audio_dir/<id>.flac``; return (num_samples, phones)."""
    import soundfile as sf
    import torch

    out = Path(audio_dir) / f"{job.utt_id}.flac"
    rng = np.random.default_rng(job.seed)
    if job.kind == "silence":
        wave, phones = np.zeros(KEYWORD_SAMPLES, np.float32), ()
        speech_rms = _NOMINAL_SPEECH_RMS * 10 ** (job.gain_db / 20)
    else:
        wav = out.with_suffix(".wav")
        if job.engine == "flite":
            phones = flite_speak(job.text, job.voice, job.pitch, job.rate / 100, wav)
        else:
            phones = speak(job.text, job.voice, job.pitch, job.rate, wav)
        raw, _ = sf.read(wav, dtype="float32")
        wav.unlink()
        wave = _resampler(job.speed_hz)(torch.from_numpy(raw)).numpy()
        if job.room:
            wave = _reverberate(wave, room_response(*job.room))
        wave *= _PEAK * 10 ** (job.gain_db / 20) / max(float(np.abs(wave).max()), 1e-6)
        speech = _trim(wave)
        speech_rms = float(np.sqrt(np.mean(speech**2)))
        if job.kind == "keyword":
            wave = _one_second(speech, rng)
    if job.noise:
        wave = wave + _noise(job.noise, len(wave), rng) * speech_rms / 10 ** (job.snr_db / 20)
    sf.write(out, np.clip(wave, -1, 1), SAMPLE_RATE, subtype="PCM_16", format="FLAC")
    return len(wave), phones


@functools.lru_cache(maxsize=None)
def _resampler(orig_hz: int):
    """torchaudio's sinc resampler to 16 kHz with its kernel built once per rate.

    Building the kernel costs more than applying it, and speed perturbation only uses a
    few dozen distinct rates.
    """
    import torchaudio

    return torchaudio.transforms.Resample(orig_hz, SAMPLE_RATE)


def _trim(wave: np.ndarray, rel: float = 0.01) -> np.ndarray:
    """``wave`` without the leading/trailing near-silence espeak-ng adds."""
    loud = np.flatnonzero(np.abs(wave) > rel * np.abs(wave).max())
    return wave[loud[0] : loud[-1] + 1] if len(loud) else wave


def _one_second(speech: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Place a word at a random offset in a 1 s clip (its middle second if longer)."""
    if len(speech) >= KEYWORD_SAMPLES:
        start = (len(speech) - KEYWORD_SAMPLES) // 2
        return speech[start : start + KEYWORD_SAMPLES].copy()
    clip = np.zeros(KEYWORD_SAMPLES, np.float32)
    offset = int(rng.integers(0, KEYWORD_SAMPLES - len(speech) + 1))
    clip[offset : offset + len(speech)] = speech
    return clip


def room_response(t60: float, drr_db: float, seed: int) -> np.ndarray:
    """A synthetic room impulse response at 16 kHz: a unit direct path, then Gaussian noise whose
    amplitude decays by 60 dB in ``t60`` seconds, scaled so direct / tail energy is ``drr_db``."""
    rng = np.random.default_rng(seed)
    t = np.arange(1, max(int(t60 * SAMPLE_RATE), 2)) / SAMPLE_RATE
    tail = rng.standard_normal(len(t)) * np.exp(-3 * np.log(10) * t / t60)
    tail *= 10 ** (-drr_db / 20) / float(np.sqrt(np.sum(tail**2)))
    return np.concatenate([[1.0], tail])


def _reverberate(wave: np.ndarray, rir: np.ndarray) -> np.ndarray:
    """``wave`` convolved with ``rir`` (FFT), cut to its own length: the tail past the end is lost."""
    size = 1 << (len(wave) + len(rir) - 2).bit_length()
    out = np.fft.irfft(np.fft.rfft(wave, size) * np.fft.rfft(rir, size), size)[: len(wave)]
    return out.astype(np.float32)


def _noise(colour: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """Unit-RMS noise of ``n`` samples whose power spectrum falls as 1/f^alpha."""
    size = 1 << (n - 1).bit_length()  # FFTs of arbitrary (often prime) lengths are slow
    spectrum = np.fft.rfft(rng.standard_normal(size))
    freqs = np.arange(len(spectrum), dtype=np.float64)
    freqs[0] = 1.0
    spectrum /= freqs ** (_NOISE_ALPHA[colour] / 2)
    spectrum[0] = 0.0  # no DC offset
    x = np.fft.irfft(spectrum, size)[:n]
    return (x / max(float(np.sqrt(np.mean(x**2))), 1e-12)).astype(np.float32)


# -- the corpus ----------------------------------------------------------------------------------


def load_existing(out_dir: Path, config: dict) -> Optional[Corpus]:
    """The corpus already in ``out_dir`` if it was built from ``config``, else ``None``.

    A directory holding something else is a :class:`UserError` rather than being overwritten.
    An empty directory is removed so the corpus can be renamed into its place.
    """
    if not out_dir.exists():
        return None
    if out_dir.is_dir() and not any(out_dir.iterdir()):
        out_dir.rmdir()
        return None
    if (out_dir / MANIFEST).is_file() and (out_dir / INFO).is_file():
        stored = json.loads((out_dir / INFO).read_text()).get("config") or {}
        # options added after a corpus was built were at their defaults then
        if {**CorpusConfig().to_dict(), **stored} == config:
            return Corpus.load(out_dir)
        raise UserError(f"{out_dir} holds a corpus built from another config: remove it or choose another directory")
    raise UserError(f"{out_dir} exists and is not a corpus: remove it or choose another directory")


def build_corpus(config: CorpusConfig, out_dir: str | Path, *, progress: bool = True) -> Corpus:
    """Synthesise the corpus ``config`` describes into ``out_dir`` (or load it if already there).

    The corpus is built in a temporary directory beside ``out_dir`` and renamed into place,
    so ``out_dir`` is either absent or complete.
    """
    out_dir = Path(out_dir)
    existing = load_existing(out_dir, config.to_dict())
    if existing is not None:
        log(f"corpus {config.name} already built in {out_dir}")
        return existing
    require_espeak()
    if config.flite_frac > 0:
        require_flite()
    planned = plan(config)
    jobs = [job for _, job in planned]
    start = time.monotonic()
    with atomic_dir(out_dir) as tmp:
        audio_dir = tmp / "audio"
        audio_dir.mkdir()
        render = functools.partial(_render, audio_dir=str(audio_dir))
        bar = Progress("synthesise", len(jobs), " utts") if progress else None
        rendered = []
        with ThreadPoolExecutor(config.workers) as pool:
            for result in pool.map(render, jobs):
                rendered.append(result)
                if bar:
                    bar.update()
        utts = [
            dataclasses.replace(utt, num_samples=num_samples, phones=phones)
            for (utt, _), (num_samples, phones) in zip(planned, rendered)
        ]
        info = {
            "name": config.name,
            "source": "espeak-ng+flite" if config.flite_frac > 0 else "espeak-ng",
            "config": config.to_dict(),
            "espeak_ng_version": espeak_version(),
            "keyword_classes": list(KEYWORD_CLASSES),
            "intent_slots": INTENT_SLOTS,
            "intents": [intent_dict(intent) for intent in INTENTS],
        }
        write_manifest(tmp, utts, info)
    corpus = Corpus.load(out_dir)
    hours = sum(u.seconds for u in utts) / 3600
    log(f"built corpus {config.name}: {len(utts)} utterances, {hours:.2f} h, "
        f"in {time.monotonic() - start:.0f} s -> {out_dir}")
    return corpus

