"""What a search will cache and compute, worked out before anything runs (``raydistill plan``).

Figures, and where they come from:

* **frames**: HuBERT's CNN gives 50 frames per second (20 ms stride), so ``frames = 50 × s``
  of train audio (with ``--corpus``: the CNN's exact count per utterance, a little less);
* **cache**: features of a hidden state are float16, ``frames × D × 2`` bytes; the
  pre-training logits float32, ``frames × C × 4``; the units of one (layer, K) int32,
  ``frames × 4`` plus ``K × D × 4`` of centroids; the k-means sample of a layer that is not
  cached ``1.2 × 100 000 × D × 2`` (``targets/store.py``);
* **teacher passes**: one pass for the cached features (and samples); a second when units
  are wanted of a layer that is not cached (its labels are assigned as the teacher computes
  it, after k-means has fitted on the first pass's sample). FLOPs = 2 × MACs/s × seconds;
* **trials**: a step trains on ``batch_seconds`` of audio; the student costs 3 × its forward
  (forward + backward ≈ 2 × forward), a teacher run live in the trial 1 × (2 × with masked
  input, which runs it twice). MACs/s are counted on the built models (``models/macs.py``) at
  the corpus's mean utterance length, since attention grows with T²;
* **evaluation**: feature extraction of the evaluated utterances by the student, per
  evaluation (the probe suite at every ASHA rung, the full suite at the end); the heads
  trained on the features are small beside it and left out;
* **GPU-hours** = FLOPs / (peak × MFU), at the peak of the precision each part runs in:
  training (bf16 autocast, a live teacher included) at ``--gpu-tflops`` (default an A100's
  312 dense bf16 TFLOP/s), the teacher pass and the evaluation (fp32; PyTorch leaves TF32
  matmuls off) at ``--fp32-tflops`` (default an A100's 19.5), both at a stated MFU (``--mfu``,
  default 0.12: published wav2vec 2.0 / HuBERT-sized training runs at 8-16 %, held back by the
  memory-bound first convolution, GroupNorm and padding). Nothing here has been measured on a
  GPU yet: the MFU is an assumption to be replaced by ``bench/step.py``'s figure;
* **cache reads**: a step of the trial that reads the most reads ``50 × step audio`` frames of
  each cached array its own ``needs`` names; over the step's time (above) that is GB/s per
  trial, times ``--concurrent`` trials in all, checked against ``--storage-gbps``;
* **GPU memory per worker** (``--memory``): measured on the CPU (``search/memory.py``);
* a step's audio is ``batch_seconds`` × ``optim.grad_accum`` per Train worker, times the space's
  ``resources.workers``.

Every trial is counted to its last step: ASHA stops some early, so the trial figures are an
upper bound. A composed space splits its trials evenly over its methods.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from raydistill.errors import UserError
from raydistill.evaluate.suite import TASKS, EvalBudget
from raydistill.methods import get_method, teacher_needs
from raydistill.teacher.info import TeacherInfo
from raydistill.models.config import ARCHITECTURES, conv_frames, hubert_conv
from raydistill.models.hubert import HubertModel
from raydistill.models.macs import count_params, macs_per_second
from raydistill.prepare import human_bytes
from raydistill.presets import TEACHERS
from raydistill.search.memory import step_memory
from raydistill.search.space import SearchSpace
from raydistill.targets.store import KMEANS_POINTS, TeacherNeeds
from raydistill.teacher.sources import load_teacher

FRAMES_PER_SECOND = 50
LIBRISPEECH_MEAN_SECONDS = 12.3  # mean utterance of LibriSpeech-960 (train), used with --hours
A100_BF16_TFLOPS = 312.0
A100_FP32_TFLOPS = 19.5  # dense fp32 without tensor cores: PyTorch leaves TF32 matmuls off
MEMORY_RESERVE = 0.1  # of a GPU's memory, left for the CUDA context, allocator fragmentation, workspaces
DEFAULT_MFU = 0.12  # published raw-waveform SSL/distillation training: 8-16 % of an A100's bf16 peak
@dataclass(frozen=True)
class CorpusShape:
    seconds: float  # train audio
    frames: int
    mean_seconds: float  # mean utterance length
    source: str  # "--hours 960" or the corpus directory

    @classmethod
    def from_hours(cls, hours: float) -> "CorpusShape":
        if not hours > 0:
            raise UserError(f"--hours must be > 0, found {hours}")
        seconds = hours * 3600.0
        return cls(seconds, int(round(FRAMES_PER_SECOND * seconds)), LIBRISPEECH_MEAN_SECONDS, f"--hours {hours:g}")

    @classmethod
    def from_corpus(cls, corpus) -> "CorpusShape":
        train = corpus.split("train")
        seconds = sum(u.num_samples for u in train) / 16000
        frames = sum(conv_frames(u.num_samples, hubert_conv()) for u in train)
        return cls(seconds, frames, seconds / max(len(train), 1), str(corpus.root))


def cache_items(needs: TeacherNeeds, frames: int, teacher: TeacherInfo) -> list[dict]:
    """Every array the target store will hold for ``needs``: {what, bytes, shape, dtype}."""
    items = []
    for layer in needs.features:
        items.append({"what": f"features of layer {layer}", "shape": [frames, teacher.embed_dim], "dtype": "float16",
                      "bytes": frames * teacher.embed_dim * 2})
    if needs.logits:
        items.append({"what": "pre-training logits", "shape": [frames, teacher.num_classes], "dtype": "float32",
                      "bytes": frames * teacher.num_classes * 4})
    for layer, k in needs.units:
        items.append({"what": f"units of layer {layer}, K={k}", "shape": [frames], "dtype": "int32",
                      "bytes": frames * 4 + k * teacher.embed_dim * 4})
    for layer in sorted({layer for layer, _ in needs.units} - set(needs.features)):
        rows = min(frames, int(1.2 * KMEANS_POINTS))
        items.append({"what": f"k-means sample of layer {layer}", "shape": [rows, teacher.embed_dim],
                      "dtype": "float16", "bytes": rows * teacher.embed_dim * 2})
    return items


def teacher_passes(needs: TeacherNeeds) -> list[str]:
    """What each teacher pass over the train audio computes for ``needs``."""
    first = [f"layer {layer}" for layer in needs.features] + (["logits"] if needs.logits else [])
    uncached = sorted({layer for layer, _ in needs.units} - set(needs.features))
    first += [f"k-means sample of layer {layer}" for layer in uncached]
    passes = [", ".join(first)] if first else []
    if uncached:
        passes.append(", ".join(f"units of layer {layer}, K={k}" for layer, k in needs.units if layer in uncached))
    return passes


def choose_teacher_features(space: SearchSpace, teacher: TeacherInfo, frames: int, *, mode: str,
                            budget: Optional[int], free: int, existing: int = 0) -> tuple[str, list[dict], str]:
    """Cache the teacher's features for the trials, or run it live in them: ``(choice, cache
    items, why)``. ``mode``: ``auto`` caches what fits ``budget`` (and the ``free`` bytes,
    less the ``existing`` bytes already cached), else goes live; ``cached`` refuses what does
    not fit; ``live`` always goes live. Units are cached either way (int32: small); when even
    they do not fit, the search is refused."""
    cached_needs = space.teacher_needs(teacher)
    live_needs = space.teacher_needs(teacher, live=True)
    cached_items, live_items = cache_items(cached_needs, frames, teacher), cache_items(live_needs, frames, teacher)
    limit = min(budget if budget is not None else float("inf"), free + existing)
    where = (f"--cache-budget {human_bytes(budget)}" if budget is not None and budget <= free + existing
             else f"the {human_bytes(free + existing)} free where the cache lives")

    def total(items):
        return sum(i["bytes"] for i in items)

    if mode == "live":
        return "live", live_items, "--teacher-features live: only units are cached"
    if cached_needs.cached_layers == live_needs.cached_layers:  # nothing but units (or nothing) to cache
        if total(live_items) > limit:
            raise UserError(f"the teacher's units take {human_bytes(total(live_items))}, more than {where}: "
                            "raise --cache-budget or free space")
        return "cached", live_items, "no features to cache: trials that need the teacher run it themselves"
    if total(cached_items) <= limit:
        return "cached", cached_items, f"{human_bytes(total(cached_items))} fits {where}"
    if mode == "cached":
        raise UserError(f"the teacher cache would take {human_bytes(total(cached_items))}, more than {where}: "
                        "raise --cache-budget, free space, or run the teacher in the trials with --teacher-features live")
    if total(live_items) > limit:
        raise UserError(f"even the teacher's units take {human_bytes(total(live_items))}, more than {where}: "
                        "raise --cache-budget or free space")
    return "live", live_items, (f"the features would take {human_bytes(total(cached_items))}, more than {where}: "
                                "trials run the teacher live (only units are cached)")


def teacher_macs(teacher_spec: Optional[str], seconds: float):
    """(TeacherInfo, MACs per audio second, name, HubertConfig) of the teacher: a spec is loaded;
    without one, HuBERT-base's architecture is built (random weights) and counted."""
    if teacher_spec:
        teacher = load_teacher(teacher_spec)
        info = teacher.info
        return info, macs_per_second(teacher.model, seconds), teacher_spec, teacher.model.cfg
    return TEACHERS["hubert-base"], hubert_base_macs(seconds), "hubert-base", ARCHITECTURES["hubert-base"]


