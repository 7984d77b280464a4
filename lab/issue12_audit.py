"""Audit of issue 12 ("Reliability: 36 failures and 23 weak answers ..."; text: /tmp/audit12/ISSUE_TEXT.md).

Reproduces every bullet (and sub-bullet) of the issue through the real command line (`python -m deploycc ...`
in subprocesses) or, where the case is about the Python API, through the API in a subprocess, in a scratch
folder (/tmp/audit12/run), one case after another, each with a timeout.  Each case is classified:

  GOOD  one line on stderr starting `error:` (or a correct success), the expected exit code (docs/bad-inputs.md:
        65 bad input, 64 usage error as the issue asks, 74 storage, 1 parity / failed check, 130/143 interrupt),
        no traceback, inputs and previous outputs intact, no NaN written
  WEAK  a documented exit code but not the expected one, more than one line, a message that does not name the
        file the issue asks for, or slow
  FAIL  a traceback, exit 0 where a refusal is due, wrong results, data loss, NaN written, a timeout

Run: /work/main/.venv/bin/python lab/issue12_audit.py   (about 5-10 minutes on 2 cores; writes
/tmp/audit12/results.json and /tmp/audit12/report.md).  Nothing here is imported by deploycc.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PY = str(ROOT / ".venv" / "bin" / "python") if (ROOT / ".venv" / "bin" / "python").exists() else sys.executable
BASE = Path("/tmp/audit12")
W = BASE / "run"  # scratch of this run (recreated)
ART = BASE / "art"  # built once: tiny eager + onnx
EAGER, ONNX = ART / "tiny" / "eager", ART / "tiny" / "onnx"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "400", "DEPLOYCC_ARTIFACTS": str(BASE / "run" / "artroot")}
for key in ("DEPLOYCC_HOME", "DEPLOYCC_MEMORY_BUDGET_GB"):
    ENV.pop(key, None)

USER, USAGE, STORAGE, PARITY = 65, 64, 74, 1


# --- running and judging --------------------------------------------------------------------------------------


@dataclass
class Case:
    id: str
    name: str
    verdict: str
    rc: object
    expected: str
    stderr_first: str = ""
    stderr_last: str = ""
    seconds: float = 0.0
    problems: list = field(default_factory=list)
    note: str = ""


RESULTS: list[Case] = []


@dataclass
class Run:
    rc: object
    out: str
    err: str
    seconds: float
    timed_out: bool = False


def sha(path: Path) -> str | None:
    path = Path(path)
    if not path.exists():
        return None
    if path.is_dir():
        digest = hashlib.sha256()
        for p in sorted(path.rglob("*")):
            if p.is_file():
                digest.update(str(p.relative_to(path)).encode())
                digest.update(p.read_bytes())
        return digest.hexdigest()
    return hashlib.sha256(path.read_bytes()).hexdigest()


def limit_memory(gb: float = 12.0):
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (int(gb * 2**30), int(gb * 2**30)))
    return apply


def cli(*args, env: dict | None = None, timeout: float = 120, cwd: Path | None = None) -> Run:
    started = time.perf_counter()
    try:
        done = subprocess.run([PY, "-m", "deploycc", *map(str, args)], capture_output=True, text=True,
                              env={**ENV, **(env or {})}, cwd=cwd or W, timeout=timeout, preexec_fn=limit_memory())
        return Run(signal_name(done.returncode), done.stdout, done.stderr, time.perf_counter() - started)
    except subprocess.TimeoutExpired as exc:
        return Run("timeout", _text(exc.stdout), _text(exc.stderr), time.perf_counter() - started, True)


def signal_name(rc: int):
    """An exit status, or 'SIGFPE(-8)' for a process killed by a signal (a crash, not an exit)."""
    if rc >= 0:
        return rc
    try:
        return f"{signal.Signals(-rc).name}({rc})"
    except ValueError:
        return rc


def api(code: str, *args, env: dict | None = None, timeout: float = 120) -> tuple[dict, Run]:
    """Run a Python snippet in a subprocess; it prints one JSON object as its last stdout line."""
    started = time.perf_counter()
    try:
        done = subprocess.run([PY, "-c", textwrap.dedent(code), *map(str, args)], capture_output=True, text=True,
                              env={**ENV, **(env or {})}, cwd=W, timeout=timeout, preexec_fn=limit_memory())
        run = Run(done.returncode, done.stdout, done.stderr, time.perf_counter() - started)
    except subprocess.TimeoutExpired as exc:
        return {"error": "timeout"}, Run("timeout", _text(exc.stdout), _text(exc.stderr), timeout, True)
    lines = [line for line in run.out.splitlines() if line.startswith("{")]
    try:
        return json.loads(lines[-1]), run
    except (IndexError, json.JSONDecodeError):
        return {"error": "no json", "tail": (run.out + run.err)[-600:]}, run


def _text(value) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else (value or "")


def lines_of(text: str) -> list[str]:
    return [line.rstrip() for line in text.splitlines() if line.strip()]


def short(text: str, n: int = 150) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"


def record(cid: str, name: str, verdict: str, rc, expected: str, err: str = "", seconds: float = 0.0,
           problems: list | None = None, note: str = "") -> Case:
    errs = lines_of(err)
    case = Case(cid, name, verdict, rc, expected, short(errs[0]) if errs else "", short(errs[-1]) if len(errs) > 1 else "",
                round(seconds, 1), problems or [], note)
    RESULTS.append(case)
    print(f"[{verdict:4}] {cid:6} {name:38} rc={rc!s:8} {seconds:5.1f}s  {case.stderr_first[:110]}"
          + (f"  <{'; '.join(case.problems)}>" if case.problems else ""), flush=True)
    return case


def judge(cid: str, name: str, run: Run, expected_rc, *, contains: tuple = (), names: tuple = (),
          intact: dict | None = None, absent: tuple = (), max_seconds: float | None = None,
          extra: list | None = None, note: str = "") -> Case:
    """Classify a CLI refusal: one `error:` line, the expected exit code(s), no traceback, files intact."""
    expected = expected_rc if isinstance(expected_rc, tuple) else (expected_rc,)
    fail, weak = [], []
    text = run.out + run.err
    errs = lines_of(run.err)
    if run.timed_out:
        fail.append("timed out")
    if "Traceback" in text:
        fail.append("traceback")
    if run.rc == 0 and 0 not in expected:
        fail.append("exit 0 (accepted)")
    elif run.rc not in expected and not run.timed_out:
        known = run.rc in (1, 2, 64, 65, 74, 130, 143)
        (weak if known and "traceback" not in fail else fail).append(f"exit {run.rc} != {'/'.join(map(str, expected))}")
    if 0 not in expected or run.rc != 0:
        if len(errs) != 1:
            weak.append(f"{len(errs)} stderr lines")
        if errs and not errs[0].startswith("error:") and not any(e.startswith("error:") for e in errs):
            weak.append("no 'error:' line")
    for fragment in contains:
        if fragment.lower() not in text.lower():
            weak.append(f"message lacks {fragment!r}")
    for fragment in names:
        if fragment not in run.err:
            weak.append(f"does not name {fragment}")
    for path, before in (intact or {}).items():
        if sha(path) != before:
            fail.append(f"{Path(path).name} changed")
    for path in absent:
        if Path(path).exists():
            fail.append(f"{Path(path).name} written")
    if max_seconds is not None and run.seconds > max_seconds:
        weak.append(f"took {run.seconds:.0f} s (check first)")
    for severity, problem in extra or []:
        (fail if severity == "fail" else weak).append(problem)
    verdict = "FAIL" if fail else "WEAK" if weak else "GOOD"
    return record(cid, name, verdict, run.rc, "/".join(map(str, expected)), run.err, run.seconds, fail + weak, note)


def judge_api(cid: str, name: str, result: dict, run: Run, *, want_user_error: bool = True, note: str = "",
              extra: list | None = None) -> Case:
    """Classify an API case: the snippet reports {'exc': type, 'user': is-a-UserInputError, 'msg': text}."""
    fail, weak = [], []
    if run.timed_out:
        fail.append("timed out")
    if "error" in result:
        fail.append(f"snippet: {result.get('error')} {short(result.get('tail', ''), 120)}")
    elif want_user_error:
        if not result.get("user"):
            fail.append(f"raised {result.get('exc')}, not a UserInputError")
        elif "\n" in (result.get("msg") or ""):
            weak.append("multi-line message")
    for severity, problem in extra or []:
        (fail if severity == "fail" else weak).append(problem)
    verdict = "FAIL" if fail else "WEAK" if weak else "GOOD"
    msg = result.get("msg") or result.get("summary") or ""
    label = f"{result.get('exc', '')}: {msg}" if result.get("exc") else msg
    return record(cid, name, verdict, "api", "UserInputError" if want_user_error else "correct", label, run.seconds,
                  fail + weak, note)


# --- inputs made once -------------------------------------------------------------------------------------------


def g2(name: str):
    from ase.build import molecule

    return molecule(name)


def labelled(atoms_list, seed: int = 0):
    import numpy as np
    from ase.calculators.singlepoint import SinglePointCalculator

    rng = np.random.default_rng(seed)
    out = []
    for atoms in atoms_list:
        atoms = atoms.copy()
        atoms.calc = SinglePointCalculator(atoms, energy=float(-10 * len(atoms)), forces=rng.normal(0, 0.3, (len(atoms), 3)))
        out.append(atoms)
    return out


def write_extxyz(path: Path, atoms_list) -> Path:
    import ase.io

    ase.io.write(str(path), atoms_list, format="extxyz")
    return path


def raw_h5(path: Path, **datasets) -> Path:
    """An HDF5 file with exactly these datasets (None: a group; key 'split/x' nests)."""
    import h5py

    with h5py.File(path, "w") as h5:
        for key, value in datasets.items():
            if value is None:
                h5.create_group(key)
            else:
                h5.create_dataset(key, data=value)
        h5.attrs["format_version"] = 1
    return path


def h5_of(atoms_list, with_labels: bool = True, splits: bool = False) -> dict:
    import numpy as np

    numbers = np.concatenate([a.numbers for a in atoms_list]).astype(np.int64)
    positions = np.concatenate([a.positions for a in atoms_list]).astype(np.float64)
    offsets = np.concatenate([[0], np.cumsum([len(a) for a in atoms_list])]).astype(np.int64)
    data = {"atomic_numbers": numbers, "positions": positions, "offsets": offsets,
            "cells": np.zeros((len(atoms_list), 3, 3)), "pbc": np.zeros((len(atoms_list), 3), dtype=bool),
            "group": np.arange(len(atoms_list))}
    if with_labels:
        rng = np.random.default_rng(0)
        data["energies"] = np.array([-10.0 * len(a) for a in atoms_list])
        data["forces"] = rng.normal(0, 0.3, (len(numbers), 3))
    if splits:
        n = len(atoms_list)
        data["split/train"] = np.arange(0, n - 2)
        data["split/val"] = np.array([n - 2])
        data["split/test"] = np.array([n - 1])
    return data


def make_checkpoints(folder: Path) -> dict[str, Path]:
    import torch

    base = torch.load(ROOT / "deploycc" / "presets" / "tiny.pt", weights_only=True)
    variants = {}

    def variant(name: str, edit) -> None:
        payload = copy.deepcopy(base)
        edit(payload)
        path = folder / f"{name}.pt"
        torch.save(payload, path)
        variants[name] = path

    variant("sd_list", lambda p: p.__setitem__("state_dict", list(p["state_dict"].values())))
    variant("sd_tensor", lambda p: p.__setitem__("state_dict", torch.zeros(3)))
    variant("hidden_abc", lambda p: p["model_config"].__setitem__("hidden_dim", "abc"))
    variant("fv_one", lambda p: p.__setitem__("format_version", "one"))
    variant("meta_str", lambda p: p.__setitem__("metadata", "trained on water"))
    variant("elements_str", lambda p: p["metadata"].__setitem__("elements", ["H", "C"]))
    variant("cutoff_neg", lambda p: p["model_config"].__setitem__("cutoff", -5.0))

    def nan_weight(p):
        w = p["state_dict"]["embedding.weight"].clone()
        w[:, :] = float("nan")
        p["state_dict"]["embedding.weight"] = w

    variant("nan_weights", nan_weight)
    variant("inf_scale", lambda p: p["state_dict"].__setitem__("scale", torch.tensor(float("inf"))))
    variant("overflow_scale", lambda p: p["state_dict"].__setitem__("scale", torch.tensor(3e38)))
    return variants


def copy_artifact(src: Path, name: str) -> Path:
    dst = W / "arts" / name / src.name
    shutil.copytree(src, dst)
    return dst


def edit_manifest(folder: Path, edit) -> Path:
    path = folder / "manifest.json"
    raw = json.loads(path.read_text())
    raw = edit(raw)
    path.write_text(raw if isinstance(raw, str) else json.dumps(raw, indent=2))
    return folder


def file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def ensure_artifacts() -> None:
    if (EAGER / "manifest.json").is_file() and (ONNX / "manifest.json").is_file():
        return
    run = cli("build", "--model", "tiny", "--target", "eager,onnx", "--out", ART, timeout=300, cwd=BASE)
    if run.rc != 0:
        sys.exit(f"cannot build the artifacts: {run.err[-2000:]}")


# --- the cases --------------------------------------------------------------------------------------------------

SNIPPET_HEAD = """
import json, sys, threading, warnings
import numpy as np
warnings.simplefilter("ignore")
from ase import Atoms
from ase.build import molecule
from deploycc.errors import DeployccError, UserInputError
def outcome(fn):
    try:
        value = fn()
        return {"exc": None, "user": False, "msg": "returned " + type(value).__name__}
    except Exception as exc:
        return {"exc": type(exc).__name__, "user": isinstance(exc, UserInputError), "msg": str(exc)}
