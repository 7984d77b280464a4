#!/usr/bin/env bash
# Distil presets on one CUDA GPU side by side, in a single call; checkpoints and logs go to $OUT.
# Usage: OUT=/tmp/out TRAIN_MINUTES=6 JOBS="metals-tiny:work/metals2.h5:8:2e-3 tiny:work/molecules.h5:16:1e-3" \
#        bash lab/gpu_train.sh        (each job: preset:dataset:batch size:learning rate[:energy weight])
set -uo pipefail
OUT=${OUT:-artifacts/gpu-train}
TRAIN_MINUTES=${TRAIN_MINUTES:-6}
JOBS=${JOBS:-"metals-tiny:work/metals.h5:8:2e-3"}
mkdir -p "$OUT"
source "$(dirname "$0")/gpu_env.sh"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/gpu.txt"
for job in $JOBS; do
  IFS=: read -r model data batch lr weight <<< "$job"
  python3 -m deploycc train --data "$data" --model "$model" --out "$OUT/$model.pt" --device cuda \
    --batch-size "$batch" --lr "$lr" --energy-weight "${weight:-10}" --epochs 100000 --patience 100000 --max-minutes "$TRAIN_MINUTES" \
    > "$OUT/train-$model.log" 2>&1 &
done
wait
for job in $JOBS; do tail -n 9 "$OUT/train-${job%%:*}.log"; done
rm -f "$OUT"/*.state
