#!/usr/bin/env bash
# Comparison 8 with each method's best searched configuration, one command (docs/study.md):
# a search per method (confirmed top 2), its winner exported to <workdir>/front/<method>/, then
# `raydistill study --plan studies/front-searched.yaml` trains every winner at 3 seeds.
# Rerunnable: a method whose export exists is skipped, an interrupted search resumes, the study
# trains only its missing cells.
#   studies/front-searched.sh [--trials N] [--workdir DIR] [any other option of search and study]
#   e.g. a GPU cluster: studies/front-searched.sh --trials 48 --address ray://head:10001 --gpus-per-worker 1
set -euo pipefail
cd "$(dirname "$0")/.."
trials=24 workdir=runs store=() rest=()
while (($#)); do
  case "$1" in
    --trials) trials="$2"; shift 2 ;;
    --workdir) workdir="$2"; shift 2 ;;
    --mlflow-uri) store=(--mlflow-uri "$2"); shift 2 ;;
    *) rest+=("$1"); shift ;;
  esac
done
rd=(${RAYDISTILL:-.venv/bin/raydistill})  # RAYDISTILL: another raydistill command (the tests record the calls)
for method in dice kd arm star distil; do
  out="$workdir/front/$method"
  [[ -f "$out/best.yaml" ]] && { echo "front: $method already exported ($out)"; continue; }
  again=()
  [[ -f "$workdir/ray_results/front-$method/tuner.pkl" ]] && again=(--resume)
  "${rd[@]}" search --space "search_spaces/$method.yaml" --trials "$trials" --confirm 2 --name "front-$method" \
    --workdir "$workdir" "${store[@]}" "${again[@]}" "${rest[@]}"
  "${rd[@]}" export --search "front-$method" --out "$out" --top 1 --force --workdir "$workdir" "${store[@]}"
done
# the plan names runs/front/<method>/best.yaml: point it at this workdir's exports
plan="$workdir/front/front-searched.yaml"
sed "s#\.\./runs/front/#$(realpath "$workdir")/front/#" studies/front-searched.yaml > "$plan"
"${rd[@]}" study --plan "$plan" --workdir "$workdir" "${store[@]}" "${rest[@]}"
