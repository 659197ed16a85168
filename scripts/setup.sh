#!/usr/bin/env bash
# Set up raydistill on a fresh machine: apt packages (espeak-ng, flite, sox), a virtual
# environment in .venv/ at the repo root, and the Python packages. Idempotent and quick
# when nothing changed (a stamp records what was installed).
#
#   scripts/setup.sh            # runtime, complete (faiss-cpu is a dependency)
#   scripts/setup.sh test       # + test dependencies (pytest, transformers, selenium) and
#                               #   Debian's chromium + chromium-driver for the MLflow UI browser test
#   scripts/setup.sh bench      # + what bench/ compares against (scikit-learn)
#   scripts/setup.sh aws        # + boto3: Ray's AWS node provider (cluster.yaml's head, `ray up`)
#   scripts/setup.sh gpu        # faiss-gpu (with the CUDA 12 libraries it loads) instead of faiss-cpu
#
# Versions: every pip install here is constrained (pip -c) by the lock, constraints/*.txt: the
# versions the tests passed with (scripts/lock.sh writes them; docs/developing.md refreshes them).
# SETUP_LOCK=none installs without it (the newest versions pyproject.toml allows).
# TORCH_SPEC="torch==X torchaudio==Y [pip options]" installs another torch build (constraints/torch.txt
# is then not used): the default, constraints/torch.txt's torch 2.14.1 and torchaudio 2.11.0, is a
# CUDA 13 build that needs NVIDIA driver >= 580 (docs/gpu.md: CUDA 12 drivers).
# SETUP_VENV=DIR uses (or creates) the virtual environment DIR (absolute, or relative to the repo
# root) instead of .venv/.
# `faiss-only` runs nothing but the faiss step (swap in the asked build, check `import faiss`) in
# an existing SETUP_VENV, e.g. `SETUP_VENV=/tmp/v scripts/setup.sh gpu faiss-only`: what tests/test_install.py runs.
set -euo pipefail
cd "$(dirname "$0")/.."
extras=""
faiss="faiss-cpu"
browser=0
only_faiss=0
for arg in "$@"; do
  case "$arg" in
    test) extras="$extras,test"; browser=1 ;;
    bench) extras="$extras,bench" ;;
    aws) extras="$extras,aws" ;;
    gpu) faiss="faiss-gpu" ;;
    faiss-only) only_faiss=1 ;;
    *) echo "setup.sh: unknown argument '$arg' (use: test, bench, gpu, aws, faiss-only)" >&2; exit 2 ;;
  esac
done
venv=${SETUP_VENV:-.venv}
py="$venv/bin/python"

case "${SETUP_LOCK:-}" in
  ""|none) ;;
  *) echo "setup.sh: SETUP_LOCK must be 'none' (install without the lock) or unset, found '$SETUP_LOCK'" >&2; exit 2 ;;
esac
# The lock: test.txt in every mode, torch.txt unless TORCH_SPEC picks another torch, gpu.txt with gpu.
lock=()
if [ "${SETUP_LOCK:-}" != none ]; then
  lock=(-c constraints/test.txt)
  [ -n "${TORCH_SPEC:-}" ] || lock+=(-c constraints/torch.txt)
  [ "$faiss" != faiss-gpu ] || lock+=(-c constraints/gpu.txt)
fi

# The faiss build, installed into the venv. faiss-cpu (a dependency) and faiss-gpu install the
# same module `faiss`: keep one. faiss-gpu 1.15.1 is a CUDA 12 build whose loader needs
# nvidia-cuda-runtime-cu12, nvidia-cublas-cu12 and nvidia-curand-cu12 (its dependencies, so it is
# installed with them: without them `import faiss` raises RuntimeError); they sit beside torch's
# CUDA 13 libraries (verified: torch 2.14.1 + torchaudio 2.11.0 + faiss-gpu 1.15.1 resolve together).
# Removing the other build deletes the files the two share, so the one kept is reinstalled after it.
install_faiss() {
  local want="faiss-cpu>=1.8" drop=faiss-gpu
  if [ "$faiss" = faiss-gpu ]; then want="faiss-gpu==1.15.1"; drop=faiss-cpu; fi
  "$py" -m pip install -q "${lock[@]}" "$want"
  if "$py" -m pip show -q "$drop" >/dev/null 2>&1; then
    "$py" -m pip uninstall -q -y "$drop"
    "$py" -m pip install -q "${lock[@]}" --force-reinstall --no-deps "$want"  # its dependencies are in since the line above
  fi
  if ! err=$("$py" -c "import faiss" 2>&1); then
    echo "setup.sh: $faiss is installed but 'import faiss' fails: $(echo "$err" | tail -n 1)" >&2
    exit 1
  fi
}

if ((only_faiss)); then
  [ -x "$py" ] || { echo "setup.sh: faiss-only needs an existing virtual environment at $venv" >&2; exit 2; }
  install_faiss
  exit 0
fi

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
if [ ! -x "$py" ]; then
  echo "[setup] creating $venv" >&2
  "$python" -m venv "$venv"
fi

# 3. Python packages, skipped when the stamp matches what this script, pyproject and the lock ask for.
stamp="$venv/.setup-stamp"
want="$(cat pyproject.toml scripts/setup.sh constraints/*.txt | sha256sum | cut -d' ' -f1) $extras $faiss ${SETUP_LOCK:-} ${TORCH_SPEC:-}"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "[setup] installing Python packages (first time: a few minutes)" >&2
  "$py" -m pip install -q --upgrade pip
  # torchaudio's wheels need a CUDA build of torch; the locked versions work together, CPU included.
  # Override with TORCH_SPEC="torch==X torchaudio==Y" for another CUDA/ROCm build (docs/gpu.md).
  # shellcheck disable=SC2086
  "$py" -m pip install -q "${lock[@]}" ${TORCH_SPEC:-torch torchaudio}
  target="."
  if [ -n "$extras" ]; then target=".[${extras#,}]"; fi
  "$py" -m pip install -q "${lock[@]}" -e "$target"
  install_faiss
  echo "$want" > "$stamp"
fi
