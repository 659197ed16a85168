"""espeak-ng as a source of speakers and of phone labels.

A synthetic *speaker* is an espeak-ng voice variant (``m3``, ``f2``, ``klatt4``, ``whisper``...,
about 100 of them) spoken with one English accent (``en-us``, ``en-gb-scotland``...) at a
base pitch and speaking rate. Variant and accent change the formants, glottal source and
phone realisations, so (variant, accent) pairs are what make speakers distinguishable;
pitch and rate add spread. :func:`pick_voices` chooses distinct pairs from a seed.

The espeak-ng command line is wrapped here, once, for both uses: :func:`speak` (audio plus
the phonemes actually pronounced) and :func:`g2p` (phonemes only, for real transcripts), and
both normalise phonemes the same way (:func:`parse_phones`) so synthetic and real corpora
share one phone inventory.
"""

from __future__ import annotations

import functools
import random
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from raydistill.errors import UserError

ESPEAK = "espeak-ng"
ACCENTS = ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-029")
ESPEAK_SAMPLE_RATE = 22_050  # what ``espeak-ng -w`` writes

# Stress, syllable and phoneme-boundary marks (``|``, between words some accents link) carry
# no segment of their own; pause symbols (``_:``, ``_!``, inserted at clause breaks in long
# sentences) are silences, not phones.
_MARKS = re.compile(r"[',%=|]")
_PAUSES = {":", "!", ";"}


def require_espeak() -> str:
    """Path of the espeak-ng binary; a :class:`UserError` saying how to install it if absent."""
    path = shutil.which(ESPEAK)
    if path is None:
        raise UserError(
            "espeak-ng is not installed: run `apt-get install espeak-ng` "
            "(it synthesises the default corpus and turns transcripts into phones)"
        )
    return path


@functools.cache
def _version_line() -> str:
    out = subprocess.run([require_espeak(), "--version"], capture_output=True, text=True, check=True)
    return out.stdout.strip()


def espeak_version() -> str:
    """e.g. ``"1.51"`` (recorded in corpus.json: another version may pronounce differently)."""
    match = re.search(r"text-to-speech:\s*(\S+)", _version_line())
    return match.group(1) if match else _version_line()


def variants_dir() -> Path:
    """The ``voices/!v`` directory of the installed espeak-ng data (``Data at:`` in ``--version``)."""
    match = re.search(r"Data at:\s*(.+)$", _version_line())
    candidates = [Path(match.group(1).strip())] if match else []
    candidates += [Path("/usr/lib/x86_64-linux-gnu/espeak-ng-data"), Path("/usr/share/espeak-ng-data")]
    for data in candidates:
        if (data / "voices" / "!v").is_dir():
            return data / "voices" / "!v"
    raise UserError(f"cannot find espeak-ng's voice variants (voices/!v) under {candidates}")


@functools.cache
def list_variants() -> tuple[str, ...]:
    """Installed voice variants, sorted (names with spaces, e.g. ``Mr serious``, are left out)."""
    return tuple(sorted(p.name for p in variants_dir().iterdir() if p.is_file() and " " not in p.name))


@dataclass(frozen=True)
class Voice:
    """One synthetic speaker: accent + variant at a base pitch (0–99) and rate (words/min).

    A flite speaker has ``accent == "flite"``, one of :data:`FLITE_VOICES` as ``variant``, its
    mean F0 in Hz as ``pitch`` and its duration stretch in percent as ``rate``.
    """

    accent: str
    variant: str
    pitch: int
    rate: int

    @property
    def engine(self) -> str:
        return "flite" if self.accent == "flite" else "espeak"

    @property
    def id(self) -> str:
        if self.engine == "flite":
            return f"flite+{self.variant}-f{self.pitch}-d{self.rate}"
        return f"{self.accent}+{self.variant}-p{self.pitch:02d}-s{self.rate}"

    @property
    def espeak_name(self) -> str:
        return f"{self.accent}+{self.variant}"


def pick_voices(
    n: int, seed: int, pitch_range: tuple[int, int] = (0, 99), rate_range: tuple[int, int] = (130, 200)
) -> list[Voice]:
    """``n`` speakers with pairwise distinct (variant, accent), chosen from ``seed``.

    Variants are used up before any repeats, so up to ~100 speakers all have different
    variants; past that a variant comes back with another accent.
    """
    rng = random.Random(f"voices:{seed}")
    variants, accents = list(list_variants()), list(ACCENTS)
    rng.shuffle(variants)
    rng.shuffle(accents)
    # Round r gives variant j the accent (j + r) mod A, so no pair repeats across rounds.
    pairs = [
        (variant, accents[(j + r) % len(accents)])
        for r in range(len(accents))
        for j, variant in enumerate(variants)
    ]
    if n > len(pairs):
        raise UserError(f"asked for {n} speakers but espeak-ng offers only {len(pairs)} distinct voices")
    return [
        Voice(accent=accent, variant=variant, pitch=rng.randint(*pitch_range), rate=rng.randint(*rate_range))
        for variant, accent in pairs[:n]
    ]


