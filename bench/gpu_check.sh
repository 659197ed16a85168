#!/usr/bin/env bash
# The GPU acceptance check: on a fresh single-GPU machine, one command sets up with `gpu` and
# prints ONE JSON summary (stdout; progress on stderr) of what a GPU search relies on, measured
# with bench/'s own entry points and the CLI (docs/gpu.md, "The acceptance check"):
#
#   setup          scripts/setup.sh gpu (time, exit status)
#   device         torch, CUDA, the GPU, faiss's build, raydistill.gpu.cuda_problem()
#   kmeans         faiss k-means (bench/kmeans.py, 200,000 x 768 rows, K 500) on the GPU vs the CPU
#   step           bench/step.py: bf16 eager steps of the 26.9M student with a HuBERT-base teacher,
#                  cached and live: MFU, audio-s/s
#   teacher_pass   bench/teacher_pass.py --what pass: audio-s/s of HuBERT-base over 80 utterances
#   space_memory   bench/step.py --spaces: peak GPU memory of each base space's step at its batch
#                  (search_spaces/base/*.yaml but all.yaml, which runs their trials), teacher live
#   search         a two-trial smoke search of search_spaces/base/dice.yaml, --gpus-per-worker 0.5
#
# No network is needed after setup: the teacher is a random-weight torchaudio hubert_pretrain_base
# saved here, the corpora are synthesised (espeak-ng). About 8 minutes on one GPU after setup.
#
#   bench/gpu_check.sh                 # the check (exit 1 when a part failed; each part says why)
#   bench/gpu_check.sh --no-setup      # with the .venv as it is (no pip, no apt)
#   bench/gpu_check.sh --cpu           # CI: tiny sizes on the CPU, no setup; what needs CUDA
#                                      # reads "skipped: no GPU" (tests/test_gpu_check.py)
#
# PYTHON=... picks the interpreter (default .venv/bin/python); WORK=DIR keeps the scratch files
# (default: a fresh directory under /tmp, removed at the end unless a part failed).
set -uo pipefail
cd "$(dirname "$0")/.."
mode=gpu
setup=1
for arg in "$@"; do
  case "$arg" in
    --cpu) mode=cpu; setup=0 ;;
    --no-setup) setup=0 ;;
    *) echo "gpu_check.sh: unknown argument '$arg' (use: --cpu, --no-setup)" >&2; exit 2 ;;
  esac
done
py=${PYTHON:-.venv/bin/python}
work=${WORK:-$(mktemp -d /tmp/raydistill-gpu-check.XXXXXX)}
parts="$work/parts"
mkdir -p "$parts"
started=$(date +%s)
base=search_spaces/base
spaces="$base/dice.yaml,$base/distil.yaml,$base/kd.yaml,$base/star.yaml,$base/arm.yaml"

# part NAME CMD...: run CMD, its stdout in parts/NAME.out, stderr in parts/NAME.log, exit status
# and seconds in parts/NAME.status. skip NAME WHY: the part did not run.
part() {
  local name=$1 t0 rc=0
  shift
  echo "[gpu_check] $name: $*" >&2
  t0=$(date +%s)
  "$@" >"$parts/$name.out" 2>"$parts/$name.log" || rc=$?
  echo "{\"rc\": $rc, \"seconds\": $(($(date +%s) - t0))}" >"$parts/$name.status"
  ((rc == 0)) || echo "[gpu_check] $name failed (exit $rc): $(tail -n 1 "$parts/$name.log")" >&2
}
skip() { echo "$2" >"$parts/$1.skipped"; }

if ((setup)); then part setup scripts/setup.sh gpu; else skip setup "skipped: --cpu or --no-setup"; fi
part device "$py" -c '
import json, torch, faiss
from raydistill.gpu import cuda_problem
cuda = torch.cuda.is_available()
print(json.dumps({"torch": torch.__version__, "torch_cuda": torch.version.cuda, "cuda_available": cuda,
                  "gpu": torch.cuda.get_device_name() if cuda else None, "faiss": faiss.__version__,
                  "faiss_gpus": faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0,
                  "cuda_problem": cuda_problem()}))'
