"""Read a LibriSpeech-layout directory into a raydistill corpus (a manifest; no audio is copied).

Layout: ``<subset>/<spk>/<chapter>/<spk>-<chapter>-<utt>.flac`` with one
``<spk>-<chapter>.trans.txt`` per chapter (lines ``<utt-id> TRANSCRIPT``). ``root`` is
either one subset (speaker directories directly under it) or a directory of subsets
named ``train-*``, ``dev-*``, ``test-*`` (e.g. ``train-clean-100``, ``dev-clean``), whose
prefix gives the split.

Real data is messy, and one bad file should not cost a user a 100-hour scan: unreadable
or empty audio and audio without a transcript are skipped, counted in ``corpus.json``
(``skipped``) and reported in one warning line.
"""

from __future__ import annotations

import dataclasses
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Optional

from raydistill.corpus.manifest import SAMPLE_RATE, SPLITS, Corpus, Utterance, write_manifest
from raydistill.corpus.synth import load_existing
from raydistill.corpus.voices import espeak_version, g2p as espeak_g2p, require_espeak
from raydistill.errors import UserError
from raydistill.utils import Progress, atomic_dir, log

G2P_ACCENT = "en-us"
_SUBSET_PREFIXES = tuple(f"{split}-" for split in SPLITS)


def read_librispeech(
    root: str | Path,
    out_dir: str | Path,
    *,
    split: Optional[str] = None,
    g2p: bool = True,
    workers: int = 2,
    progress: bool = True,
) -> Corpus:
    """Write a manifest for the LibriSpeech-layout tree ``root`` into ``out_dir`` and load it.

    Args:
        root: one subset, or a directory of ``train-*``/``dev-*``/``test-*`` subsets.
        out_dir: where ``manifest.jsonl``/``corpus.json`` go (built atomically; if it already
            holds a manifest of the same root with the same options, that is loaded instead).
        split: the split of a single-subset ``root``; by default taken from its name
            (``dev-clean`` -> ``dev``), else ``train``. Not allowed with a directory of subsets.
        g2p: phones from ``espeak-ng -x`` (``en-us``) read of each transcript; else ``phones=None``.
        workers: espeak-ng processes run at once for G2P.
    """
    root, out_dir = Path(root).expanduser().resolve(), Path(out_dir)
    if not root.is_dir():
        raise UserError(f"LibriSpeech root {root} does not exist or is not a directory")
    subsets = _subsets(root, split)
    config = {"root": str(root), "subsets": {str(d.relative_to(root)): s for d, s in subsets}, "g2p": g2p}
    existing = load_existing(out_dir, config)
    if existing is not None:
        log(f"LibriSpeech manifest for {root} already in {out_dir}")
        return existing
    if g2p:
        require_espeak()

    start = time.monotonic()
    utts, skipped, examples = _scan(root, subsets, progress)
    if not utts:
        detail = f" ({sum(skipped.values())} files skipped as unreadable, empty or untranscribed)" if skipped else ""
        raise UserError(
            f"no LibriSpeech utterances under {root}{detail}: expected "
            "<spk>/<chapter>/<spk>-<chapter>-<utt>.flac with <spk>-<chapter>.trans.txt"
        )
    if g2p:
        utts = _add_phones(utts, workers, progress)
    seen = {u.speaker for u in utts if u.split == "train"}
    utts = [dataclasses.replace(u, speaker_pool="seen" if u.speaker in seen else "unseen") for u in utts]

    info = {
        "name": f"librispeech-{root.name}",
        "source": "librispeech",
        "config": config,
        "skipped": {"total": sum(skipped.values()), "by_reason": dict(skipped), "examples": examples[:20]},
    }
    if g2p:
        info["g2p"] = {"tool": "espeak-ng", "version": espeak_version(), "voice": G2P_ACCENT}
    with atomic_dir(out_dir) as tmp:
        write_manifest(tmp, utts, info)
    log(f"read {len(utts)} LibriSpeech utterances from {root} in {time.monotonic() - start:.0f} s -> {out_dir}")
    return Corpus.load(out_dir)


def _subsets(root: Path, split: Optional[str]) -> list[tuple[Path, str]]:
    """(subset directory, split) pairs under ``root``."""
    if split is not None and split not in SPLITS:
        raise UserError(f"split must be one of {SPLITS}, found {split!r}")
    named = sorted(d for d in root.iterdir() if d.is_dir() and d.name.startswith(_SUBSET_PREFIXES))
    if not named:
        inferred = next((s for s in SPLITS if root.name.startswith(f"{s}-")), "train")
        return [(root, split or inferred)]
    if split is not None:
        raise UserError(
            f"{root} holds subset directories ({', '.join(d.name for d in named)}) whose names give "
            "their splits; a split can only be given for a single subset directory"
        )
    return [(d, d.name.split("-", 1)[0]) for d in named]


def _scan(
    root: Path, subsets: list[tuple[Path, str]], progress: bool
) -> tuple[list[Utterance], Counter, list[str]]:
    """Utterances (``speaker_pool``/``phones`` not yet set), skip counts by reason, skipped files."""
    import soundfile as sf

    files = [(audio, subset, split) for subset, split in subsets for audio in sorted(subset.glob("*/*/*.flac"))]
    transcripts = {}
    for subset, _ in subsets:
        for trans in sorted(subset.glob("*/*/*.trans.txt")):
            for line in trans.read_text(encoding="utf-8", errors="replace").splitlines():
                utt_id, _, text = line.strip().partition(" ")
                if utt_id and text.strip():
                    transcripts[utt_id] = " ".join(text.lower().split())

    skipped: Counter = Counter()
    examples: list[str] = []
    utts: dict[str, Utterance] = {}
    bar = Progress("scan", len(files), " files") if progress else None
    for audio, subset, split in files:
        reason = None
        try:
            info = sf.info(str(audio))
            if info.frames == 0:
                reason = "empty"
        except Exception:  # soundfile raises several types for unreadable files
            reason = "empty" if audio.stat().st_size == 0 else "unreadable"
        if reason is None and audio.stem not in transcripts:
            reason = "no_transcript"
        if reason is None and audio.stem in utts:
            reason = "duplicate_id"
        if reason is not None:
            skipped[reason] += 1
            examples.append(f"{audio.relative_to(root)} ({reason})")
        else:
            utts[audio.stem] = Utterance(
                id=audio.stem,
                audio=str(audio),
                num_samples=round(info.frames * SAMPLE_RATE / info.samplerate),
                split=split,
                speaker=audio.parent.parent.name,
                text=transcripts[audio.stem],
                meta={"subset": subset.name},
            )
        if bar:
            bar.update()
    if examples:
        log(f"warning: skipped {len(examples)} of {len(files)} audio files under {root}: {', '.join(examples[:5])}"
            + (" ..." if len(examples) > 5 else ""))
    return sorted(utts.values(), key=lambda u: u.id), skipped, examples


def _add_phones(utts: list[Utterance], workers: int, progress: bool) -> list[Utterance]:
    """Phones for every transcript; threads, since the work is in espeak-ng processes."""
    bar = Progress("g2p", len(utts), " utts") if progress else None
    out = []
    with ThreadPoolExecutor(workers) as pool:
        for utt, phones in zip(utts, pool.map(lambda u: espeak_g2p(u.text, G2P_ACCENT), utts)):
            out.append(dataclasses.replace(utt, phones=phones, meta={**utt.meta, "phones_source": "espeak-ng-g2p"}))
            if bar:
                bar.update()
    return out

