#!/usr/bin/env bash
# One prepared GPU check, run in a single call on a machine with an NVIDIA GPU (installs nothing):
#   1. build tiny for every target available on CUDA, each with parity against eager on the shipped calibration
#      molecules (and metals-tiny for the periodic set),
#   2. run the GPU-marked tests,
#   3. sweep batch sizes 1..1024 of ~25-atom molecules per CUDA target (the bench table),
#   4. sweep system size: water boxes of 10^3..10^6 atoms per CUDA target (µs/atom, peak memory),
#   5. count kernels per call at small and large sizes (lab/count_kernels.py).
# Usage: OUT=/tmp/out [ART=/tmp/art] [TARGETS="eager cuda-graph-fused"] [SCALE="water:1000,...,water:1000000"] \
#        [PYTEST=0] [KERNELS=0] bash lab/gpu_check.sh
set -uo pipefail
OUT=${OUT:-artifacts/gpu-check}
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
$DCC targets --device cuda | tee -a "$OUT/gpu.txt"
TARGETS=${TARGETS:-"eager torchscript cuda-graph cuda-graph-fused onnx onnx-fp16 trt"}
# One build per target, so that a target missing here (onnx without onnxruntime-gpu) does not stop the others.
for target in $TARGETS; do
  timeout 300 $DCC build --model tiny --target "$target" --device cuda --out "$ART" 2>&1 | tee -a "$OUT/build.txt"
done
timeout 200 $DCC build --model metals-tiny --target eager,cuda-graph-fused --device cuda --out "$ART" 2>&1 \
  | tee -a "$OUT/build.txt"
CUDA_TARGETS=$(python3 - "$ART/tiny" <<'PY'
import json, pathlib, sys
root = pathlib.Path(sys.argv[1])
names = [p.name for p in sorted(root.iterdir()) if (p / "manifest.json").is_file()
         and json.loads((p / "manifest.json").read_text())["device"].startswith("cuda")]
order = ["eager", "torchscript", "cuda-graph", "cuda-graph-fused", "onnx", "onnx-fp16", "trt"]
print(",".join(n for n in order if n in names))
PY
)
echo "built for CUDA: $CUDA_TARGETS" | tee -a "$OUT/gpu.txt"
if [ "${PYTEST:-1}" != "0" ]; then
  timeout 300 python3 -m pytest -q -m "gpu or trt" -p no:cacheprovider tests/targets 2>&1 | tail -n 25 \
    | tee "$OUT/pytest-gpu.txt"
fi
timeout 600 $DCC bench --model tiny --target "$CUDA_TARGETS" --device cuda --out "$ART" \
  --batch-sizes 1,8,64,256,1024 --min-seconds 0.3 --min-iters 30 \
  --json "$OUT/bench.json" --markdown "$OUT/bench.md" --plot "$OUT/bench.png" 2>&1 | tee "$OUT/bench.txt"
SCALE=${SCALE:-"water:1000,water:10000,water:100000,water:1000000,copper:10000,copper:100000"}
SCALE_TARGETS=$(echo "$CUDA_TARGETS" | tr ',' '\n' | grep -E "^(eager|cuda-graph-fused|trt)$" | paste -sd, -)
timeout 900 $DCC scale --model tiny --target "${SCALE_TARGETS:-eager}" --device cuda --out "$ART" \
  --systems "$SCALE" --repeats 5 --budget 20 \
  --json "$OUT/scale.json" --markdown "$OUT/scale.md" --plot "$OUT/scale.png" 2>&1 | tail -n 20 | tee "$OUT/scale.txt"
if [ "${KERNELS:-1}" != "0" ]; then
  for atoms in 25 3000; do
    timeout 240 python3 lab/count_kernels.py --model tiny --atoms "$atoms" --iters 200 --steps eager,default 2>&1 \
      | grep -v -E "Warning|warn\(|_warn_once|^ *$" | tee -a "$OUT/kernels.md"
  done
fi