gpu=0
if [ "$mode" = gpu ]; then
  if grep -q '"cuda_available": true' "$parts/device.out" 2>/dev/null; then gpu=1; else
    echo "[gpu_check] no GPU that torch can use: the GPU parts are skipped (see device.cuda_problem)" >&2
  fi
fi

# What the parts share: corpora (synthesised) and the teacher.
if ((gpu)); then
  part corpus "$py" -m raydistill corpus synth --out "$work/corpus"  # 1.4 h: batches up to 295 s fill
  part smoke_corpus "$py" -m raydistill corpus synth --smoke --out "$work/smoke"
  corpus="$work/corpus" smoke="$work/smoke"
else
  printf 'num_seen_speakers: 4\nnum_unseen_speakers: 2\nutts_per_seen_speaker: 6\nutts_per_unseen_speaker: 3\n' \
    >"$work/tiny.yaml"  # 30 utterances: enough frames for K = 500
  part corpus "$py" -m raydistill corpus synth --smoke --config "$work/tiny.yaml" --out "$work/corpus"
  corpus="$work/corpus" smoke="$work/corpus"
fi
part teacher "$py" -c '
import sys, torch, torchaudio
torch.manual_seed(0)
torch.save(torchaudio.models.hubert_pretrain_base().state_dict(), sys.argv[1])' "$work/hubert_pretrain_base.pt"
teacher="torchaudio:$work/hubert_pretrain_base.pt"

if ((gpu)); then
  part kmeans_gpu "$py" bench/kmeans.py --synthetic 200000 768 --k 500 --skip-sklearn
  part kmeans_cpu env CUDA_VISIBLE_DEVICES= "$py" bench/kmeans.py --synthetic 200000 768 --k 500 --skip-sklearn
  part step "$py" bench/step.py --size base --variants cached-bf16-eager,live-bf16-eager --corpus "$corpus" \
    --workdir "$work/runs"
  part teacher_pass "$py" bench/teacher_pass.py --what pass --corpus "$corpus" --ray-workers= --workdir "$work/tp"
  part space_memory "$py" bench/step.py --spaces "$spaces" --teacher "$teacher" --corpus "$corpus" \
    --workdir "$work/runs" --warmup 1 --steps 2
  part search "$py" -m raydistill search --space "$base/dice.yaml" --smoke --trials 2 --gpus-per-worker 0.5 \
    --corpus "$smoke" --teacher "$teacher" --workdir "$work/search" --experiment gpu-check --name gpu-check --confirm 0
else
  tiny=(--batch-seconds 4 --max-seconds 2 --warmup 1 --steps 1 --device cpu)
  skip kmeans_gpu "skipped: no GPU"
  part kmeans_cpu env CUDA_VISIBLE_DEVICES= "$py" bench/kmeans.py --synthetic 6000 16 --k 20 --skip-sklearn
  part step "$py" bench/step.py --size base --variants live-bf16-eager --corpus "$corpus" --workdir "$work/runs" \
    --teacher "$teacher" "${tiny[@]}"
  part teacher_pass "$py" bench/teacher_pass.py --what pass --corpus "$corpus" --ray-workers= --workdir "$work/tp" \
    --utterances 2
  part space_memory "$py" bench/step.py --spaces "$base/distil.yaml" --teacher "$teacher" --corpus "$corpus" \
    --workdir "$work/runs" "${tiny[@]}"
  # one trial: what CI checks is that the part runs and reports (2 x ~40 s more on 2 cores)
  part search "$py" -m raydistill search --space "$base/dice.yaml" --smoke --trials 1 --gpus-per-worker 0 \
    --corpus "$smoke" --teacher "$teacher" --workdir "$work/search" --experiment gpu-check --name gpu-check --confirm 0
fi

"$py" - "$parts" "$mode" "$spaces" "$(($(date +%s) - started))" <<'EOF'
"""Merge the parts into the one JSON summary."""
import json
import re
import sys
from pathlib import Path

