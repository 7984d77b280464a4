#!/usr/bin/env bash
# How the cost of a periodic model grows with atoms per cell: fcc Cu cells of 32, 64, 108, 128 and 256 atoms
# (calib/cu-cells.extxyz, made by scripts/make_cu_cells.py), batch 1 and 8, eager and ONNX Runtime on CPU.
# Usage: bash scripts/bench_periodic_scaling.sh [OUT_DIR]   (about 5 minutes on 2 cores)
set -euo pipefail
OUT=${1:-artifacts/metals-scaling}
mkdir -p "$OUT"
for n in 32 64 108 128 256; do
  deploycc bench --model metals-tiny --target eager,onnx --structures calib/cu-cells.extxyz --atoms "$n" \
    --batch-sizes 1,8 --min-seconds 1.0 --min-iters 10 --json "$OUT/cu-$n.json" > "$OUT/cu-$n.txt" 2>&1
done
python3 - "$OUT" <<'PY'
import json, pathlib, sys
rows = []
for path in sorted(pathlib.Path(sys.argv[1]).glob("cu-*.json"), key=lambda p: int(p.stem.split("-")[1])):
    for r in json.loads(path.read_text())["records"]:
        rows.append((int(path.stem.split("-")[1]), r["target"], r["batch_size"], r["median_ms"], r["atoms_per_s"]))
print("| atoms per cell | target | batch | median ms | atoms/s | µs per atom |")
print("|---:|---|---:|---:|---:|---:|")
for n, t, b, ms, aps in rows:
    print(f"| {n} | {t} | {b} | {ms:.1f} | {aps:,.0f} | {1e6 / aps:.0f} |")
PY