@functools.lru_cache(maxsize=8)
def hubert_base_macs(seconds: float) -> int:
    """HuBERT-base's MACs per audio-second at ``seconds`` (a forward of the built model: kept)."""
    return macs_per_second(HubertModel(ARCHITECTURES["hubert-base"]), seconds)


def make_plan(space: SearchSpace, corpus: CorpusShape, *, trials: int, teacher_spec: Optional[str] = None,
              budget: Optional[int] = None, free: Optional[int] = None, mode: str = "auto",
              gpu_tflops: float = A100_BF16_TFLOPS, fp32_tflops: float = A100_FP32_TFLOPS, mfu: float = DEFAULT_MFU,
              final_suite: str = "full", storage_gbps: Optional[float] = None, concurrent: Optional[int] = None,
              memory: bool = False, gpu_memory: Optional[int] = None) -> dict:
    """The whole plan as a dict (what ``plan --json`` prints). ``memory``: measure each method's
    step on the CPU (search/memory.py; minutes at base scale)."""
    seconds = min(corpus.mean_seconds, 15.6)
    info, t_macs, t_name, t_arch = teacher_macs(teacher_spec, seconds)
    free = free if free is not None else 2**62  # no file system given: only the budget limits
    try:
        choice, items, why = choose_teacher_features(space, info, corpus.frames, mode=mode, budget=budget, free=free)
    except UserError as e:  # a plan shows what does not fit rather than refusing to be made
        choice = "cached" if mode == "cached" else "live"  # features refused, or even the units
        items = cache_items(space.teacher_needs(info, live=choice == "live"), corpus.frames, info)
        why = f"a search would be refused: {e}"
    if choice == "live":
        space = space.with_base({"teacher_features": "live"})
    needs = space.teacher_needs(info)
    configs = space.needs_configs()
    passes = teacher_passes(needs)
    pass_flops = 2 * t_macs * corpus.seconds
    bf16_rate = 1e12 * gpu_tflops * mfu  # achieved FLOP/s of training (bf16 autocast)
    fp32_rate = 1e12 * fp32_tflops * mfu  # of the teacher pass and the evaluation (fp32)
    concurrent = trials if concurrent is None else concurrent

    methods = []
    probe = EvalBudget.named("probe")
    full = EvalBudget.named(final_suite)
    tasks = space.tasks or full.tasks or TASKS
    # features are extracted once per evaluation for every task's utterances: PR and SID share
    # one subset, every other task draws its own
    groups = 1 + len([t for t in tasks if t not in ("pr", "sid")])
    eval_seconds = {"probe": (probe.train_utts + probe.dev_utts + probe.test_utts) * corpus.mean_seconds,
                    "full": groups * (full.train_utts + full.dev_utts + full.test_utts) * corpus.mean_seconds}
    for method in space.methods():
        config = space.base_config(method)
        student = get_method(method).build(config, info).model  # built once: counted and its MACs
        s_macs = float(macs_per_second(student, seconds))
        step_audio = config.optim.batch_seconds * config.optim.grad_accum * int(space.resources.get("workers", 1))
        audio = step_audio * config.optim.max_steps
        teacher_runs = teacher_runs_per_step(config)
        train_flops = 6 * s_macs * audio + 2 * teacher_runs * t_macs * audio
        evals = config.num_evals
        eval_flops = 2 * s_macs * (eval_seconds["probe"] * evals + eval_seconds["full"])
        step_seconds = train_flops / config.optim.max_steps / bf16_rate
        # what the trial reading the most reads from the cache, a step (all its workers)
        read = max(read_bytes_per_frame(teacher_needs(c, info), info) for c in configs if c.method == method)
        read_step = read * FRAMES_PER_SECOND * step_audio
        row = {"method": method, "params": count_params(student), "student_macs_per_second": s_macs,
               "steps": config.optim.max_steps, "batch_seconds": step_audio, "audio_seconds": audio,
               "teacher_live_runs_per_step": teacher_runs, "evaluations": evals,
               "train_flops": train_flops, "eval_flops": eval_flops,
               "train_gpu_hours": train_flops / bf16_rate / 3600, "eval_gpu_hours": eval_flops / fp32_rate / 3600,
               "gpu_hours": (train_flops / bf16_rate + eval_flops / fp32_rate) / 3600,
               "step_seconds": step_seconds, "read_bytes_per_step": read_step,
               "read_gbps": read_step / step_seconds / 1e9,
               # the teacher forward a cached read replaces, run live in the step (bf16, as the trial runs it)
               "live_teacher_seconds_per_step": 2 * t_macs * step_audio / bf16_rate}
        if memory:
            row["memory"] = step_memory(config, info, t_arch)
        methods.append(row)
    per_trial_hours = sum(m["gpu_hours"] for m in methods) / len(methods)
    pass_hours = pass_flops / fp32_rate / 3600
    total_cache = sum(i["bytes"] for i in items)
    return {
        "space": space.path, "trials": trials,
        "corpus": {"source": corpus.source, "seconds": corpus.seconds, "hours": corpus.seconds / 3600,
                   "frames": corpus.frames, "mean_utterance_seconds": corpus.mean_seconds},
        "teacher": {"name": t_name, "layers": info.num_layers, "dim": info.embed_dim, "units": info.num_classes,
                    "macs_per_second": t_macs},
        "teacher_features": {"choice": choice, "why": why, "budget": budget},
        "cache": {"items": items, "bytes": total_cache},
        "kmeans_memory_bytes": KMEANS_POINTS * info.embed_dim * 4 if needs.units else 0,
        "teacher_passes": [{"computes": p, "audio_seconds": corpus.seconds, "flops": pass_flops,
                            "gpu_hours": pass_hours} for p in passes],
        "methods": methods,
        "gpu": {"peak_tflops": gpu_tflops, "fp32_tflops": fp32_tflops, "mfu": mfu,
                "memory_bytes": gpu_memory, "memory_warnings": memory_warnings(methods, gpu_memory)},
        "storage": storage_plan(methods, storage_gbps, concurrent),
        "totals": {"teacher_pass_gpu_hours": len(passes) * pass_hours,
                   "trials_gpu_hours": trials * per_trial_hours,
                   "gpu_hours": len(passes) * pass_hours + trials * per_trial_hours},
    }


