"""What the masking knobs mask: the fraction of frames masked on a corpus's real training batches.

Replays the training loop's batching (length buckets, crops to the batch's shortest member) on
the corpus's train split and samples the masks the loop would sample, for fairseq's
``mask.prob`` (static and uniform spans) and for ``mask.frac``. One JSON line per setting:
the mean masked fraction over the batches, its spread across batches, and that of a single
row (what the cut to the batch's fewest masked frames costs). Defaults: the embedded
corpus of the main command (``runs/``); ``--shape 18x600`` instead uses batches of 18 rows of
600 frames, the shape of ARMHuBERT's LibriSpeech batches (18 length-sorted utterances of
about 12 s per GPU).

    .venv/bin/python bench/masking.py [--corpus DIR] [--batch-seconds 24] [--batches 200]
    .venv/bin/python bench/masking.py --shape 18x600
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from raydistill.config import MaskConfig  # noqa: E402
from raydistill.corpus.manifest import Corpus  # noqa: E402
from raydistill.models.config import ARCHITECTURES, conv_frames  # noqa: E402
from raydistill.train.masking import sample_mask  # noqa: E402

SETTINGS = [
    ("static", "prob", 0.8), ("static", "prob", 0.4), ("uniform", "prob", 0.8), ("uniform", "prob", 0.4),
    ("uniform", "prob", 0.2), ("static", "frac", 0.57), ("uniform", "frac", 0.8), ("uniform", "frac", 0.4),
    ("uniform", "frac", 0.2),
]


def batch_frames(corpus: Corpus, batch_seconds: float, max_seconds: float, batches: int, seed: int = 0):
    """(rows, frames) of the loop's batches: bucketed by length, cropped to the shortest member."""
    from raydistill.train.data import TrainData

    conv = ARCHITECTURES["tiny-teacher"].conv_layers
    utts = [u for u in corpus.utterances if u.split == "train"]
    fake = TrainData.__new__(TrainData)  # only its batching: no target cache needed
    fake.utterances = utts
    out, epoch = [], 0
    while len(out) < batches:
        for indices in fake.epoch_batches(batch_seconds, max_seconds, seed=seed, epoch=epoch):
            samples = min(min(utts[i].num_samples for i in indices), int(max_seconds * 16_000))
            out.append((len(indices), conv_frames(samples - samples % 320, conv)))
        epoch += 1
    return out[:batches]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--corpus", type=Path, help="corpus directory (default: the embedded corpus in runs/)")
    p.add_argument("--batch-seconds", type=float, default=24.0)
    p.add_argument("--max-seconds", type=float, default=15.6)
    p.add_argument("--batches", type=int, default=200)
    p.add_argument("--shape", metavar="ROWSxFRAMES", help="fixed batches of this shape instead of a corpus's")
    args = p.parse_args()
    if args.shape:
        rows, frames_per_row = (int(v) for v in args.shape.lower().split("x"))
        shapes, source = [(rows, frames_per_row)] * args.batches, f"fixed {args.shape}"
    else:
        root = args.corpus or next(Path("runs/corpora").glob("espeak-default-*"), None)
        if root is None:
            print("bench: no embedded corpus under runs/corpora: run the main command first (README) or "
                  "pass --corpus DIR or --shape ROWSxFRAMES", file=sys.stderr)
            raise SystemExit(2)
        shapes, source = batch_frames(Corpus.load(root), args.batch_seconds, args.max_seconds, args.batches), str(root)
    frames = np.array([t for _, t in shapes])
    print(json.dumps({"source": source, "batches": len(shapes), "rows_mean": float(np.mean([b for b, _ in shapes])),
                      "frames_mean": float(frames.mean()), "frames_p10_p90": np.percentile(frames, [10, 90]).tolist()}))
    for selection, knob, value in SETTINGS:
        cfg = MaskConfig(selection=selection, length=10, min_space=1, **{knob: value})
        g = torch.Generator().manual_seed(0)
        batch, single = [], []
        for rows, t in shapes:
            batch.append(float(sample_mask(cfg, [t] * rows, t, generator=g).float().mean()))
            single.append(float(sample_mask(cfg, [t], t, generator=g).float().mean()))
        print(json.dumps({"selection": selection, knob: value, "masked_frac": round(float(np.mean(batch)), 4),
                          "p10_p90": np.round(np.percentile(batch, [10, 90]), 3).tolist(),
                          "single_row": round(float(np.mean(single)), 4)}), flush=True)


if __name__ == "__main__":
    main()
