#!/usr/bin/env bash
# Does a change keep every output of the default study? Runs the study from clean results folders
# on two commits and compares them byte for byte (scripts/compare_outputs.py).
#
#   scripts/same-outputs.sh BEFORE_REV AFTER_REV [WORKDIR]
#
# Each commit is cloned into WORKDIR (default /tmp/echomtl-same-outputs) and runs with this
# checkout's .venv (PYTHONPATH points at the clone's src/). The first comparison shows what
# differs, wall-clock seconds included; the second gives the AFTER study the BEFORE study's
# training benchmark files (the only input that is measured, not computed), re-runs its
# aggregation and report, and must find every compared file identical (its exit status is the
# script's). About 2 x 11 min on 2 cores.
set -euo pipefail
before=${1:?usage: scripts/same-outputs.sh BEFORE_REV AFTER_REV [WORKDIR]}
after=${2:?usage: scripts/same-outputs.sh BEFORE_REV AFTER_REV [WORKDIR]}
work=${3:-/tmp/echomtl-same-outputs}
repo=$(cd "$(dirname "$0")/.." && pwd)
before=$(git -C "$repo" rev-parse --verify "$before^{commit}")  # fixed now: HEAD may move
after=$(git -C "$repo" rev-parse --verify "$after^{commit}")
python="$repo/.venv/bin/python"
snakemake="$repo/.venv/bin/snakemake"
rm -rf "$work" && mkdir -p "$work"

study() {  # study NAME REV [snakemake arguments]
  local name=$1 rev=$2
  shift 2
  if [[ ! -d "$work/$name" ]]; then
    git clone -q "$repo" "$work/$name"
    git -C "$work/$name" checkout -q "$rev"
  fi
  (cd "$work/$name" && PYTHONPATH="$work/$name/src" MPLBACKEND=Agg \
    "$snakemake" --cores all --workflow-profile profiles/default "$@" >"$work/$name.log" 2>&1)
  echo "[same-outputs] $name ($rev): study done, log $work/$name.log"
}

study before "$before"
study after "$after"
echo "[same-outputs] every compared file, as run:"
"$python" "$repo/scripts/compare_outputs.py" "$work/before/results" "$work/after/results" || true
(cd "$work/before/results" && find runs -name train.benchmark.tsv -print0 |
  xargs -0 -I{} cp {} "$work/after/results/{}")
study after "$after" --forcerun aggregate_metrics
echo "[same-outputs] with the same measured training seconds:"
"$python" "$repo/scripts/compare_outputs.py" "$work/before/results" "$work/after/results"
