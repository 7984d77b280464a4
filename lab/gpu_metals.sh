#!/usr/bin/env bash
# One prepared GPU run for periodic metals (issue 5), in a single call on a machine with an NVIDIA GPU:
#   1. distil metals-tiny on CUDA from the EMT metals dataset for $TRAIN_MINUTES (skipped when 0),
#   2. build it for CUDA targets, each with parity against eager on the shipped metals calibration set,
#   3. sweep batch sizes 1..64 on ~108-atom periodic cells and write the table to $OUT.
# Usage: OUT=/tmp/out [ART=/tmp/art] [TRAIN_MINUTES=5 DATA=work/metals.h5] bash lab/gpu_metals.sh
# Make the dataset first (CPU, ~5 min): deploycc data metals --out work/metals.h5
set -uo pipefail
OUT=${OUT:-artifacts/gpu-metals}
TRAIN_MINUTES=${TRAIN_MINUTES:-5}
DATA=${DATA:-work/metals.h5}
ART=${ART:-$OUT/art}
MODEL=${MODEL:-$OUT/metals-tiny.pt}
mkdir -p "$OUT"
source "$(dirname "$0")/gpu_env.sh"
DCC="python3 -m deploycc"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/gpu.txt"

if [ "$TRAIN_MINUTES" != "0" ]; then
  $DCC train --data "$DATA" --model metals-tiny --out "$MODEL" --device cuda --batch-size 8 --lr 2e-3 \
    --energy-weight 10 --force-weight 1 --epochs 100000 --patience 100000 --max-minutes "$TRAIN_MINUTES" \
    > "$OUT/train.log" 2>&1
  tail -n 14 "$OUT/train.log"
  rm -f "$MODEL.state"
fi

$DCC build --model "$MODEL" --target eager,torchscript --device cuda --out "$ART" 2>&1 | tee "$OUT/build.txt"
$DCC bench --model "$MODEL" --target eager,torchscript --device cuda --out "$ART" --atoms 108 \
  --batch-sizes 1,2,4,8,16,32,64 --min-seconds 0.2 --min-iters 30 \
  --json "$OUT/bench.json" --markdown "$OUT/bench.md" 2>&1 | tee "$OUT/bench.txt"
