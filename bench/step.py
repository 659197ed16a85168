"""Distillation step throughput and MFU of raydistill's own training loop, variants side by side.

Every variant runs ``raydistill.train.loop.train`` (the loop trials run) on the embedded
corpus for ``--warmup`` (compiled variants: ``--compile-warmup``) + ``--steps`` steps and reports the steady state (steps after the
warm-up): audio-seconds per second, step time, model FLOPs utilisation, peak memory, and the
audio the length-bucketed batches crop away. One JSON line per variant:

* teacher ``cached`` (its layer features memory-mapped from the target cache) vs ``live`` (the
  teacher's forward pass inside every step);
* ``fp32`` vs ``bf16`` autocast; eager vs ``torch.compile``.

``--grad-accum N`` runs every variant with N batches of ``--batch-seconds`` per optimizer step
(``optim.grad_accum``); ``--steps`` and ``step_seconds`` count optimizer steps.

Sizes: ``base`` = a HuBERT-base-sized teacher (12 x 768, random weights: throughput does not
depend on them) and a 26.9M student (12 x 384, FFN 1536: DiceHuBERT's narrow D/2) trained with
DistilHuBERT's layer-prediction loss on teacher layers 4/8/12; ``tiny`` = the embedded teacher
(4 x 192) and a 4 x 96 student, for CPUs. Default: ``base`` on a GPU, ``tiny`` otherwise.

MFU = audio-s/s x FLOPs per audio-second / peak, FLOPs = 2 x teacher MACs (live only) +
6 x student MACs (forward + backward), counted on the built models (raydistill/models/macs.py).

``--spaces a.yaml,b.yaml`` measures instead each search space's base configuration (its method,
student and batch; ``--batch-seconds`` overrides the batch) with the teacher live (``--teacher``),
which bounds what a trial of the space needs whether its features are cached or not: one JSON
line per space with the peak memory of its steps (``peak_gpu_mb`` on a GPU).

    .venv/bin/python bench/step.py                     # all variants
    .venv/bin/python bench/step.py --variants cached-bf16-eager,live-bf16-compile
    .venv/bin/python bench/step.py --spaces search_spaces/base/dice.yaml --teacher torchaudio:hubert_pretrain_base.pt
"""

from __future__ import annotations

import argparse
import itertools
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import emit, peak_memory_mb  # noqa: E402

# dense bf16 peak, TFLOP/s (datasheets; docs/architecture.md#flops-macs-and-mfu)
PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L4": 121.0, "A10G": 70.0}

SIZES = {
    "base": {"teacher": {"preset": "hubert-base"},
             "student": {"preset": "hubert-base", "embed_dim": 384, "ffn_dim": 1536, "num_heads": 6}},
    "tiny": {"teacher": None,  # the embedded teacher
             "student": {"preset": "tiny-teacher", "embed_dim": 96, "ffn_dim": 384}},
}


def peak_tflops(device) -> float | None:
    import torch

    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_TFLOPS.items() if k in name), None)


def random_teacher(path: Path, arch: dict):
    """A HuBERT-base-shaped teacher with random weights, saved as a raydistill checkpoint."""
    import torch

    from raydistill.config import TrainConfig
    from raydistill.methods import TeacherInfo, get_method
    from raydistill.models.checkpoint import save_student

    if not path.is_file():
        config = TrainConfig.from_dict({"method": "dicehubert", "student": arch,
                                        "targets": {"teacher_layer": 9, "num_clusters": 500}}, where="bench")
        torch.manual_seed(0)
        module = get_method("dicehubert").build(config, TeacherInfo(0, 0, 500))
        path.parent.mkdir(parents=True, exist_ok=True)
        save_student(path, config, module, {}, masks_input=True)
    return f"raydistill:{path}"


def crop_waste(data, batch_seconds: float, max_seconds: float) -> float:
    """Share of an epoch's audio that cropping every batch to its shortest member leaves out."""
    batches = data.epoch_batches(batch_seconds, max_seconds, seed=0, epoch=0)
    cap = int(max_seconds * 16_000)
    kept = total = 0
    for indices in batches:
        lengths = [min(data.utterances[i].num_samples, cap) for i in indices]
        kept += len(lengths) * min(lengths)
        total += sum(lengths)
    return 1 - kept / total


def train_steps(config, teacher, corpus, store_for, device):
    """Run ``config`` through the training loop: (data, teacher needs, reported metrics, wall seconds).
    The peak memory counters start at zero here (on CUDA; the host's is the process's)."""
    import torch

    from raydistill.methods import teacher_needs
    from raydistill.train.data import TrainData
    from raydistill.train.loop import train

    needs = teacher_needs(config, teacher.info)
    data = TrainData(corpus, store_for(needs), needs, config.student.conv_layers)
    reports = []
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="raydistill-bench-") as tmp:
        train(config, data, report=lambda metrics, _: reports.append(metrics), checkpoint_dir=Path(tmp),
              teacher=teacher.describe(), live_teacher=teacher.to(device) if needs.live else None, device=device)
    return data, needs, reports, time.perf_counter() - started


def run_space(path: Path, teacher, corpus, store_for, args, device) -> dict:
    """The peak memory of ``--warmup`` + ``--steps`` steps of a space's base configuration at its
    batch (``--batch-seconds``/``--max-seconds`` when given), the teacher live."""
    from raydistill.config import TrainConfig
    from raydistill.search.space import load_space

    d = load_space(path).base_config().to_dict()
    optim = {**d["optim"], "max_steps": args.warmup + args.steps}
    if args.batch_seconds:
        optim.update(batch_seconds=args.batch_seconds, max_seconds=args.max_seconds)
    config = TrainConfig.from_dict({**d, "optim": optim, "teacher_features": "live", "eval_every": args.warmup},
                                   where=str(path))
    _, _, reports, wall = train_steps(config, teacher, corpus, store_for, device)
    return {"bench": "step_space", "space": str(path), "method": config.method, "teacher_features": "live",
            "batch_seconds": config.optim.batch_seconds, "max_seconds": config.optim.max_seconds,
            "precision": config.optim.precision, "device": str(device), "steps": config.optim.max_steps,
            "wall_seconds": round(wall, 1), **peak_memory_mb(device)}