def read_bytes_per_frame(needs: TeacherNeeds, teacher: TeacherInfo) -> int:
    """Bytes a trial with ``needs`` reads from the cache per frame of its batch: float16
    features of each layer, float32 logits, the int32 unit of each (layer, K)."""
    return (len(needs.features) * teacher.embed_dim * 2 + (teacher.num_classes * 4 if needs.logits else 0)
            + 4 * len(needs.units))


def storage_plan(methods: list[dict], storage_gbps: Optional[float], concurrent: int) -> dict:
    """Read bandwidth of the cache: per trial (its method's reading trial), in all (``concurrent``
    trials at once, each at the most any method reads), and warnings when a trial's share of
    ``storage_gbps`` reads a step's features slower than the teacher would compute them live."""
    per_trial = max(m["read_gbps"] for m in methods)
    out = {"gbps": storage_gbps, "concurrent_trials": concurrent, "read_gbps_per_trial": per_trial,
           "read_gbps_total": per_trial * concurrent, "warnings": []}
    if storage_gbps is None:
        return out
    share = storage_gbps * 1e9 / concurrent
    for m in methods:
        if not m["read_bytes_per_step"]:
            continue
        m["read_seconds_per_step"] = m["read_bytes_per_step"] / share
        if m["read_seconds_per_step"] > m["live_teacher_seconds_per_step"]:
            out["warnings"].append(
                f"{m['method']}: reading a step's cached teacher outputs ({human_bytes(m['read_bytes_per_step'])}) "
                f"at {share / 1e9:.2f} GB/s ({storage_gbps:g} GB/s shared by {concurrent} trials) takes "
                f"{m['read_seconds_per_step']:.2f} s, more than running the teacher live "
                f"({m['live_teacher_seconds_per_step']:.2f} s): --teacher-features live, fewer concurrent trials "
                "or faster storage")
    return out