"""


def case_threads() -> None:
    code = SNIPPET_HEAD + """
from deploycc.api import load
from deploycc.ase import DeployccCalculator
src = sys.argv[1]
names = ["H2O", "CH4", "C2H6", "C6H6"]
calls = 50
rng = np.random.default_rng(0)
def jitter(atoms, k):
    a = atoms.copy(); a.positions += np.random.default_rng(k).normal(0, 0.02, a.positions.shape); return a
out = {}
# 1. one calculator shared by 4 threads
calc = DeployccCalculator(src)
lock = threading.Lock()
log = {"ok": 0, "wrong": 0, "user": 0, "other": 0, "msgs": set(), "owners": set()}
records = []
def calc_worker(t):
    base = molecule(names[t])
    for k in range(calls):
        a = jitter(base, 1000 * t + k); a.calc = calc
        try:
            e = a.get_potential_energy(); f = a.get_forces()
            with lock:
                records.append((t, a.copy(), e, np.array(f)))
        except UserInputError as exc:
            with lock:
                log["user"] += 1; log["msgs"].add(str(exc)[:160]); log["owners"].add(t)
            return
        except Exception as exc:
            with lock:
                log["other"] += 1; log["msgs"].add(type(exc).__name__ + ": " + str(exc)[:120])
threads = [threading.Thread(target=calc_worker, args=(t,)) for t in range(4)]
[th.start() for th in threads]; [th.join() for th in threads]
ref = load(src)
for t, a, e, f in records:
    e0, f0 = ref.predict([a])
    if f.shape != f0[0].shape or abs(e - e0[0]) > 1e-4 or np.abs(f - f0[0]).max() > 1e-4:
        log["wrong"] += 1
    else:
        log["ok"] += 1
