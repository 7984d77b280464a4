#!/usr/bin/env bash
# One prepared GPU check, run in a single call on a machine with an NVIDIA GPU (installs nothing):
#   1. optionally distil the three presets on CUDA (TRAIN_MINUTES > 0; needs the dataset at $DATA),
#   2. count kernels per call (eager vs Inductor-fused), build tiny for every target available on CUDA, each
#      with parity against eager on calib/,
#   3. sweep batch sizes 1..1024 per CUDA target and write the table to $OUT,
#   4. run the GPU-marked tests of the CUDA-graph targets (PYTEST=0 skips them).
# Usage: OUT=/tmp/out [ART=/tmp/art] [TARGETS="eager cuda-graph-fused"] [KERNELS=0] [KERNEL_BATCHES="1 256"] \
#        [KERNEL_STEPS=eager,default,freezing,decompose-small,decompose-all] [ATOM_MULTIPLE=4] \
#        [TRAIN_MINUTES=5 DATA=work/molecules.h5] \
#        bash scripts/gpu_check.sh
set -uo pipefail
OUT=${OUT:-artifacts/gpu-check}
TRAIN_MINUTES=${TRAIN_MINUTES:-0}
DATA=${DATA:-work/molecules.h5}
ART=${ART:-$OUT/art}   # artifact root (keep it outside $OUT when only the reports should come back)
mkdir -p "$OUT"
source "$(dirname "$0")/gpu_env.sh"
DCC="python3 -m deploycc"

nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv | tee "$OUT/gpu.txt"
python3 - <<'PY' | tee -a "$OUT/gpu.txt"
import torch, onnxruntime
print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.get_device_name())
print("onnxruntime", onnxruntime.__version__, onnxruntime.get_available_providers())
PY

if [ "$TRAIN_MINUTES" != "0" ] && [ -f "$DATA" ]; then
  mkdir -p "$OUT/presets"
  for model in original tiny ultra-tiny; do
    $DCC train --data "$DATA" --model "$model" --out "$OUT/presets/$model.pt" --device cuda --batch-size 16 \
      --lr 1e-3 --epochs 100000 --patience 100000 --max-minutes "$TRAIN_MINUTES" > "$OUT/train-$model.log" 2>&1 &
  done
  wait
  tail -n 12 "$OUT"/train-*.log
  rm -f "$OUT"/presets/*.state
  cp "$OUT"/presets/*.pt deploycc/presets/ 2>/dev/null || true
fi

$DCC targets --device cuda | tee -a "$OUT/gpu.txt"
# TARGETS trims the list when device time is short; Inductor's compile cache (/tmp/torchinductor_*) makes the
# fused target's second and later compiles in this machine session fast.
TARGETS=${TARGETS:-"eager torchscript cuda-graph cuda-graph-fused onnx onnx-fp16"}
if [ "${KERNELS:-1}" != "0" ]; then
  # Kernels, replay and runner time per step; decompose-* rewrite matrix products as fused element-wise sums.
  for batch in ${KERNEL_BATCHES:-1 256}; do
    timeout 240 python3 scripts/count_kernels.py --model tiny --batch "$batch" --iters "${KERNEL_ITERS:-500}" \
      --steps "${KERNEL_STEPS:-eager,default,freezing,decompose-small,decompose-all}" 2>&1 \
      | grep -v -E "Warning|warn\(|_warn_once|^ *$" | tee -a "$OUT/kernels.md"
  done
  # addmm with a bias goes through cuBLASLt (split-K reductions seen); this process uses classic cuBLAS for it.
  DISABLE_ADDMM_CUDA_LT=1 timeout 120 python3 scripts/count_kernels.py --model tiny --batch 1 \
    --iters "${KERNEL_ITERS:-500}" --steps default 2>&1 | grep -v -E "Warning|warn\(|_warn_once|^ *$" \
    | tee -a "$OUT/kernels.md"
fi
# One build per target, so that a target missing here (onnx without onnxruntime-gpu) does not stop the others.
for target in $TARGETS; do
  $DCC build --model tiny --target "$target" --device cuda --out "$ART" 2>&1 | tee -a "$OUT/build.txt"
done
CUDA_TARGETS=$(python3 - "$ART/tiny" <<'PY'
import json, pathlib, sys
root = pathlib.Path(sys.argv[1])
names = [p.name for p in sorted(root.iterdir()) if (p / "manifest.json").is_file()
         and json.loads((p / "manifest.json").read_text())["device"].startswith("cuda")]
order = ["eager", "torchscript", "cuda-graph", "cuda-graph-fused", "onnx", "onnx-fp16", "trt"]
print(",".join(n for n in order if n in names))
PY
)
echo "benchmarking: $CUDA_TARGETS"
$DCC bench --model tiny --target "$CUDA_TARGETS" --device cuda --out "$ART" \
  --batch-sizes 1,2,4,8,16,32,64,128,256,512,1024 --min-seconds 0.3 --min-iters 50 \
  --json "$OUT/bench.json" --markdown "$OUT/bench.md" --plot "$OUT/bench.png" 2>&1 | tee "$OUT/bench.txt"
if [ "${PYTEST:-1}" != "0" ]; then
  python3 -m pytest -q -m gpu -p no:cacheprovider tests/targets/test_cuda_graph.py 2>&1 | tail -n 25 | tee "$OUT/pytest-gpu.txt"
fi
# Optional A/B of the atom bucket (ATOM_MULTIPLE=4): the 22-28-atom workload pads to 32 with the default multiple
# of 8, i.e. 1.6x the mean pair work where large batches are compute-bound.  Rows go to bench.txt.
if [ -n "${ATOM_MULTIPLE:-}" ]; then
  HOME_AB=/tmp/deploycc-home-m$ATOM_MULTIPLE
  mkdir -p "$HOME_AB/targets" && cp targets/*.toml "$HOME_AB/targets/" && ln -sfn "$PWD/calib" "$HOME_AB/calib"
  sed -i "s/^atom_multiple = .*/atom_multiple = $ATOM_MULTIPLE/" "$HOME_AB/targets/cuda-graph-fused.toml"
  echo "== cuda-graph-fused with atom_multiple = $ATOM_MULTIPLE ==" | tee -a "$OUT/bench.txt"
  DEPLOYCC_HOME=$HOME_AB $DCC build --model tiny --target cuda-graph-fused --device cuda --out "$ART-m$ATOM_MULTIPLE" \
    2>&1 | tail -n 3 | tee -a "$OUT/bench.txt"
  DEPLOYCC_HOME=$HOME_AB $DCC bench --model tiny --target cuda-graph-fused --device cuda --out "$ART-m$ATOM_MULTIPLE" \
    --batch-sizes 1,8,64,256,512,1024 --min-seconds 0.3 --min-iters 50 2>&1 | tee -a "$OUT/bench.txt"
fi