def memory_warnings(methods: list[dict], gpu_memory: Optional[int]) -> list[str]:
    """A line for each method whose measured step does not fit ``gpu_memory`` with
    ``MEMORY_RESERVE`` of it left for what the measurement leaves out (search/memory.py)."""
    if gpu_memory is None:
        return []
    usable = gpu_memory * (1 - MEMORY_RESERVE)
    return [f"{m['method']}: a step takes {human_bytes(m['memory']['bytes'])} of tensors per worker, more than "
            f"{human_bytes(usable)} ({1 - MEMORY_RESERVE:.0%} of --gpu-memory {human_bytes(gpu_memory)}): lower "
            "batch_seconds and raise optim.grad_accum, or use a larger GPU"
            for m in methods if "memory" in m and m["memory"]["bytes"] > usable]


def teacher_runs_per_step(config) -> int:
    """Teacher forward passes a training step runs (0: it reads the cache; a teacher loaded only
    to initialise the student costs no steps)."""
    live = config.teacher_features == "live"
    if config.method == "armhubert":
        return 2 if config.arm.masking else int(live)  # masked and unmasked input
    if config.method == "star":
        return int(live or config.star.attn_weight > 0)  # attention maps are never cached
    if config.method == "dicehubert":
        return int(live and (config.targets.labels == "soft" or config.feat_weight > 0))
    return int(live)  # kd, distilhubert