out["calculator"] = {k: (sorted(v) if isinstance(v, set) else v) for k, v in log.items()}
# 2. one Predictor shared by 4 threads (single and mixed-size requests)
shared = load(src)
got = []
errs = []
def pred_worker(t):
    base = molecule(names[t])
    for k in range(calls):
        req = [jitter(base, 5000 + 1000 * t + k)] + ([jitter(molecule(names[(t + 1) % 4]), 9000 + k)] if k % 3 == 0 else [])
        try:
            e, f = shared.predict(req)
            with lock:
                got.append((req, e, f))
        except Exception as exc:
            with lock:
                errs.append(type(exc).__name__ + ": " + str(exc)[:120])
threads = [threading.Thread(target=pred_worker, args=(t,)) for t in range(4)]
[th.start() for th in threads]; [th.join() for th in threads]
wrong = 0
for req, e, f in got:
    for k, a in enumerate(req):
        e0, f0 = ref.predict([a])
        if f[k].shape != f0[0].shape or abs(e[k] - e0[0]) > 1e-4 or np.abs(f[k] - f0[0]).max() > 1e-4:
            wrong += 1
out["predictor"] = {"requests": len(got), "wrong": wrong, "errors": errs[:3], "n_errors": len(errs)}
# 3. one calculator per thread, sharing one Predictor (the documented way)
wrong3, errs3 = 0, []
def own_calc_worker(t):
    global wrong3
    c = DeployccCalculator(shared)
    base = molecule(names[t])
    for k in range(calls):
        a = jitter(base, 20000 + 1000 * t + k); a.calc = c
        try:
            f = a.get_forces(); e0, f0 = ref.predict([a])
            if f.shape != f0[0].shape or np.abs(f - f0[0]).max() > 1e-4:
                with lock: wrong3 += 1
        except Exception as exc:
            with lock: errs3.append(type(exc).__name__ + ": " + str(exc)[:120])
threads = [threading.Thread(target=own_calc_worker, args=(t,)) for t in range(4)]
[th.start() for th in threads]; [th.join() for th in threads]
out["own_calculators"] = {"wrong": wrong3, "errors": errs3[:3], "n_errors": len(errs3)}
# 4. the start race: 4 threads released together on a fresh shared calculator, 100 times
race = {"trials": 300, "wrong": 0, "owner_disturbed": 0, "msgs": set()}
refs = {n: ref.predict([molecule(n)]) for n in names}
SECOND = "used by a second thread"
for trial in range(race["trials"]):
    c = DeployccCalculator(shared)
    barrier = threading.Barrier(4)
    def race_worker(t):
        a = molecule(names[t]); a.calc = c
        barrier.wait()
        for k in range(3):
            try:
                f = a.get_forces()
                if f.shape != refs[names[t]][1][0].shape or np.abs(f - refs[names[t]][1][0]).max() > 1e-4:
                    with lock: race["wrong"] += 1
            except Exception as exc:
                if SECOND not in str(exc):
                    with lock:
                        race["owner_disturbed"] += 1; race["msgs"].add(type(exc).__name__ + ": " + str(exc)[:100])
                return
    threads = [threading.Thread(target=race_worker, args=(t,)) for t in range(4)]
    [th.start() for th in threads]; [th.join() for th in threads]
