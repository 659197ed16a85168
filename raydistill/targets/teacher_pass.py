"""The teacher's pass over the corpus, in shards: Ray tasks across a cluster, or one loop here.

One pass computes, for every train utterance, whatever the target store is missing:

* features of some hidden states (float16) and the pre-training logits (float32), written
  into preallocated arrays of the store's layout (``[total_frames, D]``, frames in index order);
* a bounded random sample of the frames of each layer k-means will fit (each frame kept with
  probability ``sample_prob``, drawn per shard from a fixed seed), so k-means never needs a
  layer's features in memory — nor on disk;
* k-means units of layers that are not cached (labels of every frame, given centroids): the
  second pass of a store whose features do not fit its budget.

**Shards.** The train utterances, in index order, are cut into runs of about
``shard_seconds`` of audio. A shard writes its rows of every output with ``pwrite`` (byte
ranges, never pages shared with a neighbour: safe on NFS) and then a ``done/`` marker. The
pass's directory survives a killed node or driver; a rerun skips the shards with markers and
redoes the rest, whose rows are simply written again. Only when every shard is done are the
arrays renamed into the store.

**Batches.** Within a shard, utterances are sorted by length and grouped into batches of at
most ``batch_seconds`` of padded audio (default: 60 s on a GPU; on CPU one utterance at a time,
measured faster there), so padding stays small. HuBERT-base's first CNN layer
is a GroupNorm over the whole time axis: zero padding would change every frame of a padded
row. ``HubertModel`` therefore runs the CNN row by row when a batch's lengths differ, then
the transformer on the padded batch with a key-padding mask; a frame's target is that of the
utterance alone (tests compare the two to float tolerance), while the transformer — most of
the FLOPs — runs batched.

**Workers.** With Ray initialised, every shard is a Ray task (one GPU each on a GPU cluster,
else ``cpus`` CPUs); Ray retries a task whose node died. Without Ray it is the same function
in a loop in this process, with the already-loaded teacher.

**A pass that does not move.** When no shard has finished for ``stall_seconds`` (default 10
minutes: an autoscaler's GPU node takes minutes to boot and set up), the pass says once what
each waiting task asks for against what the cluster has, in all and free. A demand that no node
can hold, on a cluster without an autoscaler to add one, would wait forever: a UserError.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from raydistill.corpus.manifest import Corpus
from raydistill.errors import UserError
from raydistill.teacher.sources import LOGITS, load_teacher
from raydistill.utils import Progress, atomic_write_text, disk_guard, length_batches, log, save_npy

SAMPLE_RATE = 16000
GPU_BATCH_SECONDS = 60.0
STALL_SECONDS = 600.0  # no shard finished for this long: say what the waiting tasks ask for


@dataclass(frozen=True)
class PassSpec:
    """What one pass computes; everything a shard task needs besides its shard number."""

    source: str  # the teacher spec load_teacher() reads (Teacher.source)
    corpus_dir: str
    out: str  # the pass's directory (under the store root, on storage every node sees)
    layers: tuple[int, ...] = ()  # features written (LOGITS: logits)
    sample_layers: tuple[int, ...] = ()  # layers sampled for k-means
    sample_prob: float = 1.0
    units: tuple[tuple[int, int], ...] = ()  # (layer, K): labels assigned with out/centroids-l{L}-k{K}.npy
    # padded audio per forward pass; None: 60 s on a GPU, one utterance at a time on CPU, where
    # batching buys no parallelism and its padding cost 15-17 % (bench/RESULTS.md)
    batch_seconds: Optional[float] = None
    seed: int = 0

    @classmethod
    def from_dict(cls, d: dict) -> "PassSpec":
        return cls(**{**d, "layers": tuple(d["layers"]), "sample_layers": tuple(d["sample_layers"]),
                      "units": tuple(tuple(u) for u in d["units"])})


@dataclass
class PassStats:
    """What a pass did: audio seconds, wall time, shards run here and already done before."""

    seconds: float = 0.0
    wall: float = 0.0
    shards: int = 0
    skipped: int = 0
    workers: int = 1

    @property
    def speed(self) -> float:
        """Audio-seconds per second of wall time."""
        return self.seconds / self.wall if self.wall > 0 else float("nan")


def output_name(layer: int) -> str:
    return "logits.npy" if layer == LOGITS else f"layer{layer}.npy"


def units_name(layer: int, k: int) -> str:
    return f"units-l{layer}-k{k}.npy"


def centroids_name(layer: int, k: int) -> str:
    return f"centroids-l{layer}-k{k}.npy"


def make_shards(seconds: Sequence[float], shard_seconds: float) -> list[tuple[int, int]]:
    """Contiguous [start, stop) runs of utterances of about ``shard_seconds`` audio each."""
    shards, start, total = [], 0, 0.0
    for i, s in enumerate(seconds):
        total += s
        if total >= shard_seconds:
            shards.append((start, i + 1))
            start, total = i + 1, 0.0
    if start < len(seconds):
        shards.append((start, len(seconds)))
    return shards


def write_rows(path: Path, first_row: int, rows: np.ndarray) -> None:
    """Write ``rows`` into the ``.npy`` file at ``path`` from row ``first_row`` on, with
    ``pwrite``: only these bytes are touched, so shards on other nodes can write theirs."""
    with open(path, "r+b") as f:
        version = np.lib.format.read_magic(f)
        shape, _, dtype = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                           else np.lib.format.read_array_header_2_0)(f)
        header = f.tell()
        data = np.ascontiguousarray(rows, dtype=dtype)
        row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize
        if first_row + len(data) > shape[0]:
            raise ValueError(f"{path}: rows {first_row}..{first_row + len(data)} past its {shape[0]} rows")
        with disk_guard(path, data.nbytes):  # the file is sparse: its rows take space as they are written
            os.pwrite(f.fileno(), data.tobytes(), header + first_row * row_bytes)
            os.fsync(f.fileno())


_LOADED: dict = {}  # per worker process: teacher and corpus, reused by the shards it runs


def _cached(key: tuple, make):
    """One loaded object per kind (``key[0]``: corpus, teacher, index), kept for the next shard."""
    if key not in _LOADED:
        for old in [k for k in _LOADED if k[0] == key[0]]:
            del _LOADED[old]
        _LOADED[key] = make()
    return _LOADED[key]


def run_shard(spec: PassSpec | dict, shard: int, start: int, stop: int, *, teacher=None, corpus=None,
              device: Optional[str] = None) -> dict:
    """Compute one shard's rows of every output of ``spec`` and mark it done. Returns its stats.

    ``teacher`` / ``corpus``: already loaded (in-process); a Ray task loads them from the spec
    once per worker process."""
    spec = PassSpec.from_dict(spec) if isinstance(spec, dict) else spec
    out = Path(spec.out)
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if corpus is None:
        corpus = _cached(("corpus", spec.corpus_dir), lambda: Corpus.load(spec.corpus_dir))
    if teacher is None:  # a Ray task: the worker process keeps a CPU copy for its next shards
        cpu_copy = _cached(("teacher", spec.source), lambda: load_teacher(spec.source))
        try:
            return run_shard(spec, shard, start, stop, teacher=cpu_copy.to(device), corpus=corpus, device=device)
        finally:
            cpu_copy.to("cpu")  # an idle worker must not hold GPU memory the trials need
            if device.startswith("cuda"):
                torch.cuda.empty_cache()
    started = time.monotonic()
    # the pass's index (every utterance of the corpus: megabytes at 960 h), read once per worker
    index, by_id = _cached(("index", str(out)), lambda: (json.loads((out / "index.json").read_text()),
                                                          {u.id: u for u in corpus.utterances}))
    utts = [by_id[i] for i in index["ids"][start:stop]]
    offsets, frames = index["offsets"][start:stop], index["frames"][start:stop]
    centroids = {(layer, k): torch.from_numpy(np.load(out / centroids_name(layer, k))).to(device)
                 for layer, k in spec.units}
    wanted = sorted(set(spec.layers) | set(spec.sample_layers) | {layer for layer, _ in spec.units})
    rng = np.random.default_rng([spec.seed, shard])
    # rows of every output, per utterance in shard order, filled batch by batch
    names = [output_name(layer) for layer in spec.layers] + [units_name(*u) for u in spec.units]
    rows: dict[str, list] = {name: [None] * len(utts) for name in names}
    per_utt_samples: dict[int, list] = {layer: [None] * len(utts) for layer in spec.sample_layers}
    budget = spec.batch_seconds if spec.batch_seconds is not None else (GPU_BATCH_SECONDS if device != "cpu" else 0.0)
    for batch in length_batches([u.num_samples for u in utts], budget * SAMPLE_RATE, longest_first=False):
        waves = [torch.from_numpy(corpus.load_audio(utts[i])) for i in batch]
        lengths = torch.tensor([len(w) for w in waves])
        wave = torch.nn.utils.rnn.pad_sequence(waves, batch_first=True).to(device)
        feats, flen = teacher.layer_features(wave, lengths.to(device), wanted)
        for row, i in enumerate(batch):
            n = int(flen[row])
            if n != frames[i]:
                raise RuntimeError(f"{teacher.key} gave {n} frames for {utts[i].id}, expected {frames[i]}")
            for layer in spec.layers:  # held in the stored dtype: a shard's rows stay ~2 bytes a number
                dtype = torch.float32 if layer == LOGITS else torch.float16
                rows[output_name(layer)][i] = feats[layer][row, :n].to(dtype).cpu().numpy()
            for layer, k in spec.units:
                x = feats[layer][row, :n].float()
                rows[units_name(layer, k)][i] = torch.cdist(x, centroids[(layer, k)]).argmin(1).int().cpu().numpy()
            for layer in spec.sample_layers:
                keep = rng.random(n) < spec.sample_prob
                per_utt_samples[layer][i] = feats[layer][row, :n][torch.from_numpy(keep).to(device)].half().cpu().numpy()
    first = offsets[0] if utts else 0
    for name, parts in rows.items():
        if parts:
            write_rows(out / name, first, np.concatenate(parts))
    for layer, parts in per_utt_samples.items():
        save_npy(out / "samples" / f"layer{layer}" / f"shard-{shard:05d}.npy",
                 np.concatenate(parts) if parts else np.zeros((0, 0), np.float16))
    stats = {"shard": shard, "utterances": len(utts), "seconds": sum(u.seconds for u in utts),
             "wall": time.monotonic() - started, "node": os.uname().nodename, "pid": os.getpid()}
    atomic_write_text(out / "done" / f"shard-{shard:05d}.json", json.dumps(stats))
    return stats


def done_shards(out: Path) -> set[int]:
    return {int(p.stem.split("-")[1]) for p in (out / "done").glob("shard-*.json")} if (out / "done").is_dir() else set()


def prepare(spec: PassSpec, index: dict, dims: dict[int, int], extra: Optional[dict] = None) -> None:
    """Create the pass's directory and its preallocated outputs (sparse files), once: a resumed
    pass keeps them and the rows its finished shards wrote. ``extra``: {file name: array} the
    shards read (the centroids of a units pass)."""
    out = Path(spec.out)
    spec_file = out / "spec.json"
    if spec_file.is_file():
        if json.loads(spec_file.read_text()) != json.loads(json.dumps(asdict(spec))):
            raise RuntimeError(f"{out} holds another pass; remove it to start over")
        return
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    (out / "done").mkdir()
    atomic_write_text(out / "index.json", json.dumps(index))
    total = int(sum(index["frames"]))
    with disk_guard(out / "spec.json"):  # a failure here is safe: spec.json absent, the next run starts over
        for layer in spec.layers:
            dtype = np.float32 if layer == LOGITS else np.float16
            np.lib.format.open_memmap(out / output_name(layer), mode="w+", dtype=dtype, shape=(total, dims[layer]))
        for layer, k in spec.units:
            np.lib.format.open_memmap(out / units_name(layer, k), mode="w+", dtype=np.int32, shape=(total,))
    for name, array in (extra or {}).items():
        save_npy(out / name, array)
    atomic_write_text(spec_file, json.dumps(asdict(spec)))  # last: its presence means "prepared"


def run_pass(spec: PassSpec, shards: list[tuple[int, int]], seconds: Sequence[float], *, teacher=None,
             corpus=None, device: str = "cpu", cpus: float = 1.0, max_workers: Optional[int] = None,
             label: str = "teacher pass", distributed: bool = True, gpus: Optional[bool] = None,
             stall_seconds: float = STALL_SECONDS) -> PassStats:
    """Run every shard without a done marker: as Ray tasks if Ray is initialised (and
    ``distributed``), else here, one after the other. ``gpus``: a task takes one GPU (default:
    if the cluster has GPUs now; a search on an autoscaling GPU cluster says so explicitly).
    ``stall_seconds``: see the module's docstring."""
    out = Path(spec.out)
    done = done_shards(out)
    todo = [(i, s) for i, s in enumerate(shards) if i not in done]
    shard_seconds = [sum(seconds[a:b]) for a, b in shards]
    stats = PassStats(skipped=len(shards) - len(todo))
    if stats.skipped:
        log(f"{label}: {stats.skipped}/{len(shards)} shards already done (resuming)")
    progress = Progress(label, int(sum(shard_seconds)), " audio-s")
    progress.update(int(sum(shard_seconds[i] for i in done)))
    started = time.monotonic()

    def finished(result: dict) -> None:
        stats.seconds += result["seconds"]
        stats.shards += 1
        elapsed = time.monotonic() - started
        progress.update(int(result["seconds"]), f"{stats.seconds / elapsed:.0f} audio-s/s, "
                                                f"{stats.shards}/{len(todo)} shards")

    ray = _ray() if distributed else None
    if ray is None or not todo:
        for i, (a, b) in todo:
            finished(run_shard(spec, i, a, b, teacher=teacher, corpus=corpus, device=device))
    else:
        if gpus is None:
            gpus = ray.cluster_resources().get("GPU", 0) > 0
        options = {"num_gpus": 1, "num_cpus": cpus} if gpus else {"num_cpus": cpus}
        # max_calls=0: a GPU worker is reused for the next shard (Ray's default for GPU tasks is
        # a fresh process each time, reloading the teacher); it gives its GPU memory back after each
        task = ray.remote(max_retries=3, max_calls=0)(_ray_shard).options(**options)
        # every shard is submitted at once (an autoscaler sees the demand and adds GPU nodes);
        # max_workers caps the shards in flight instead
        limit = max_workers or len(todo)
        resources = ray.cluster_resources()
        fit = int(resources.get("GPU", 0)) if gpus else int(resources.get("CPU", 1) // cpus)
        stats.workers = max(1, min(limit, fit or 1, len(todo)))
        pending, queue = {}, list(todo)
        payload = asdict(spec)
        moved, told = time.monotonic(), False
        while queue or pending:
            while queue and len(pending) < limit:
                i, (a, b) = queue.pop(0)
                pending[task.remote(payload, i, a, b)] = i
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=min(30.0, stall_seconds))
            for ref in ready:
                pending.pop(ref)
                finished(ray.get(ref))
                moved, told = time.monotonic(), False
            if not ready and not told and time.monotonic() - moved >= stall_seconds:
                told = True
                try:
                    report_stall(ray, {"CPU": cpus, **({"GPU": 1} if gpus else {})}, len(pending) + len(queue),
                                 time.monotonic() - moved, label)
                except BaseException:
                    for ref in pending:
                        ray.cancel(ref)
                    raise
    stats.wall = time.monotonic() - started
    return stats


