"""Per-call latency of one ethanol through the Predictor of each built tiny artifact, interleaved in one process:
    python lab/metatomic_speed.py   (needs artifacts/tiny/{onnx,torchscript,metatomic,eager})"""
import time, numpy as np, torch
from ase.build import molecule
from deploycc.api import load
torch.set_num_threads(2)
srcs = {k: load(f"artifacts/tiny/{k}") for k in ("onnx", "torchscript", "metatomic", "eager")}
a = molecule("CH3CH2OH"); mols=[a]*1
times = {k: [] for k in srcs}
for k,p in srcs.items():
    for _ in range(20): p.predict(mols)
for r in range(300):
    for k,p in srcs.items():
        t=time.perf_counter(); p.predict(mols); times[k].append(time.perf_counter()-t)
for k,v in times.items():
    v=np.array(v)*1e3; print(f"{k:12s} median {np.median(v):.2f} ms  p90 {np.percentile(v,90):.2f}  p99 {np.percentile(v,99):.2f}")