out["race"] = {k: (sorted(v) if isinstance(v, set) else v) for k, v in race.items()}
print(json.dumps(out))
"""
    for label, src in (("eager", EAGER), ("onnx", ONNX)):
        result, run = api(code, src, timeout=180)
        if "error" in result:
            judge_api(f"F1-{label}", f"threads share calc/Predictor ({label})", result, run)
            continue
        c, p, o = result["calculator"], result["predictor"], result["own_calculators"]
        problems = []
        if c["wrong"]:
            problems.append(("fail", f"calculator: {c['wrong']} results of another molecule"))
        if c["other"]:
            problems.append(("fail", f"calculator: {c['other']} raw exceptions {c['msgs'][:1]}"))
        r = result["race"]
        others = [m for m in c["msgs"] if "second thread" not in m]
        if c["user"] != 3 or others:
            problems.append(("weak", f"calculator: {c['user']} threads refused (expected 3 non-owners) {others[:1]}"))
        if r["wrong"]:
            problems.append(("fail", f"start race: {r['wrong']} results of another molecule"))
        if r["owner_disturbed"]:
            problems.append(("weak", f"start race: the owner thread failed in {r['owner_disturbed']}/{r['trials']} "
                                     f"trials: {r['msgs'][:1]}"))
        summary = (f"calculator: {c['ok']} right, {c['wrong']} wrong, {c['user']} threads refused "
                   f"({(c['msgs'] or [''])[0][:90]}); start race x{r['trials']}: {r['wrong']} wrong, "
                   f"owner failed {r['owner_disturbed']}x")
        result1 = {"summary": summary}
        judge_api(f"F1a-{label}", f"one calculator, 4 threads ({label})", result1, run, want_user_error=False,
                  extra=problems)
        problems = []
        if p["wrong"]:
            problems.append(("fail", f"predictor: {p['wrong']} results of another molecule"))
        if p["n_errors"]:
            problems.append(("fail", f"predictor: {p['n_errors']} exceptions {p['errors'][:1]}"))
        if o["wrong"] or o["n_errors"]:
            problems.append(("fail", f"own calculators on one Predictor: {o['wrong']} wrong, {o['n_errors']} errors"))
        summary = (f"predictor: {p['requests']} requests, {p['wrong']} wrong; own calculators sharing it: "
                   f"{o['wrong']} wrong, {o['n_errors']} errors")
        judge_api(f"F1b-{label}", f"one Predictor, 4 threads ({label})", {"summary": summary}, run,
                  want_user_error=False, extra=problems)


def check_output_finite(path: Path) -> list:
    """Problems of a written predictions file: non-finite numbers."""
    import ase.io
    import numpy as np

    if not Path(path).exists():
        return []
    try:
        frames = ase.io.read(str(path), index=":")
    except Exception as exc:  # noqa: BLE001
        return [("fail", f"output unreadable ({type(exc).__name__})")]
    for atoms in frames:
        e = atoms.calc.results.get("energy") if atoms.calc else None
        f = atoms.calc.results.get("forces") if atoms.calc else None
        if e is None or not np.isfinite(e) or f is None or not np.isfinite(f).all():
            return [("fail", "NaN/inf written to the output")]
    return []


def case_nan_exit0(ckpts: dict, inputs: dict) -> None:
    import numpy as np

    # F2a: a coordinate of 1e30
    h2o = g2("H2O")
    h2o.positions[0, 0] = 1e30
    src = write_extxyz(W / "far.extxyz", [h2o])
    prev = W / "prev_far.extxyz"
    prev.write_text("previous output\n")
    before = {prev: sha(prev), src: sha(src)}
    run = cli("predict", EAGER, "--structures", src, "--out", prev)
    extra = [] if run.rc != 0 else check_output_finite(prev) + [("weak", "accepted a coordinate of 1e30")]
    judge("F2a", "predict H2O with x=1e30", run, USER, intact=before if run.rc != 0 else {src: before[src]},
          extra=extra, note="exit 0 with finite output would also be acceptable")
    # F2b: NaN weights through predict
    out = W / "nanw.extxyz"
    run = cli("predict", ckpts["nan_weights"], "--structures", inputs["small"], "--out", out)
    judge("F2b", "predict with NaN-weight checkpoint", run, USER, absent=(out,), names=("nan_weights.pt",),
          extra=check_output_finite(out))
    # F2c: verify on a data file with NaN reference forces
    data = h5_of(inputs["four"])
    data["forces"][2, 1] = np.nan
    bad = raw_h5(W / "nanforces.h5", **data)
    run = cli("verify", ONNX, "--data", bad)
    judge("F2c", "verify --data with NaN ref forces", run, USER, names=("nanforces.h5",),
          extra=[("fail", "reported nan MAE")] if "nan" in run.out.lower() and run.rc == 0 else [])


def case_data_loss(inputs: dict) -> None:
    d = raw_h5(W / "d.h5", **h5_of(inputs["four"], splits=True))
    before = {d: sha(d)}
    run = cli("predict", EAGER, "--structures", d, "--out", d)
    judge("F3a", "predict --structures d.h5 --out d.h5", run, USER, intact=before)
    x = W / "x.h5"
    run = cli("predict", EAGER, "--structures", inputs["small"], "--out", x)
    judge("F3b", "predict --out x.h5", run, USER, absent=(x,))


def perturb_onnx(folder: Path) -> None:
    import numpy as np
    import onnx
    from onnx import numpy_helper

    path = folder / "model.onnx"
    model = onnx.load(str(path))
    changed = 0
    for init in model.graph.initializer:
        arr = numpy_helper.to_array(init)
        if arr.dtype == np.float32 and arr.size >= 1000 and changed < 3:
            init.CopyFrom(numpy_helper.from_array((arr * 1.5 + 0.05).astype(np.float32), init.name))
            changed += 1
    onnx.save(model, str(path))


def case_verified_lie() -> None:
    folder = copy_artifact(ONNX, "lie")
    perturb_onnx(folder)

    def edit(raw):
        raw["artifact"]["sha256"] = file_sha256(folder / "model.onnx")
        raw["artifact"]["bytes"] = (folder / "model.onnx").stat().st_size
        raw["settings"]["tolerances"] = {k: 1e9 for k in raw["settings"]["tolerances"]}
        raw["parity"]["passed"] = True
        return raw

    edit_manifest(folder, edit)
    report = W / "lie.json"
    run = cli("verify", folder, "--json", report)
    extra = []
    if run.rc == 0 or "verified" in run.out.split("\n")[-2:]:
        extra.append(("fail", "printed verified"))
    try:
        disagree = json.loads(report.read_text()).get("manifest_disagrees")
    except (OSError, json.JSONDecodeError):
        disagree = None
    if not disagree:
        extra.append(("weak", "no manifest_disagrees in --json"))
    if "manifest records" not in run.out:
        extra.append(("weak", "no 'manifest records' note"))
    judge("F4", "verify: loosened manifest + perturbed model", run, PARITY, extra=extra,
          note=f"manifest_disagrees={sorted(disagree) if disagree else None}")


def case_memory() -> None:
    code = SNIPPET_HEAD + """
import time, resource
from deploycc.api import load
src, n_struct, n_atoms, budget = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
run_it = sys.argv[5] == "run"
def blob(seed, n):
    # liquid-like cluster: jittered cubic grid with 1.55 A spacing (about water's atom density)
    rng = np.random.default_rng(seed)
    side = int(np.ceil(n ** (1 / 3)))
    grid = np.stack(np.meshgrid(*[np.arange(side)] * 3, indexing="ij"), -1).reshape(-1, 3)[:n] * 1.55
    pos = grid + rng.uniform(-0.2, 0.2, grid.shape)
    return Atoms(numbers=rng.choice([1, 1, 6, 7, 8], n), positions=pos)
p = load(src, memory_budget=None if budget == "default" else float(budget) * 1e9)
structures = [blob(k, n_atoms) for k in range(n_struct)]
t0 = time.perf_counter()
try:
    prepared = p.validate(structures)
    plan = p.plan(prepared)
except UserInputError as exc:
    print(json.dumps({"exc": type(exc).__name__, "user": True, "msg": str(exc), "seconds": time.perf_counter() - t0}))
    sys.exit()
mem, limit = p.settings.memory, p.settings.atoms.max
widths = [max(int(h.degree(len(s)).max(initial=0)), 1) for s, h in prepared]
est = [mem.estimate(sum(len(prepared[k][0]) for k in call), max(widths[k] for k in call)) for call in plan]
whole = mem.estimate(sum(len(s) for s, _ in prepared), max(widths))
out = {"exc": None, "user": False, "calls": len(plan), "max_call_gb": max(est) / 1e9, "whole_gb": whole / 1e9,
       "budget_gb": p.budget() / 1e9, "atoms_max": limit, "plan_seconds": time.perf_counter() - t0}
if run_it:
    t1 = time.perf_counter()
    e, f = p.predict(structures)
    out.update(run_seconds=time.perf_counter() - t1, finite=bool(np.isfinite(e).all()),
               peak_rss_gb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6)