def format_plan(plan: dict) -> str:
    """The plan as a person reads it."""
    c, t = plan["corpus"], plan["teacher"]
    tf = plan["teacher_features"]
    lines = [
        f"plan for {plan['space']}: {plan['trials']} trials",
        f"corpus   {c['hours']:.1f} h of train audio ({c['source']}), {c['frames']:,} frames at 50/s, "
        f"mean utterance {c['mean_utterance_seconds']:.1f} s",
        f"teacher  {t['name']}: {t['layers']} layers x {t['dim']}, {t['units']} units, "
        f"{t['macs_per_second'] / 1e9:.2f} GMAC per audio-second",
        f"trials read the teacher's features: {tf['choice']} ({tf['why']})",
        "",
        f"cache ({human_bytes(plan['cache']['bytes'])}):",
    ]
    for item in plan["cache"]["items"]:
        shape = " x ".join(f"{n:,}" for n in item["shape"])
        lines.append(f"  {item['what']:<34} {shape:>22} {item['dtype']:<8} {human_bytes(item['bytes']):>10}")
    if plan["kmeans_memory_bytes"]:
        lines.append(f"  k-means fits on {KMEANS_POINTS:,} sampled frames: {human_bytes(plan['kmeans_memory_bytes'])} "
                     "of memory, whatever the corpus size")
    lines += ["", f"teacher passes over the train audio (fp32: GPU-hours x MFU {plan['gpu']['mfu']:g} of "
                  f"{plan['gpu']['fp32_tflops']:g} TFLOP/s):"]
    for i, p in enumerate(plan["teacher_passes"], 1):
        lines.append(f"  {i}. {p['computes']}: {p['flops'] / 1e15:.1f} PFLOP, {p['gpu_hours']:.2f} GPU-h")
    gpu = plan["gpu"]
    lines += ["", f"per trial (to its last step; GPU-hours x MFU {gpu['mfu']:g} of {gpu['peak_tflops']:g} TFLOP/s "
                  f"for training in bf16, of {gpu['fp32_tflops']:g} TFLOP/s for the evaluation in fp32):",
              f"  {'method':<13}{'params':>9}{'GMAC/s':>8}{'steps':>9}{'audio-h':>9}{'live T':>7}"
              f"{'train PFLOP':>13}{'eval PFLOP':>12}{'GPU-h':>8}{'read/step':>11}{'GB/s':>7}"]
    for m in plan["methods"]:
        lines.append(f"  {m['method']:<13}{m['params'] / 1e6:>8.2f}M{m['student_macs_per_second'] / 1e9:>8.2f}"
                     f"{m['steps']:>9,}{m['audio_seconds'] / 3600:>9.0f}{m['teacher_live_runs_per_step']:>7}"
                     f"{m['train_flops'] / 1e15:>13.1f}{m['eval_flops'] / 1e15:>12.2f}{m['gpu_hours']:>8.1f}"
                     f"{human_bytes(m['read_bytes_per_step']):>11}{m['read_gbps']:>7.2f}")
    st = plan["storage"]
    lines += ["", f"cache reads (the trial that reads the most, over its step at the MFU above): "
                  f"{st['read_gbps_per_trial']:.2f} GB/s per trial, {st['read_gbps_total']:.1f} GB/s for "
                  f"{st['concurrent_trials']} trials at once (--concurrent)"
                  + (f"; the store gives {st['gbps']:g} GB/s (--storage-gbps)" if st["gbps"] is not None
                     else "; give --storage-gbps to compare with the shared store")]
    lines += [f"  warning: {w}" for w in st["warnings"]]
    measured = [m for m in plan["methods"] if "memory" in m]
    if measured:
        lines += ["", "GPU memory per worker: a step's peak of tensors, measured on the CPU at the space's batch "
                      "(search/memory.py; not counted: the CUDA context, allocator fragmentation, workspaces):"]
        for m in measured:
            mem = m["memory"]
            lines.append(f"  {m['method']:<13}{human_bytes(mem['bytes']):>10} ({mem['precision']}, "
                         f"{mem['crops']:g} crops of {mem['crop_seconds']:g} s)")
        if gpu["memory_bytes"] is not None and not gpu["memory_warnings"]:
            lines.append(f"  every step fits {1 - MEMORY_RESERVE:.0%} of --gpu-memory {human_bytes(gpu['memory_bytes'])}")
    lines += [f"  warning: {w}" for w in gpu["memory_warnings"]]
    tot = plan["totals"]
    lines += ["", f"total: teacher passes {tot['teacher_pass_gpu_hours']:.1f} GPU-h + {plan['trials']} trials "
                  f"{tot['trials_gpu_hours']:.0f} GPU-h = {tot['gpu_hours']:.0f} GPU-h (an upper bound: ASHA stops "
                  "some trials early)"]
    return "\n".join(lines)


