"""The teacher pass (raydistill/targets/teacher_pass.py) and the k-means memory, measured.

Two measurements, one JSON line each:

``--what pass`` — audio-seconds per second of a HuBERT-base-shaped teacher (random weights:
the speed does not depend on them) over a corpus's train split, computing one layer's
features: one utterance at a time, length-batched in this process, and as Ray tasks over
shards with 1 and 2 workers on a local cluster (one CPU each, or one GPU each where Ray sees
GPUs). Reports each speed and the 2-worker scaling against linear (2 × the 1-worker speed).

``--what kmeans`` — peak memory of the k-means fit and of the label assignment of a layer
cached as a float16 memmap of N frames × D, for several N made up synthetically (each size in
a fresh process): the fit reads a bounded sample (100,000 rows) and the assignment one chunk at
a time into an int32 memmap, so the anonymous (heap) memory must stay flat as N grows. The
memmap's own pages are page cache (reclaimable, shared) and are reported apart.

    .venv/bin/python bench/teacher_pass.py --what pass                 # the --smoke corpus, built in bench-work/
    .venv/bin/python bench/teacher_pass.py --what pass --corpus DIR    # any corpus directory
    .venv/bin/python bench/teacher_pass.py --what kmeans --frames 250000,1000000,4000000
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import emit  # noqa: E402


def _teacher(workdir: Path) -> str:
    """A torchaudio ``hubert_base`` state dict with random weights (written once)."""
    import torch
    import torchaudio

    path = workdir / "hubert_base_random.pt"
    if not path.is_file():
        torch.manual_seed(0)
        torch.save(torchaudio.models.hubert_base().state_dict(), path)
    return f"torchaudio:{path}"


def _corpus(args, workdir: Path):
    from raydistill.corpus.manifest import Corpus
    from raydistill.corpus.synth import CorpusConfig, build_corpus

    if args.corpus:
        return Corpus.load(args.corpus)
    return build_corpus(CorpusConfig.smoke(), workdir / "smoke-corpus", progress=False)


def measure_pass(args) -> dict:
    import torch

    from raydistill.targets.store import TargetStore
    from raydistill.teacher.sources import load_teacher

    workdir = Path(args.workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    spec = _teacher(workdir)
    corpus = _corpus(args, workdir)
    train = corpus.split("train")[: args.utterances]
    seconds = sum(u.num_samples for u in train) / 16000
    device = "cuda" if torch.cuda.is_available() else "cpu"
    teacher = load_teacher(spec).to(device)
    torch.set_num_threads(1)  # like one Ray worker with one CPU
    results = {}

    def run(name, **kwargs):
        with tempfile.TemporaryDirectory(dir=workdir) as tmp:
            started = time.monotonic()
            TargetStore(Path(tmp) / "s").ensure(teacher, corpus, train, [], layers=[args.layer], device=device,
                                                **kwargs)
            wall = time.monotonic() - started
        results[name] = {"seconds": round(wall, 2), "audio_seconds_per_second": round(seconds / wall, 2)}
        print(f"{name}: {seconds / wall:.1f} audio-s/s", file=sys.stderr)

    run("in_process_one_at_a_time", batch_seconds=1e-6)
    run("in_process_batched", batch_seconds=args.batch_seconds)
    workers = [int(w) for w in args.ray_workers.split(",") if w.strip()]
    if workers:
        import ray

        ray.init(num_cpus=max(workers), include_dashboard=False, log_to_driver=False)
        try:
            for n in workers:
                run(f"ray_{n}_worker_batched", batch_seconds=args.batch_seconds, distributed=True,
                    max_workers=n, shard_seconds=args.shard_seconds)
        finally:
            ray.shutdown()
    record = {"bench": "teacher_pass", "teacher": "hubert_base (random weights)", "device": device,
              "layer": args.layer, "utterances": len(train), "audio_seconds": round(seconds, 1),
              "batch_seconds": args.batch_seconds, "shard_seconds": args.shard_seconds, **results,
              "batched_speedup": round(results["in_process_batched"]["audio_seconds_per_second"]
                                       / results["in_process_one_at_a_time"]["audio_seconds_per_second"], 2)}
    if 1 in workers and max(workers) > 1:
        one, many = (results[f"ray_{n}_worker_batched"]["audio_seconds_per_second"] for n in (1, max(workers)))
        record[f"scaling_{max(workers)}_workers_vs_linear"] = round(many / (max(workers) * one), 2)
    return record


def _status() -> dict:
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("RssAnon", "RssFile", "VmHWM"):
            out[key] = int(value.split()[0]) / 1024  # MiB
    return out


class Peak:
    """Samples /proc/self/status every 20 ms: the largest anonymous and file-backed RSS."""

    def __init__(self):
        self.anon = self.file = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            s = _status()
            self.anon, self.file = max(self.anon, s["RssAnon"]), max(self.file, s["RssFile"])
            time.sleep(0.02)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def kmeans_child(frames: int, dim: int, k: int, folder: Path) -> dict:
    """In a fresh process: fit + assign on an N × D float16 memmap; peak memory of each."""
    from raydistill.targets.kmeans import assign, fit_kmeans

    path = folder / "features.npy"
    feats = np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=(frames, dim))
    rng = np.random.default_rng(0)
    centers = rng.standard_normal((200, dim)).astype(np.float16) * 3
    for start in range(0, frames, 100_000):  # clustered rows, written a block at a time
        n = min(100_000, frames - start)
        feats[start : start + n] = centers[rng.integers(200, size=n)] + rng.standard_normal((n, dim)).astype(np.float16)
    feats.flush()
    del feats
    base = _status()["RssAnon"]
    x = np.load(path, mmap_mode="r")
    out = {"frames": frames, "dim": dim, "k": k, "baseline_anon_mib": round(base, 1)}
    with Peak() as fit_peak:
        started = time.monotonic()
        centroids, _ = fit_kmeans(x, k, seed=0)
        out["fit_seconds"] = round(time.monotonic() - started, 1)
    with Peak() as assign_peak:
        started = time.monotonic()
        labels = np.lib.format.open_memmap(folder / "labels.npy", mode="w+", dtype=np.int32, shape=(frames,))
        assign(x, centroids, out=labels)
        labels.flush()
        out["assign_seconds"] = round(time.monotonic() - started, 1)
    out.update(fit_peak_anon_mib=round(fit_peak.anon, 1), assign_peak_anon_mib=round(assign_peak.anon, 1),
               assign_peak_file_mib=round(assign_peak.file, 1), features_mib=round(frames * dim * 2 / 2**20, 1))
    return out


def measure_kmeans(args) -> dict:
    rows = []
    for frames in (int(f) for f in args.frames.split(",")):
        with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
            code = ("import sys, json; sys.path.insert(0, sys.argv[1]); from teacher_pass import kmeans_child; "
                    "from pathlib import Path; print(json.dumps(kmeans_child(int(sys.argv[2]), int(sys.argv[3]), "
                    "int(sys.argv[4]), Path(sys.argv[5]))))")
            out = subprocess.run([sys.executable, "-c", code, str(Path(__file__).parent), str(frames), str(args.dim),
                                  str(args.k), tmp], capture_output=True, text=True, check=True)
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(rows[-1], file=sys.stderr)
    return {"bench": "kmeans_memory", "sizes": rows,
            "anon_growth_mib": round(max(r["assign_peak_anon_mib"] for r in rows)
                                     - min(r["assign_peak_anon_mib"] for r in rows), 1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--what", choices=("pass", "kmeans"), required=True)
    p.add_argument("--workdir", default="bench-work", help="scratch directory (default ./bench-work)")
    p.add_argument("--corpus", help="a corpus directory (default: the --smoke corpus, built in --workdir)")
    p.add_argument("--utterances", type=int, default=80, help="train utterances to run (default 80)")
    p.add_argument("--layer", type=int, default=9)
    p.add_argument("--batch-seconds", type=float, default=60.0)
    p.add_argument("--shard-seconds", type=float, default=20.0)
    p.add_argument("--ray-workers", default="1,2",
                   help="Ray worker counts to measure on a local cluster it starts (default 1,2; empty: none, "
                        "e.g. when another Ray cluster runs on this machine)")
    p.add_argument("--frames", default="250000,1000000,4000000", help="corpus sizes in frames (kmeans)")
    p.add_argument("--dim", type=int, default=768)
    p.add_argument("--k", type=int, default=500)
    args = p.parse_args()
    Path(args.workdir).mkdir(parents=True, exist_ok=True)
    emit(measure_pass(args) if args.what == "pass" else measure_kmeans(args))


if __name__ == "__main__":
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    main()