print(json.dumps(out))
"""
    # F5a: 64 structures of 500 atoms (within the 512 profile of the issue): the plan must fit the budget
    result, run = api(code, ONNX, 64, 500, "default", "plan", timeout=90)
    extra = []
    if "calls" in result:
        if result["max_call_gb"] > result["budget_gb"] * 1.0001:
            extra.append(("fail", f"a call needs {result['max_call_gb']:.2f} GB > budget {result['budget_gb']:.2f} GB"))
        if result["plan_seconds"] > 60:
            extra.append(("weak", f"planning took {result['plan_seconds']:.0f} s"))
        summary = (f"64x500 atoms (onnx, default budget {result['budget_gb']:.1f} GB): whole request "
                   f"{result['whole_gb']:.1f} GB -> {result['calls']} calls, largest {result['max_call_gb']:.2f} GB; "
                   f"planned in {result['plan_seconds']:.1f} s")
    else:
        summary = result.get("msg", "")
    judge_api("F5a", "64x500 atoms: split by memory estimate", {"summary": summary, **result}, run,
              want_user_error=False, extra=extra)
    # F5a': the same kind of request actually run, under a 1.5 GB budget and a 12 GB address-space limit
    result, run = api(code, ONNX, 8, 500, "1.5", "run", timeout=90)
    extra = []
    if "calls" in result:
        if not result.get("finite"):
            extra.append(("fail", "non-finite results"))
        if result.get("peak_rss_gb", 0) > 1.5 + 1.5:
            extra.append(("weak", f"peak RSS {result['peak_rss_gb']:.1f} GB well above the 1.5 GB budget"))
        summary = (f"8x500 atoms run with a 1.5 GB budget: {result['calls']} calls (largest est. "
                   f"{result['max_call_gb']:.2f} GB), {result.get('run_seconds', 0):.1f} s, peak RSS "
                   f"{result.get('peak_rss_gb', 0):.2f} GB")
    else:
        summary = result.get("msg", "") or result.get("tail", "")
    judge_api("F5a2", "8x500 atoms run under 1.5 GB budget", {"summary": summary, **result}, run,
              want_user_error=False, extra=extra)
    # F5b: 5,000 atoms through the preset loaded by name with a small budget: refused at once, one line
    big = W / "big5000.extxyz"
    result, run0 = api("""