def pick_flite_voices(n: int, seed: int, stretch_range: tuple[float, float] = (0.85, 1.25)) -> list[Voice]:
    """``n`` flite speakers: the voices in turn, each time at another mean F0 and speaking rate."""
    rng = random.Random(f"flite:{seed}")
    names = sorted(FLITE_VOICES)
    rng.shuffle(names)
    voices, seen = [], set()
    while len(voices) < n:
        name = names[len(voices) % len(names)]
        voice = Voice("flite", name, rng.randint(*FLITE_F0[name]), round(100 * rng.uniform(*stretch_range)))
        if voice.id not in seen:
            seen.add(voice.id)
            voices.append(voice)
    return voices


def parse_phones(espeak_x: str) -> tuple[str, ...]:
    """Phones from ``espeak-ng -x --sep=_`` output (words split by spaces, phonemes by ``_``).

    >>> parse_phones("t_'3:_n 0_n_D_@ l_'aI_t_s")
    ('t', '3:', 'n', '0', 'n', 'D', '@', 'l', 'aI', 't', 's')
    """
    phones = (_MARKS.sub("", p) for word in espeak_x.split() for p in word.split("_"))
    return tuple(p for p in phones if p and p not in _PAUSES)


def speak(text: str, voice: str, pitch: int, rate: int, wav_path: Path) -> tuple[str, ...]:
    """Synthesise ``text`` into ``wav_path`` (22.05 kHz) and return the phones espeak-ng spoke.

    ``voice`` is an espeak-ng voice name such as ``en-gb+m3``. Text goes through stdin so a
    leading ``-`` is never read as an option.
    """
    cmd = [require_espeak(), "-v", voice, "-p", str(pitch), "-s", str(rate), "-x", "--sep=_"]
    out = subprocess.run(
        cmd + ["-w", str(wav_path), "--stdin"], input=text, capture_output=True, text=True, check=True
    )
    return parse_phones(out.stdout)


# -- flite: a second synthesiser, for speakers that espeak-ng's formant synthesis cannot give -----

FLITE = "flite"
# flite's built-in voices and their output rates: diphone (kal, kal16) and clustergen
# statistical-parametric voices built from recordings of real speakers (awb Scottish, rms and
# slt American). kal is 8 kHz: band-limited, telephone-like speech.
FLITE_VOICES = {"awb": 16_000, "rms": 16_000, "slt": 16_000, "kal16": 16_000, "kal": 8_000}
FLITE_F0 = {"awb": (85, 140), "rms": (80, 135), "slt": (150, 230), "kal16": (85, 140), "kal": (85, 140)}
# CMU ARPAbet (what ``flite -ps`` prints) -> the espeak-ng phonemes of :func:`parse_phones`, so
# both synthesisers share one phone inventory (en-us realisations).
ARPABET = {
    "aa": "A:", "ae": "a", "ah": "V", "ao": "O:", "aw": "aU", "ax": "@", "ay": "aI", "eh": "E", "er": "3:",
    "ey": "eI", "ih": "I", "iy": "i:", "ow": "oU", "oy": "OI", "uh": "U", "uw": "u:", "b": "b", "ch": "tS",
    "d": "d", "dh": "D", "f": "f", "g": "g", "hh": "h", "jh": "dZ", "k": "k", "l": "l", "m": "m", "n": "n",
    "ng": "N", "p": "p", "r": "r", "s": "s", "sh": "S", "t": "t", "th": "T", "v": "v", "w": "w", "y": "j",
    "z": "z", "zh": "Z",
}


def require_flite() -> str:
    path = shutil.which(FLITE)
    if path is None:
        raise UserError("flite is not installed: run `apt-get install flite` (the corpus config voices "
                        "some speakers with it), or set flite_frac: 0 in the corpus config")
    return path


def flite_speak(text: str, voice: str, f0: int, stretch: float, wav_path: Path) -> tuple[str, ...]:
    """Synthesise ``text`` with flite's ``voice`` at a mean F0 (Hz) and duration stretch; return
    the phones it spoke, mapped to espeak-ng's inventory (pauses dropped)."""
    cmd = [require_flite(), "-voice", voice, "--setf", f"int_f0_target_mean={f0}",
           "--setf", f"duration_stretch={stretch:.3f}", "-ps", "-o", str(wav_path)]
    # a text file, not -t: flite would read a text starting with "-" as an option
    with tempfile.NamedTemporaryFile("w", suffix=".txt") as f:
        f.write(text)
        f.flush()
        out = subprocess.run(cmd[:1] + ["-f", f.name] + cmd[1:], capture_output=True, text=True, check=True)
    return tuple(ARPABET[p] for p in out.stdout.split() if p in ARPABET)


def g2p(text: str, accent: str = "en-us") -> tuple[str, ...]:
    """Phones espeak-ng would pronounce for ``text`` (no audio: ``-q``)."""
    cmd = [require_espeak(), "-q", "-x", "--sep=_", "-v", accent, "--stdin"]
    out = subprocess.run(cmd, input=text, capture_output=True, text=True, check=True)
    return parse_phones(out.stdout)