def markdown_table(plans: list[tuple[dict, dict]]) -> str:
    """README's "At real scale" table: a row per space from its plans with the teacher's
    features cached and live (``plan --markdown``)."""

    def passes(plan):
        return f"{human_bytes(plan['cache']['bytes'])}, {len(plan['teacher_passes'])}"

    def memory(plan):
        measured = [m["memory"]["bytes"] for m in plan["methods"] if "memory" in m]
        return human_bytes(max(measured)) if measured else "(--memory)"

    trials = plans[0][0]["trials"]
    lines = [f"| space ({trials} trials) | cached: cache, teacher passes | live: cache, passes | per trial: student, "
             "steps × s/step, teacher runs per step (cached/live), GPU-h (cached / live) | cached reads per trial: "
             "per step, GB/s | GPU memory per worker | GPU-h in all (cached / live) |",
             "|---|---|---|---|---|---|---|"]
    for cached, live in plans:
        if len(cached["methods"]) == 1:
            (c,), (v,) = cached["methods"], live["methods"]
            trial = (f"{c['params'] / 1e6:.1f}M, {c['steps'] / 1000:g}k × {c['batch_seconds']:g} s, "
                     f"{c['teacher_live_runs_per_step']}/{v['teacher_live_runs_per_step']}, "
                     f"{c['gpu_hours']:.1f} / {v['gpu_hours']:.1f}")
        else:
            trial = f"{len(cached['methods'])} methods, trials split evenly"
        reader = max(cached["methods"], key=lambda m: m["read_gbps"])
        reads = f"{human_bytes(reader['read_bytes_per_step'])}, {reader['read_gbps']:.2f}"
        space = Path(cached["space"])
        lines.append(f"| `{space.parent.name}/{space.name}` | {passes(cached)} | {passes(live)} | {trial} | {reads} | "
                     f"{memory(cached)} | {cached['totals']['gpu_hours']:.0f} / {live['totals']['gpu_hours']:.0f} |")
    return "\n".join(lines)