import sys, numpy as np
from ase import Atoms
import ase.io
n = 5000; rng = np.random.default_rng(0); side = int(np.ceil(n ** (1/3)))
grid = np.stack(np.meshgrid(*[np.arange(side)] * 3, indexing="ij"), -1).reshape(-1, 3)[:n] * 1.55
ase.io.write(sys.argv[1], Atoms(numbers=rng.choice([1, 1, 6, 7, 8], n), positions=grid + rng.uniform(-0.2, 0.2, grid.shape)), format="extxyz")
print("{}")
""", big)
    out = W / "big5000_out.extxyz"
    run = cli("predict", "tiny", "--structures", big, "--out", out, env={"DEPLOYCC_MEMORY_BUDGET_GB": "1"}, timeout=60)
    judge("F5b", "5000 atoms via preset, budget 1 GB", run, USER, contains=("estimated",), absent=(out,),
          max_seconds=30)
    # F5c: the same 5,000 atoms with the default budget: the estimate decides (not run: > 60 s on 2 cores)
    result, run = api(code, "tiny", 1, 5000, "default", "plan", timeout=90)
    if "calls" in result:
        summary = (f"5000 atoms via 'tiny' (atoms max {result['atoms_max']}): estimate {result['whole_gb']:.2f} GB "
                   f"vs default budget {result['budget_gb']:.1f} GB -> {'runs' if result['calls'] else 'refused'} "
                   f"(not run here)")
        extra = [] if result["whole_gb"] <= result["budget_gb"] else [("fail", "plan accepted above budget")]
    else:
        summary, extra = result.get("msg", ""), []
    judge_api("F5c", "5000 atoms via preset, default budget", {"summary": summary, **result}, run,
              want_user_error=False, extra=extra, note="a refusal with the estimate is also GOOD")


def case_checkpoints(ckpts: dict) -> None:
    names = {"sd_list": "state_dict a list", "sd_tensor": "state_dict a tensor",
             "hidden_abc": "model_config.hidden_dim='abc'", "fv_one": "format_version='one'",
             "meta_str": "metadata a string", "elements_str": "metadata.elements=['H','C']"}
    for k, (key, label) in enumerate(names.items(), start=1):
        out = W / f"ck_{key}"
        run = cli("build", "--model", ckpts[key], "--target", "eager", "--out", out)
        judge(f"F6c{k}", f"ckpt: {label}", run, USER, names=(ckpts[key].name,), absent=(out / key,),
              max_seconds=20)


def case_manifests() -> None:
    def mf(cid, label, edit, src=ONNX, names=("manifest.json",), prepare=None):
        folder = copy_artifact(src, cid)
        if prepare:
            prepare(folder)
        edit_manifest(folder, edit)
        run = cli("verify", folder)
        return judge(cid, label, run, USER, names=names)

    mf("F6m1", "manifest format_version '1.0'", lambda r: {**r, "format_version": "1.0"})
    mf("F6m2", "manifest is a JSON list", lambda r: json.dumps([r]))

    folder = copy_artifact(ONNX, "F6m3")
    ref = folder / "reference.pt"
    edit_manifest(folder, lambda r: {**r, "artifact": {"file": "reference.pt", "sha256": file_sha256(ref),
                                                       "bytes": ref.stat().st_size}})
    judge("F6m3", "manifest artifact.file=reference.pt", cli("verify", folder), USER, names=("manifest.json",))
    mf("F6m4", "manifest target torchscript on ONNX", lambda r: {**r, "target": "torchscript"},
       names=("model.onnx",))
    mf("F6m5", "manifest elements as strings", lambda r: {**r, "elements": ["H", "C"]})


def case_outputs(inputs: dict, ro: Path | None) -> None:
    small = inputs["small"]
    if ro is None:
        record("F6o1", "predict --out on read-only mount", "SKIP", "-", "74", note="could not mount a read-only tmpfs")
        record("F6o2", "md --out on read-only mount", "SKIP", "-", "74", note="could not mount a read-only tmpfs")
    else:
        run = cli("predict", EAGER, "--structures", small, "--out", ro / "o.extxyz")
        judge("F6o1", "predict --out on read-only mount", run, STORAGE, max_seconds=20)
        run = cli("md", "tiny", "--structure", inputs["aspirin"], "--steps", "20", "--equilibrate-ps", "0.01",
                  "--relax-steps", "5", "--out", ro / "md", timeout=90)
        judge("F6o2", "md --out on read-only mount", run, STORAGE, max_seconds=15)
    afile = W / "afile"
    afile.write_text("not a folder\n")
    before = {afile: sha(afile)}
    run = cli("build", "--model", "tiny", "--target", "eager", "--out", afile)
    judge("F6o3", "build --out a file", run, (USER, STORAGE), intact=before, max_seconds=30)
    folder = W / "adir.extxyz"
    folder.mkdir()
    judge("F6o4", "predict --out a directory", cli("predict", EAGER, "--structures", small, "--out", folder), USER,
          max_seconds=10)
    judge("F6o5", "predict --out below a file",
          cli("predict", EAGER, "--structures", small, "--out", afile / "o.extxyz"), USER, intact=before, max_seconds=10)
    jdir = W / "jsondir"
    jdir.mkdir()
    judge("F6o6", "verify --json a directory", cli("verify", ONNX, "--json", jdir), USER, max_seconds=10)


def case_hdf5(inputs: dict) -> None:
    import numpy as np

    four = inputs["four"]
    base = h5_of(four)

    def h5case(cid, label, edit, cmd="predict", art=EAGER, names=True):
        data = {k: (v.copy() if hasattr(v, "copy") else v) for k, v in base.items()}
        data = edit(data) or data
        path = raw_h5(W / f"{cid}.h5", **data)
        out = W / f"{cid}_out.extxyz"
        if cmd == "predict":
            run = cli("predict", art, "--structures", path, "--out", out)
        else:
            run = cli("verify", art, "--data", path)
        return judge(cid, label, run, USER, names=(path.name,) if names else (), absent=(out,),
                     extra=check_output_finite(out))

    h5case("F6h1", "h5 positions with 2 columns", lambda d: d.update(positions=d["positions"][:, :2]))
    h5case("F6h2", "h5 atomic_numbers as strings",
           lambda d: d.update(atomic_numbers=np.array([b"H"] * len(d["atomic_numbers"]))))
    h5case("F6h3", "h5 offsets a group", lambda d: d.update(offsets=None))
    h5case("F6h4", "h5 energies shorter (verify --data)", lambda d: d.update(energies=d["energies"][:-1]),
           cmd="verify", art=ONNX)
    # every structure above the atoms profile: an artifact whose manifest says atoms max 8, data of 9+ atoms
    small_art = copy_artifact(EAGER, "small_profile")

    def profile(raw):
        raw["settings"]["atoms"] = {"min": 1, "opt": 8, "max": 8}
        return raw

    edit_manifest(small_art, profile)
    big = [g2(n) for n in ("CH3CH2OH", "C6H6", "CH3CH2OCH3", "C4H4O", "CH3COOH")]
    big = [a for a in big if len(a) > 8]
    path = raw_h5(W / "F6h5.h5", **h5_of(big))
    run = cli("verify", small_art, "--data", path)
    judge("F6h5", "h5: every structure above atoms profile", run, USER)
    # weak answers about HDF5
    n = int(base["offsets"][-1])

    def past_end(d):
        d["offsets"] = d["offsets"].copy()
        d["offsets"][-1] = n + 7

    def decreasing(d):
        o = d["offsets"].copy()
        o[1], o[2] = o[2], o[1]
        d["offsets"] = o

    def no_atoms(d):
        o = d["offsets"].copy()
        o[2] = o[1]  # structure 1 has no atoms; its atoms join structure 2
        d["offsets"] = o

    def fractional(d):
        z = d["atomic_numbers"].astype(np.float64)
        z[z == 6] = 6.5
        d["atomic_numbers"] = z

    h5case("W6a", "h5 offsets past the end", past_end)
    h5case("W6b", "h5 offsets decreasing", decreasing)
    h5case("W6c", "h5 structure with no atoms (predict)", no_atoms)
    h5case("W6c2", "h5 structure with no atoms (verify)", no_atoms, cmd="verify", art=ONNX)
    h5case("W6d", "h5 atomic_numbers 6.5", fractional)


def case_train(inputs: dict) -> None:
    data = raw_h5(W / "train.h5", **h5_of(inputs["four"] * 3, splits=True))
    for k, (flag, value) in enumerate((("--batch-size", "0"), ("--epochs", "0"), ("--lr", "-1"), ("--lr", "nan")), 1):
        out = W / f"train_{k}.pt"
        run = cli("train", "--data", data, "--model", "tiny", "--out", out, flag, value, "--max-minutes", "0.2",
                  timeout=90)
        judge(f"F6t{k}", f"train {flag} {value}", run, USER, absent=(out,), max_seconds=20)


def case_symlink() -> None:
    real = W / "bigdisk" / "tiny-eager"
    real.parent.mkdir(parents=True)
    shutil.copytree(EAGER, real)
    root = W / "symroot"
    (root / "tiny").mkdir(parents=True)
    link = root / "tiny" / "eager"
    link.symlink_to(real, target_is_directory=True)
    runs = [cli("build", "--model", "tiny", "--target", "eager", "--force", "--out", root, timeout=120)
            for _ in range(2)]
    extra = []
    if not link.is_symlink():
        extra.append(("fail", "the link was replaced by a folder"))
    leftovers = [p.name for p in list((root / "tiny").glob(".eager.*")) + list(real.parent.glob(".tiny-eager.*"))
                 if not p.name.endswith(".lock")]
    if leftovers:
        extra.append(("fail", f"left {leftovers}"))
    if not (real / "manifest.json").is_file():
        extra.append(("fail", "no manifest in the link's target"))
    bad = [r for r in runs if r.rc != 0]
    run = bad[0] if bad else runs[-1]
    judge("F7", "build --force x2 through symlinked folder", run, 0, extra=extra,
          note=f"exit codes {[r.rc for r in runs]}")


def case_nonsense(inputs: dict, ckpts: dict) -> None:
    out = W / "md_hot"
    run = cli("md", "tiny", "--structure", inputs["aspirin"], "--temperature", "1e9", "--steps", "200",
              "--equilibrate-ps", "0.1", "--out", out, timeout=120)
    passed_all = run.rc == 0
    judge("F8a", "md --temperature 1e9 --steps 200", run, (PARITY, USER),
          extra=[("fail", "every check passed")] if passed_all else [],
          note="--equilibrate-ps 0.1 to stay short")
    run = cli("build", "--model", ckpts["cutoff_neg"], "--target", "eager", "--out", W / "ck_cutoff")
    judge("F8b", "checkpoint cutoff=-5 -> build", run, USER, names=("cutoff_neg.pt",))
    one = write_extxyz(W / "one_atom.extxyz", [Atoms_one()])
    run = cli("build", "--model", "tiny", "--target", "eager", "--calib", one, "--out", W / "calib1")
    judge("F8c", "build --calib one-atom file", run, USER, names=("one_atom.extxyz",))


def Atoms_one():  # noqa: N802
    from ase import Atoms

    return Atoms("H", positions=[[0, 0, 0]])


def case_exit_codes(inputs: dict) -> None:
    judge("W1a", "bad CLI flag (build --bogus)", cli("build", "--bogus"), USAGE)
    judge("W1a2", "missing option (predict w/o --out)", cli("predict", "tiny", "--structures", inputs["small"]), USAGE)
    judge("W1a3", "bad option value (--epochs abc)",
          cli("train", "--data", "x.h5", "--out", "x.pt", "--epochs", "abc"), USAGE)
    out = W / "tpu.extxyz"
    judge("W1b", "predict --device tpu",
          cli("predict", "tiny", "--structures", inputs["small"], "--out", out, "--device", "tpu"), USER, absent=(out,))
    plain = write_extxyz(W / "plain.extxyz", [g2("H2O"), g2("CH4")])
    imp = W / "imported.h5"
    judge("W1c", "data import of an unlabelled file", cli("data", "import", plain, "--out", imp), USER,
          absent=(imp,), names=("plain.extxyz",))


def leftovers(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob(".*") if ".tmp" in p.name or p.name.endswith(".previous"))


def sigterm(cid: str, name: str, args: list, folder: Path, wait_for, intact: dict, delay: float = 1.0,
            timeout: float = 90) -> None:
    started = time.perf_counter()
    proc = subprocess.Popen([PY, "-m", "deploycc", *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=ENV, cwd=W, preexec_fn=limit_memory())
    seen = False
    while time.perf_counter() - started < timeout and proc.poll() is None:
        if wait_for():
            seen = True
            break
        time.sleep(0.05)
    if proc.poll() is None:
        time.sleep(delay)
        proc.send_signal(signal.SIGTERM)
    try:
        out, err = proc.communicate(timeout=30)
        rc = proc.returncode
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        rc = "timeout"
    rc = 128 - rc if isinstance(rc, int) and rc < 0 else rc  # killed by signal N: the shell's 128+N
    left = leftovers(folder)
    extra = [] if seen else [("weak", "the temp file never appeared before the signal")]
    if left:
        extra.append(("weak", f"left {', '.join(left)[:120]}"))
    run = Run(rc, out, err, time.perf_counter() - started)
    judge(cid, name, run, (130, 143), intact=intact, extra=extra)


def case_sigterm(inputs: dict) -> None:
    root = W / "sig"
    prev = root / "tiny" / "onnx"
    shutil.copytree(ONNX, prev)
    staging = lambda: any((root / "tiny").glob(".onnx.tmp-*"))  # noqa: E731
    sigterm("W2a", "SIGTERM during build --force (onnx)",
            ["build", "--model", "tiny", "--target", "onnx", "--force", "--out", root], root / "tiny", staging,
            {prev: sha(prev)}, delay=1.5)
    out = W / "sigpred" / "out.extxyz"
    out.parent.mkdir()
    out.write_text("previous output\n")
    temp = lambda: any(out.parent.glob(".out.extxyz.tmp-*"))  # noqa: E731
    sigterm("W2b", "SIGTERM during predict", ["predict", EAGER, "--structures", inputs["long"], "--out", out],
            out.parent, temp, {out: sha(out), inputs["long"]: sha(inputs["long"])}, delay=0.5)


def case_bad_requests() -> None:
    code = SNIPPET_HEAD + """
