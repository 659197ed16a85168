#!/usr/bin/env bash
# The s3prl export loads in s3prl itself: builds (once) a separate environment where the latest
# s3prl release imports, exports one student of each kind there from raydistill's environment,
# and loads them through s3prl's S3PRLUpstream; prints one JSON summary (bench/s3prl_check.py,
# docs/export.md) and exits 1 when a hidden state differs from raydistill's by more than 1e-4.
#
#   bench/s3prl_check.sh             # build the s3prl venv if it is missing, then check
#   bench/s3prl_check.sh --rebuild   # rebuild it first (its time goes into the summary)
#
# S3PRL_VENV=DIR   the s3prl environment (default ~/.cache/raydistill/s3prl-0.4.18-venv)
# PYTHON=...       raydistill's interpreter (default .venv/bin/python)
# TORCH_INDEX=URL  where torch comes from (e.g. https://download.pytorch.org/whl/cpu: a 200 MB
#                  CPU build instead of PyPI's CUDA one with its 3 GB of nvidia-* wheels)
#
# s3prl 0.4.18 does not import with torchaudio >= 2.9 (its hub imports upstreams that call
# torchaudio.set_audio_backend and import torchaudio.sox_effects), so the environment pins
# torch/torchaudio 2.8.0, installs s3prl with --no-deps and only what `import s3prl.nn` needs.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${S3PRL_VENV:-$HOME/.cache/raydistill/s3prl-0.4.18-venv}
py=${PYTHON:-.venv/bin/python}
base_python=${BASE_PYTHON:-python3}
case "${1:-}" in
  --rebuild) rm -rf "$venv" ;;
  "") ;;
  *) echo "s3prl_check.sh: unknown argument '$1' (use: --rebuild)" >&2; exit 2 ;;
esac
setup_s=0
if [ ! -x "$venv/bin/python" ]; then
  start=$(date +%s)
  echo "building $venv ..." >&2
  "$base_python" -m venv "$venv"
  index=()
  if [ -n "${TORCH_INDEX:-}" ]; then index=(--index-url "$TORCH_INDEX"); fi
  "$venv/bin/python" -m pip install -q "${index[@]}" torch==2.8.0 torchaudio==2.8.0
  "$venv/bin/python" -m pip install -q numpy requests tqdm PyYAML omegaconf transformers
  "$venv/bin/python" -m pip install -q --no-deps s3prl==0.4.18
  setup_s=$(( $(date +%s) - start ))
fi
work=$(mktemp -d /tmp/raydistill-s3prl-check.XXXXXX)
trap 'rm -rf "$work"' EXIT
start=$(date +%s)
"$py" bench/s3prl_check.py export "$work"
export_s=$(( $(date +%s) - start ))
# from an empty directory and without PYTHONPATH, so nothing of this checkout is importable there
status=0
(cd "$work" && env -u PYTHONPATH "$venv/bin/python" -W ignore "$OLDPWD/bench/s3prl_check.py" check "$work") > "$work/summary.json" \
  || status=$?
"$venv/bin/python" - "$work/summary.json" "$setup_s" "$export_s" <<'EOF'
import json, sys
summary = json.load(open(sys.argv[1]))
summary.update(venv_setup_s=int(sys.argv[2]), export_s=int(sys.argv[3]))
print(json.dumps(summary, indent=1))
EOF
exit $status
