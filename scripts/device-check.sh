#!/usr/bin/env bash
# The project's GPU check, at most about 5 minutes on one GPU (docs/gpu.md). Each part runs under
# its own time limit; a part that fails is reported and the next one still runs.
#   1. a tiny study (config/device-check.yaml): five experiments trained and evaluated on CUDA
#      with bf16 autocast and loader workers, through Snakemake as a user runs it;
#   2. GradNorm's G_i and the gradient cosines under bf16 and fp16 (scaled) against float32;
#   3. the data loader alone at 640 px against the training step (can it keep the GPU fed?);
#   4. our training step against the packaged YOLOv5 v7.0 at 640 px, yolov5s, side by side
#      (needs .venv-peer, made once with network by `benchmarks/bench_peer.py --setup`).
# Usage: scripts/device-check.sh [OUT_DIR]   (default results/device-check; the summary is
# OUT_DIR/summary.txt, each part's full output OUT_DIR/<part>.txt)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-results/device-check}
PY=${PYTHON:-.venv/bin/python}
SNAKEMAKE=$(dirname "$PY")/snakemake
mkdir -p "$OUT"
SUMMARY="$OUT/summary.txt"
: >"$SUMMARY"
failed=0

part() {  # part NAME LIMIT_S COMMAND...
    local name=$1 limit=$2
    shift 2
    local started=$SECONDS
    timeout "$limit" "$@" >"$OUT/$name.txt" 2>&1
    local rc=$?
    local status="ok"
    [ $rc -eq 124 ] && status="TIMED OUT after ${limit} s"
    [ $rc -ne 0 ] && [ $rc -ne 124 ] && status="FAILED (exit $rc)"
    [ "$status" != "ok" ] && failed=1
    {
        echo "== $name: $status, $((SECONDS - started)) s"
        tail -n 25 "$OUT/$name.txt"
    } | tee -a "$SUMMARY"
}

if [ ! -x "$PY" ]; then
    echo "no $PY: run 'make setup' first (or set PYTHON)" | tee -a "$SUMMARY"
    exit 2
fi
{
    date -u +"%Y-%m-%d %H:%M UTC"
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
    "$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, \
'available', torch.cuda.is_available())"
} | tee -a "$SUMMARY"

STUDY="$OUT/study"
TARGETS=()
for experiment in fixed gradnorm_a1.5 uncertainty pcgrad dual_backbone; do
    TARGETS+=("$STUDY/runs/$experiment/seed0/metrics_test.json")
done
part tiny_study 170 "$SNAKEMAKE" --cores "$(nproc)" --configfile config/device-check.yaml \
    --config "results_dir=$STUDY" --workflow-profile profiles/default "${TARGETS[@]}"
part amp_gradnorm 40 "$PY" benchmarks/check_amp_gradnorm.py --device cuda --imgsz 640 --batch 16
part loader 60 "$PY" benchmarks/bench_loader.py --device cuda --amp bf16 --imgsz 640 \
    --batch 32 --images 128 --workers 0 4 8 --threads 4
if [ -x .venv-peer/bin/python ]; then
    part peer_640 60 "$PY" benchmarks/bench_peer.py --device cuda --amp bf16 --scales s \
        --sizes 640 --batch 32 --rounds 5 --steps 10 --threads 4
else
    echo "== peer_640: skipped (no .venv-peer: run benchmarks/bench_peer.py --setup once)" |
        tee -a "$SUMMARY"
fi
exit $failed