from deploycc.api import load
p = load(sys.argv[1])
a = molecule("H2O")
cases = {"None": None, "'H2O'": "H2O", "dict": {"atoms": a}, "ndarray": np.zeros((3, 3)), "bare Atoms": a}
print(json.dumps({k: outcome(lambda v=v: p.predict(v)) for k, v in cases.items()}))
"""
    result, run = api(code, ONNX)
    for k, label in enumerate(("None", "'H2O'", "dict", "ndarray", "bare Atoms"), 1):
        judge_api(f"W3{chr(96 + k)}", f"predict({label})", result.get(label, result), run)


def case_precision() -> None:
    code = SNIPPET_HEAD + """
from deploycc.api import load
p = load(sys.argv[1])
shift = float(sys.argv[2])
mol = molecule("CH3CH2OH")
e0, f0 = p.predict([mol])
far = mol.copy(); far.positions += shift
try:
    e1, f1 = p.predict([far])
    print(json.dumps({"exc": None, "user": False, "de": abs(float(e1[0] - e0[0])), "df": float(np.abs(f1[0] - f0[0]).max())}))
except Exception as exc:
    print(json.dumps({"exc": type(exc).__name__, "user": isinstance(exc, UserInputError), "msg": str(exc)}))
"""
    for cid, shift in (("W4a", 1e6), ("W4b", 1e8)):
        result, run = api(code, ONNX, shift)
        if result.get("exc") is None and "de" in result:
            bad = result["df"] > 1e-3 or result["de"] > 1e-3
            summary = f"accepted: |dE| = {result['de']:.3g} eV, max |dF| = {result['df']:.3g} eV/Å vs at the origin"
            judge_api(cid, f"ethanol {shift:g} Å from origin", {"summary": summary}, run, want_user_error=False,
                      extra=[("weak", "precision lost")] if bad else [])
        else:
            judge_api(cid, f"ethanol {shift:g} Å from origin", result, run)


def case_images(inputs: dict) -> None:
    from ase import Atoms

    cu = Atoms("Cu2", positions=[[0.3, 0.3, 0.3], [3.9, 0.3, 0.3]], cell=[3.6] * 3, pbc=True)
    src = write_extxyz(W / "cu_images.extxyz", [cu])
    out = W / "cu_out.extxyz"
    judge("W5", "Cu atoms one lattice vector apart", cli("predict", EAGER, "--structures", src, "--out", out), USER,
          absent=(out,), contains=("periodic",))


def case_build_nonfinite(ckpts: dict) -> None:
    for cid, key, label in (("W7a", "nan_weights", "build NaN weights"), ("W7b", "inf_scale", "build inf scale"),
                            ("W7c", "overflow_scale", "build scale=3e38 (overflow)")):
        run = cli("build", "--model", ckpts[key], "--target", "eager", "--out", W / f"nf_{key}")
        extra = []
        if "RuntimeWarning" in run.err:
            extra.append(("weak", "numpy RuntimeWarnings"))
        if "failed parity" in run.err and "checkpoint" not in run.err.lower() and "nan or infinite" not in run.err.lower():
            extra.append(("weak", "blames the artifact, not the checkpoint"))
        expected = (USER, PARITY) if key == "overflow_scale" else USER
        judge(cid, label, run, expected, contains=("nan or infinite",), extra=extra)


def case_md_weak(inputs: dict) -> None:
    one = write_extxyz(W / "one.xyz", [Atoms_one()])
    run = cli("md", "tiny", "--structure", one, "--steps", "20", "--equilibrate-ps", "0.01", "--out", W / "md_one",
              timeout=60)
    extra = [("weak", "says 'NaN or infinite positions' for a fine input")] if "NaN or infinite positions" in run.err else []
    judge("W8a", "md on a one-atom file", run, (0, USER), extra=extra,
          note="a clear refusal (65) or a run (0) are both fine")
    run = cli("md", "tiny", "--structure", inputs["aspirin"], "--steps", "200", "--log-interval", "10000",
              "--equilibrate-ps", "0.01", "--relax-steps", "20", "--out", W / "md_log", timeout=90)
    extra = [("weak", "reports a NaN drift as the model's failure")] if ("drift" in run.err or "nan" in run.out.lower()) and run.rc == 1 else []
    judge("W8b", "md --log-interval 10000 --steps 200", run, (0, USER), extra=extra)


def case_bench() -> None:
    common = ["--model", "tiny", "--target", "eager", "--min-iters", "1", "--min-seconds", "0", "--warmup", "0",
              "--out", W / "benchroot"]
    shutil.copytree(EAGER, W / "benchroot" / "tiny" / "eager")
    run = cli("bench", *common, "--batch-sizes", "100000", timeout=120)
    judge("W9a", "bench --batch-sizes 100000", run, USER)
    latest = list((W / "benchroot").rglob("*latest*"))
    run = cli("bench", *common, "--batch-sizes", "1", "--atoms", "100000", timeout=120)
    saved = [p for p in (W / "benchroot").rglob("*latest*") if p not in latest]
    judge("W9b", "bench --atoms 100000", run, USER,
          extra=[("fail", f"saved {saved[0].name} for select")] if run.rc == 0 and saved else [])


def case_manifest_weak() -> None:
    def mf(cid, label, edit, prepare=None):
        folder = copy_artifact(ONNX, cid)
        if prepare:
            prepare(folder)
        edit_manifest(folder, edit)
        run = cli("verify", folder)
        return judge(cid, label, run, USER, names=("manifest.json",))

    def atoms_max(value):
        def edit(raw):
            raw["settings"]["atoms"]["max"] = value
            return raw
        return edit

    mf("W10a", "manifest atoms max 0", atoms_max(0))
    mf("W10a2", "manifest atoms max -1", atoms_max(-1))

    def outside(folder: Path) -> None:
        other = folder.parent.parent / "other"
        other.mkdir(exist_ok=True)
        shutil.copyfile(folder / "model.onnx", other / "model.onnx")

    mf("W10b", "artifact.file ../../other/model.onnx",
       lambda r: {**r, "artifact": {**r["artifact"], "file": "../../other/model.onnx"}}, prepare=outside)
    mf("W10c", "manifest target tensorflow", lambda r: {**r, "target": "tensorflow"})


def case_docs_b20() -> None:
    code = SNIPPET_HEAD + """