parts, mode, spaces, seconds = Path(sys.argv[1]), sys.argv[2], sys.argv[3].split(","), int(sys.argv[4])


def records(name):
    """The part's JSON lines, or its failure / skip as a string."""
    if (parts / f"{name}.skipped").is_file():
        return (parts / f"{name}.skipped").read_text().strip()
    if not (parts / f"{name}.status").is_file():
        return "skipped: no GPU"
    status = json.loads((parts / f"{name}.status").read_text())
    if status["rc"]:
        log = (parts / f"{name}.log").read_text().strip().splitlines()
        return f"failed (exit {status['rc']}, {status['seconds']} s): {log[-1] if log else ''}"
    out = [json.loads(line) for line in (parts / f"{name}.out").read_text().splitlines() if line.startswith("{")]
    return [{**r, "part_seconds": status["seconds"]} for r in out] or [{"part_seconds": status["seconds"]}]


def pick(record, *keys):
    return {k: record[k] for k in keys if k in record}


summary = {"check": "gpu", "mode": mode}
for name in ("setup", "device"):
    got = records(name)
    summary[name] = got if isinstance(got, str) else got[0]
gpu, cpu = records("kmeans_gpu"), records("kmeans_cpu")
summary["kmeans"] = {"gpu": gpu if isinstance(gpu, str) else pick(gpu[0], "rows", "dim", "k", "faiss_kmeanspp_seconds"),
                     "cpu": cpu if isinstance(cpu, str) else pick(cpu[0], "rows", "dim", "k", "threads",
                                                                  "faiss_kmeanspp_seconds")}
if not isinstance(gpu, str) and not isinstance(cpu, str):
    summary["kmeans"]["gpu_speedup"] = round(cpu[0]["faiss_kmeanspp_seconds"] / gpu[0]["faiss_kmeanspp_seconds"], 1)
step = records("step")
summary["step"] = step if isinstance(step, str) else {
    r["variant"]: pick(r, "mfu", "audio_seconds_per_second", "step_seconds", "achieved_tflops", "student_params",
                       "batch_seconds", "peak_gpu_mb", "peak_host_mb", "device") for r in step}
tp = records("teacher_pass")
summary["teacher_pass"] = tp if isinstance(tp, str) else {
    **pick(tp[0], "device", "utterances", "audio_seconds", "batch_seconds"),
    "audio_seconds_per_second": tp[0]["in_process_batched"]["audio_seconds_per_second"],
    "one_at_a_time_audio_seconds_per_second": tp[0]["in_process_one_at_a_time"]["audio_seconds_per_second"]}
memory = records("space_memory")
by_space = {} if isinstance(memory, str) else {Path(r["space"]).name: r for r in memory}
summary["space_memory"] = {
    Path(s).name: (pick(by_space[Path(s).name], "method", "batch_seconds", "max_seconds", "peak_gpu_mb", "peak_host_mb",
                        "device") if Path(s).name in by_space
                   else memory if isinstance(memory, str) else "skipped: no GPU")
    for s in spaces}
search = records("search")
if isinstance(search, str):
    summary["search"] = search
else:
    best = [line.strip() for line in (parts / "search.out").read_text().splitlines() if "best trial" in line]
    ran = [line for line in (parts / "search.out").read_text().splitlines() if re.match(r"search \S+: \d+ trials in", line)]
    summary["search"] = {"trials": int(ran[-1].split(": ")[1].split()[0]) if ran else None,
                         "seconds": search[0]["part_seconds"], "best": best[-1] if best else None}
failed = [k for k, v in summary.items() if "failed (exit" in json.dumps(v)]
if mode == "gpu" and not (isinstance(summary["device"], dict) and summary["device"].get("cuda_available")):
    failed.insert(0, "device")  # a GPU check without a GPU torch can use: the CPU sizes ran instead
summary.update(failed=failed, seconds=seconds)
print(json.dumps(summary))
sys.exit(1 if failed else 0)
EOF
rc=$?
if ((rc == 0)) && [ -z "${WORK:-}" ]; then rm -rf "$work"; else echo "[gpu_check] scratch files kept in $work" >&2; fi
exit $rc
