#!/usr/bin/env bash
# Set up raydistill on a fresh machine: apt packages (espeak-ng, flite, sox), a virtual
# environment in .venv/ at the repo root, and the Python packages. Idempotent and quick
# when nothing changed (a stamp records what was installed).
#
#   scripts/setup.sh            # runtime, complete (faiss-cpu is a dependency)
#   scripts/setup.sh test       # + test dependencies (pytest, transformers, selenium) and
#                               #   Debian's chromium + chromium-driver for the MLflow UI browser test
#   scripts/setup.sh bench      # + what bench/ compares against (scikit-learn)
#   scripts/setup.sh gpu        # faiss-gpu instead of faiss-cpu
#   scripts/setup.sh aws        # + boto3: Ray's AWS node provider (cluster.yaml's head, `ray up`)
set -euo pipefail
cd "$(dirname "$0")/.."
extras=""
faiss="faiss-cpu"
browser=0
for arg in "$@"; do
  case "$arg" in
    test) extras="$extras,test"; browser=1 ;;
    bench) extras="$extras,bench" ;;
    aws) extras="$extras,aws" ;;
    gpu) faiss="faiss-gpu" ;;
    *) echo "setup.sh: unknown argument '$arg' (use: test, bench, gpu, aws)" >&2; exit 2 ;;
  esac
done

# 1. System packages: the synthesiser of the embedded corpus (and, for the tests, a browser).
missing=()
for pkg in espeak-ng flite sox; do
  command -v "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if ((browser)); then
  command -v chromium >/dev/null 2>&1 || missing+=(chromium)
  command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
fi
if ((${#missing[@]})); then
  echo "[setup] installing ${missing[*]} with apt-get" >&2
  sudo=""
  if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null || { echo "setup.sh: need root or sudo to apt-get install ${missing[*]}" >&2; exit 2; }
    sudo="sudo"
  fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# 2. The virtual environment.
python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv" >&2
  "$python" -m venv .venv
fi

# 3. Python packages, skipped when the stamp matches what this script and pyproject ask for.
stamp=".venv/.setup-stamp"
want="$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1) $extras $faiss"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "[setup] installing Python packages (first time: a few minutes)" >&2
  .venv/bin/python -m pip install -q --upgrade pip
  # torchaudio's wheels need a CUDA build of torch; these versions work together, CPU included.
  # Override with TORCH_SPEC="torch==X torchaudio==Y" for another CUDA/ROCm build.
  # shellcheck disable=SC2086
  .venv/bin/python -m pip install -q ${TORCH_SPEC:-torch==2.14.1 torchaudio==2.11.0}
  target="."
  if [ -n "$extras" ]; then target=".[${extras#,}]"; fi
  .venv/bin/python -m pip install -q -e "$target"
  # faiss-cpu (a dependency) and faiss-gpu (the gpu extra) install the same module: keep one build.
  # Removing the other deletes the files they share, so the one kept is reinstalled after it.
  drop=faiss-gpu
  if [ "$faiss" = faiss-gpu ]; then drop=faiss-cpu; fi
  if .venv/bin/python -m pip show -q "$drop" >/dev/null 2>&1; then
    .venv/bin/python -m pip uninstall -q -y "$drop"
    .venv/bin/python -m pip install -q --force-reinstall --no-deps "$faiss>=1.8"
  fi
  echo "$want" > "$stamp"
fi
