#!/usr/bin/env bash
# Score a SevenNet-0 metals student the way docs/students.md does: the test split of the training data, the
# larger unseen cells, then NVE MD of its ONNX artifact (Cu at 600 K, random Pt50Ni50 at 900 K) with SevenNet-0
# labels on 20 frames of each trajectory.  Needs `pip install 'deploycc[sevennet]'` and the datasets of
# docs/students.md ("A metals student from SevenNet-0").  About 8 minutes on 2 cores.
# Usage: CKPT=metals-7net DATA=work/metals-7net-merged.h5 LARGE=work/large.h5 OUT=work/audit-old bash lab/metals_audit.sh
set -euo pipefail
CKPT=${CKPT:-metals-7net}
DATA=${DATA:-work/metals-7net-small.h5}
LARGE=${LARGE:-work/large.h5}
OUT=${OUT:-work/metals-audit}
export OMP_NUM_THREADS=1
mkdir -p "$OUT"
python lab/student_report.py "$CKPT" "$DATA" --split test --out "$OUT/test"
python lab/student_report.py "$CKPT" "$LARGE" --split all --out "$OUT/large"
deploycc build --model "$CKPT" --target onnx --out "$OUT/artifacts" --force
artifact=$(dirname "$(find "$OUT/artifacts" -name model.onnx | head -1)")
deploycc md "$artifact" --structure docs/md/cu108.extxyz --temperature 600 --timestep-fs 2 --ps 4 \
    --equilibrate-ps 1 --out "$OUT/md-cu"
deploycc md "$artifact" --structure docs/md/ptni108.extxyz --temperature 900 --timestep-fs 2 --ps 4 \
    --equilibrate-ps 1 --out "$OUT/md-ptni"
python lab/trajectory_audit.py "$OUT/md-cu/nve.traj" "$OUT/md-ptni/nve.traj" --teacher sevennet --frames 20 \
    --out "$OUT/audit.h5"
python lab/student_report.py "$CKPT" "$OUT/audit.h5" --split all --out "$OUT/md-audit"