def run_variant(name: str, teacher, corpus, store_for, student: dict, args, device) -> dict:
    from raydistill.config import TrainConfig
    from raydistill.methods import get_method
    from raydistill.models.macs import macs_per_second

    mode, precision, compiled = name.split("-")
    # compiled variants recompile for the first few batch shapes (dynamic shapes settle after a few)
    warmup = args.compile_warmup if compiled == "compile" else args.warmup
    config = TrainConfig.from_dict({
        "method": "distilhubert", "student": student, "distil": {"init_from_teacher": False},
        "teacher_features": mode, "eval_every": warmup,
        "optim": {"max_steps": warmup + args.steps, "batch_seconds": args.batch_seconds,
                  "max_seconds": args.max_seconds, "lr": 5e-4, "precision": precision,
                  "compile": compiled == "compile", "grad_accum": args.grad_accum},
    }, where="bench")
    info = teacher.info
    data, needs, reports, wall = train_steps(config, teacher, corpus, store_for, device)
    # steady state: the reports after the first (which holds the warm-up and compilation)
    first, rest = reports[0], reports[1:]
    seconds = rest[-1]["train_seconds"] - first["train_seconds"]
    previous, audio = first["train_seconds"], 0.0
    for r in rest:
        audio += r["audio_seconds_per_second"] * (r["train_seconds"] - previous)
        previous = r["train_seconds"]
    rate = audio / seconds
    model = get_method(config.method).build(config, info).model
    student_macs = macs_per_second(model, seconds=args.max_seconds)
    teacher_macs = macs_per_second(teacher.model.to("cpu"), seconds=args.max_seconds) if needs.live else 0
    flops = 2 * teacher_macs + 6 * student_macs
    out = {"bench": "step", "variant": name, "teacher_features": mode, "precision": precision,
           "compile": compiled == "compile", "grad_accum": args.grad_accum, "device": str(device),
           "steps_measured": args.steps,
           "audio_seconds_per_second": round(rate, 2), "step_seconds": round(seconds / args.steps, 4),
           "gflop_per_audio_second": round(flops / 1e9, 2), "achieved_tflops": round(rate * flops / 1e12, 4),
           "student_params": sum(p.numel() for p in model.parameters()), "wall_seconds": round(wall, 1),
           "crop_waste": round(crop_waste(data, args.batch_seconds, args.max_seconds), 4),
           **peak_memory_mb(device)}
    peak = peak_tflops(device)
    if peak:
        out["mfu"] = round(rate * flops / (peak * 1e12), 4)
        out["peak_tflops"] = peak
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", choices=["auto", "base", "tiny"], default="auto")
    p.add_argument("--workdir", type=Path, default=Path("runs"), help="the main command's workdir (corpus, caches)")
    p.add_argument("--variants", help="comma-separated MODE-PRECISION-COMPILE names (default: all 8)")
    p.add_argument("--warmup", type=int, default=3, help="steps before measuring (eager variants)")
    p.add_argument("--compile-warmup", type=int, default=8, help="steps before measuring (compiled variants)")
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--batch-seconds", type=float, default=None, help="default: 80 (base), 24 (tiny)")
    p.add_argument("--max-seconds", type=float, default=15.6)
    p.add_argument("--grad-accum", type=int, default=1, help="batches per optimizer step (optim.grad_accum)")
    p.add_argument("--device", default=None)
    p.add_argument("--corpus", help="a corpus directory (default: the embedded corpus, built in --workdir)")
    p.add_argument("--teacher", help="teacher spec (default: a random-weight HuBERT-base-shaped raydistill "
                   "checkpoint (base) or the embedded teacher (tiny))")
    p.add_argument("--spaces", help="comma-separated search-space files: measure their base configurations instead")
    args = p.parse_args(argv)

    import torch

    from raydistill.prepare import Workdir, ensure_targets, resolve_corpus, resolve_teacher
    from raydistill.teacher.sources import load_teacher

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    size = args.size if args.size != "auto" else ("base" if device.type == "cuda" else "tiny")
    workdir = Workdir(args.workdir)
    corpus = resolve_corpus(args.corpus, workdir)
    if args.teacher:
        teacher = load_teacher(args.teacher)
    elif SIZES[size]["teacher"] is None:
        teacher = resolve_teacher("embedded", workdir, corpus, device=str(device))
    else:
        teacher = load_teacher(random_teacher(workdir.cache / "bench" / "hubert-base-random.pt", SIZES[size]["teacher"]))

    def store_for(needs):
        return ensure_targets(teacher, corpus, workdir, needs, device=str(device))

    if args.spaces:
        for path in args.spaces.split(","):
            emit(run_space(Path(path), teacher, corpus, store_for, args, device))
        return 0
    args.batch_seconds = args.batch_seconds or (80.0 if size == "base" else 24.0)
    names = args.variants.split(",") if args.variants else [
        "-".join(v) for v in itertools.product(("cached", "live"), ("fp32", "bf16"), ("eager", "compile"))]
    for name in names:
        record = run_variant(name, teacher, corpus, store_for, SIZES[size]["student"], args, device)
        emit({**record, "size": size, "batch_seconds": args.batch_seconds})
    return 0


if __name__ == "__main__":
    sys.exit(main())