from deploycc.targets.base import get_target
print(json.dumps({n: get_target(n).settings("cpu").atoms.max for n in ("eager", "onnx", "torchscript")}))
"""
    result, run = api(code)
    doc = (ROOT / "docs" / "bad-inputs.md").read_text()
    row = next((line for line in doc.splitlines() if line.startswith("| B20 ")), "")
    ok = "error" not in result and all(f"{v:,}" in row for v in set(result.values()))
    summary = f"atoms max on CPU {result}; B20 says: {short(row.split('|')[2], 90) if row else 'no B20 row'}"
    judge_api("W11", "docs B20 atom limit vs targets", {"summary": summary}, run, want_user_error=False,
              extra=[] if ok else [("weak", "docs and target files disagree")])


# --- main -------------------------------------------------------------------------------------------------------


def mount_read_only() -> Path | None:
    ro = W / "ro"
    ro.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "none", str(ro)], capture_output=True)
    return ro if done.returncode == 0 else None


def package_mtimes() -> dict[str, float]:
    return {str(p.relative_to(ROOT)): p.stat().st_mtime for p in (ROOT / "deploycc").rglob("*.py")}


def main() -> None:
    started = time.perf_counter()
    mtimes = package_mtimes()
    print(f"auditing {ROOT / 'deploycc'} as of {time.strftime('%H:%M:%S')}", flush=True)
    if W.exists():
        subprocess.run(["umount", str(W / "ro")], capture_output=True)
        shutil.rmtree(W)
    W.mkdir(parents=True)
    ensure_artifacts()
    import numpy as np  # noqa: F401

    from ase.build import molecule  # noqa: F401

    four = [g2(n) for n in ("H2O", "CH4", "NH3", "C2H6")]
    inputs = {"four": four, "small": write_extxyz(W / "small.extxyz", four),
              "aspirin": ROOT / "docs" / "md" / "aspirin.xyz"}
    (W / "ckpts").mkdir()
    ckpts = make_checkpoints(W / "ckpts")
    # a long file for the SIGTERM-during-predict case: the shipped molecules, 100 times
    import h5py
    import ase.io
    from ase import Atoms

    with h5py.File(ROOT / "deploycc" / "calib" / "molecules.h5") as h5:
        z, r, o = h5["atomic_numbers"][()], h5["positions"][()], h5["offsets"][()]
    mols = [Atoms(numbers=z[o[k]:o[k + 1]], positions=r[o[k]:o[k + 1]]) for k in range(len(o) - 1)]
    inputs["long"] = W / "long.extxyz"
    ase.io.write(str(inputs["long"]), mols * 100, format="extxyz")
    ro = mount_read_only()
    try:
        sections = [
            ("threads", case_threads), ("nan", lambda: case_nan_exit0(ckpts, inputs)),
            ("data loss", lambda: case_data_loss(inputs)), ("verified lie", case_verified_lie),
            ("memory", case_memory), ("checkpoints", lambda: case_checkpoints(ckpts)),
            ("manifests", case_manifests), ("outputs", lambda: case_outputs(inputs, ro)),
            ("hdf5", lambda: case_hdf5(inputs)), ("train", lambda: case_train(inputs)),
            ("symlink", case_symlink), ("nonsense", lambda: case_nonsense(inputs, ckpts)),
            ("exit codes", lambda: case_exit_codes(inputs)), ("sigterm", lambda: case_sigterm(inputs)),
            ("bad requests", case_bad_requests), ("precision", case_precision), ("images", lambda: case_images(inputs)),
            ("build non-finite", lambda: case_build_nonfinite(ckpts)), ("md", lambda: case_md_weak(inputs)),
            ("bench", case_bench), ("manifest weak", case_manifest_weak), ("docs", case_docs_b20)]
        only = set(sys.argv[1:])
        for name, fn in sections:
            if only and name not in only:
                continue
            print(f"--- {name}", flush=True)
            try:
                fn()
            except Exception as exc:  # noqa: BLE001 - the audit itself must go on
                record(f"?{name}", f"audit error in {name}", "FAIL", "-", "-", f"{type(exc).__name__}: {exc}",
                       note="a bug of this script, not necessarily of deploycc")
    finally:
        if ro is not None:
            subprocess.run(["umount", str(ro)], capture_output=True)
    now = package_mtimes()
    changed = sorted(k for k in set(now) | set(mtimes) if now.get(k) != mtimes.get(k))
    if changed:
        print(f"WARNING: the package changed while the audit ran ({', '.join(changed)}): rerun for a consistent "
              "snapshot", flush=True)
    counts = {v: sum(1 for c in RESULTS if c.verdict == v) for v in ("GOOD", "WEAK", "FAIL", "SKIP")}
    (BASE / "results.json").write_text(json.dumps([asdict(c) for c in RESULTS], indent=1, default=str))
    rows = ["| id | case | verdict | exit (expected) | stderr (first / last line) | problems |", "|---|---|---|---|---|---|"]
    for c in RESULTS:
        err = c.stderr_first + (f" … {c.stderr_last}" if c.stderr_last else "")
        rows.append(f"| {c.id} | {c.name} | {c.verdict} | {c.rc} ({c.expected}) | {err.replace('|', '/')} | "
                    f"{'; '.join(c.problems).replace('|', '/')}{' — ' + c.note if c.note else ''} |")
    (BASE / "report.md").write_text("\n".join(rows) + "\n")
    print(f"\n{counts} in {time.perf_counter() - started:.0f} s; table: {BASE / 'report.md'}, "
          f"details: {BASE / 'results.json'}")


if __name__ == "__main__":
    main()
