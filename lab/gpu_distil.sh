#!/usr/bin/env bash
# Online distillation of a student from ANI-1x on one CUDA GPU, in one call of about TRAIN_MINUTES + 2 minutes,
# installing nothing: the student trains on the GPU while WORKERS CPU processes label fresh frames with the
# ANI-1x ensemble.  Carry the wheels (cp312, --no-deps): ase, rdkit and vesin in .whl/, which gpu_env.sh unpacks
# for deploycc; torchani==2.2.4, 'setuptools<70', lark-parser, importlib-metadata and lazy-importer in .whl/ani/,
# which go on the ANI server's path only (the DEPLOYCC_ANI_PYTHON wrapper below), so deploycc keeps the image's
# setuptools.  The checkpoint is written about TRAIN_MINUTES + 1.5 minutes after the call starts (wheels, held-out
# labelling, the workers' first batches): keep TRAIN_MINUTES <= 7 in a 600 s call.
# Usage: OUT=/tmp/out TRAIN_MINUTES=8 MODEL=tiny WORKERS=6 BATCH=64 bash lab/gpu_distil.sh
# The run of docs/students.md (original-ani1x stage 3, on an H200 with 16 cores):
#   TRAIN_MINUTES=6.5 MODEL=original WORKERS=14 BATCH=64 LR=5e-4 INIT=deploycc/presets/original-ani1x.pt STREAM=3
# GFN2-xTB instead (carry ase, rdkit, vesin, tblite, cffi and pycparser in .whl/, about 43 MB, no .whl/ani/;
# ~25 ms a frame per CPU core, so use every core but two):
#   TEACHER=xtb WORKERS=14 MD_FRACTION=0 NMS_FRACTION=0.5 INIT=deploycc/presets/tiny.pt STREAM=2 bash lab/gpu_distil.sh
set -uo pipefail
OUT=${OUT:-artifacts/gpu-distil}
TRAIN_MINUTES=${TRAIN_MINUTES:-8}
MODEL=${MODEL:-tiny}
WORKERS=${WORKERS:-6}
BATCH=${BATCH:-64}
TEACHER=${TEACHER:-ani1x}
LR=${LR:-2e-3}
DEVICE=${DEVICE:-cuda}  # DEVICE=cpu smoke-tests this script on a machine without a GPU
mkdir -p "$OUT"
source "$(dirname "$0")/gpu_env.sh"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/gpu.txt" || true
python3 -c "import torch, rdkit, ase, vesin; print('torch', torch.__version__, 'rdkit', rdkit.__version__, 'ase', ase.__version__, 'cuda', torch.cuda.is_available(), 'cpus', __import__('os').cpu_count())"
ANI_SITE=/tmp/ani-site
mkdir -p "$ANI_SITE"
if ls .whl/ani/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$ANI_SITE" .whl/ani/*.whl
fi
cat > "$OUT/ani-python" <<WRAP
#!/usr/bin/env bash
PYTHONPATH="$ANI_SITE:/tmp/site" exec python3 "\$@"
WRAP
chmod +x "$OUT/ani-python"
export DEPLOYCC_ANI_PYTHON="${DEPLOYCC_ANI_PYTHON:-$OUT/ani-python}" OMP_NUM_THREADS=1
# MD_FRACTION / NMS_FRACTION: shares of teacher-MD and normal-mode frames per batch (the rest rattled);
# COMPILE=1 adds --compile (inductor needs triton on CUDA); BOX_EVERY=N adds a periodic water box every N batches
# of a worker (xtb only: ANI-1x labels molecules only)
# INIT / STREAM: a warm restart from a checkpoint of the same architecture, on a new seed stream of frames
python3 -m deploycc distil --teacher "$TEACHER" --model "$MODEL" --out "$OUT/$MODEL-$TEACHER.pt" --device "$DEVICE" --lr "$LR" \
  $([ -n "${INIT:-}" ] && echo --init "$INIT" --stream "${STREAM:-1}") --clusters \
  --md-fraction "${MD_FRACTION:-0.5}" --nms-fraction "${NMS_FRACTION:-0}" $([ "${COMPILE:-0}" = 1 ] && echo --compile) \
  --box-every "${BOX_EVERY:-0}" --batch-size "$BATCH" --workers "$WORKERS" --steps 1000000 --max-minutes "$TRAIN_MINUTES" --eval-every 500 \
  --splits-out "$OUT/held-out.h5" 2>&1 | tee "$OUT/distil-$MODEL-$TEACHER.log" | tail -n 20