def report_stall(ray, ask: dict, waiting: int, seconds: float, label: str) -> None:
    """Say why a pass is not moving: what each waiting task asks for against what the cluster
    has, in all and free now. A demand that no node holds, on a cluster whose autoscaler cannot
    add a node (none configured), is a UserError."""
    total, free = ray.cluster_resources(), ray.available_resources()
    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    fits = any(all(node.get(k, 0) >= v for k, v in ask.items()) for node in nodes)
    what = (f"{label}: no shard finished in {seconds:.0f} s; {waiting} task(s) wait, each asking for "
            + ", ".join(f"{k} {v:g}" for k, v in ask.items()) + "; the cluster has "
            + ", ".join(f"{k} {free.get(k, 0):g} free of {total.get(k, 0):g}" for k in ask))
    if fits:
        log(f"{what} (busy: waiting for running work to give them back)")
    elif autoscaler_configured():
        log(f"{what}; no node has that now: waiting for the autoscaler to add one (`ray status` shows its launches)")
    else:
        raise UserError(f"{what}; no node has that and the cluster has no autoscaler to add one: add such a node, "
                        "or run without GPUs (a search: --gpus-per-worker 0)")


def autoscaler_configured() -> bool:
    """Whether the cluster's autoscaler has node types of its own (``ray up``, an
    ``--autoscaling-config``). Read from the status Ray's monitor reports (what ``ray status``
    shows): without an autoscaling config every node is the anonymous type ``node_<id>`` of its
    read-only provider; no status at all is no autoscaler."""
    from ray._private import ray_constants
    from ray.experimental.internal_kv import _internal_kv_get

    try:
        status = json.loads(_internal_kv_get(ray_constants.DEBUG_AUTOSCALING_STATUS) or "{}")
    except Exception:  # noqa: BLE001 - Ray's internals moved: do not fail a pass that may yet run
        return True
    mapping = (status.get("autoscaler_report") or {}).get("node_type_mapping") or {}
    return any(kind != f"node_{node}" for node, kind in mapping.items())


def _ray_shard(spec: dict, shard: int, start: int, stop: int) -> dict:
    import ray

    torch.set_num_threads(max(1, int(os.environ.get("OMP_NUM_THREADS", "1"))))
    device = "cuda" if ray.get_gpu_ids() and torch.cuda.is_available() else "cpu"
    return run_shard(spec, shard, start, stop, device=device)


def _ray():
    import sys

    ray = sys.modules.get("ray")
    return ray if ray is not None and ray.is_initialized() else None


def collect_samples(out: Path, layer: int) -> np.ndarray:
    """Every shard's k-means sample of ``layer``, in shard order: [N, D] float16."""
    parts = [np.load(p) for p in sorted((out / "samples" / f"layer{layer}").glob("shard-*.npy"))]
    parts = [p for p in parts if p.size]
    return np.concatenate(parts) if parts else np.zeros((0, 0), np.float16)
