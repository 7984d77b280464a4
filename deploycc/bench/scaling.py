"""`deploycc scale`: cost per atom from a few hundred to 10^5 atoms, per target, with a peer in the same run.

The driver builds (or reuses) each target's artifact, writes every system once (deploycc/bench/systems.py) to
a temporary extended-XYZ file, and measures each (target, structure) in a process of its own (`python -m
deploycc.bench.scaling`), so that no allocator or memory arena carries over between sizes: the
neighbour-list time, then one warm-up call and `repeats` timed calls of `Runner.infer` (energies, forces,
virials), and the peak RSS of the process (absolute: interpreter, libraries and model included).  A
structure whose memory estimate exceeds the budget is skipped with its estimate, not run.  With `peer`
("ani1x"), deploycc/bench/peers.py measures the same files under `peer_python`.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..errors import DeployccError, UserInputError

Event = Callable[[str], None]
DEFAULT_SYSTEMS = ("water:300", "water:1000", "water:3000", "water:10000", "water:30000", "water:100000",
                   "copper:300", "copper:1000", "copper:3000", "copper:10000", "copper:30000", "copper:100000")


@dataclass
class ScalingConfig:
    model: str = "tiny"
    targets: str = "eager,onnx"
    systems: Sequence[str] = DEFAULT_SYSTEMS
    threads: int = 2
    device: str = "cpu"
    repeats: int = 3
    budget: float = 60.0  # seconds per structure and target, at most (after the first timed call)
    out: Path | None = None
    peer: str | None = None
    peer_python: str | None = None


@dataclass
class ScalingRecord:
    target: str
    system: str
    atoms: int
    periodic: bool
    slots: int = 0
    pairs_per_atom: float = 0.0
    neighbours_ms: float = 0.0
    median_ms: float = 0.0
    us_per_atom: float = 0.0
    calls: int = 0
    peak_mb: float = 0.0
    estimate_mb: float = 0.0
    skipped: str | None = None


@dataclass
class ScalingResult:
    header: dict[str, Any]
    records: list[ScalingRecord] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"header": self.header, "records": [asdict(r) for r in self.records]}


def measure_structure(runner, settings, structure, cutoff: float, repeats: int, budget: float) -> dict[str, Any]:
    """Neighbour-list time, median call time and peak memory of one structure (or why it was skipped)."""
    from ..runtime.neighbours import neighbour_batch
    from ..runtime.predictor import available_memory
    from .memory import MemoryProbe

    started = time.perf_counter()
    batch = neighbour_batch([structure], cutoff)
    out: dict[str, Any] = {"slots": batch.slots, "pairs_per_atom": float(batch.degree.mean()),
                           "neighbours_ms": 1e3 * (time.perf_counter() - started),
                           "estimate_mb": settings.memory.estimate(batch.atoms, batch.slots) / 1e6}
    limit = available_memory(settings.device)
    if out["estimate_mb"] * 1e6 > limit:
        return {**out, "skipped": f"estimated {out['estimate_mb'] / 1e3:.1f} GB > budget {limit / 1e9:.1f} GB"}
    probe = MemoryProbe(settings.device)
    probe.start()
    runner.infer(batch)  # warm-up (and the peak of a first call)
    times: list[float] = []
    clock = time.perf_counter()
    while len(times) < repeats and (not times or time.perf_counter() - clock < budget):
        t0 = time.perf_counter()
        runner.infer(batch)
        times.append(time.perf_counter() - t0)
    _growth, peak = probe.stop()
    median = float(np.median(times))
    return {**out, "median_ms": 1e3 * median, "us_per_atom": 1e6 * median / batch.atoms, "calls": len(times),
            "peak_mb": peak}


def worker_main(argv: list[str] | None = None) -> int:
    """One target's process: open the artifact, measure every structure file, write JSON records."""
    parser = argparse.ArgumentParser(prog="python -m deploycc.bench.scaling")
    parser.add_argument("--artifact", required=True)
    parser.add_argument("--structures", nargs="+", required=True)
    parser.add_argument("--labels", nargs="+", required=True)
    parser.add_argument("--result", required=True)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--budget", type=float, default=60.0)
    args = parser.parse_args(argv)
    from .worker import set_threads

    set_threads(args.threads)
    import ase.io

    from ..artifact.open import open_artifact
    from ..runtime.neighbours import Structure

    opened = open_artifact(args.artifact, args.device, extra={"threads": args.threads})
    cutoff = float(opened.manifest.model_config["cutoff"])
    rows = []
    for path, label in zip(args.structures, args.labels):
        structure = Structure.from_atoms(ase.io.read(path))
        row = {"target": opened.manifest.target, "system": label, "atoms": len(structure),
               "periodic": structure.periodic,
               **measure_structure(opened.runner, opened.settings, structure, cutoff, args.repeats, args.budget)}
        rows.append(row)
        print(json.dumps(row), flush=True)
    Path(args.result).write_text(json.dumps(rows, indent=2) + "\n")
    return 0


def _run(command: list[str], threads: int, on_event: Event, what: str) -> None:
    from .driver import worker_env

    with tempfile.TemporaryFile("w+") as log:
        process = subprocess.Popen(command, env=worker_env(threads), stdout=subprocess.PIPE, stderr=log, text=True)
        assert process.stdout is not None
        for line in process.stdout:
            if line.startswith("{"):
                row = json.loads(line)
                on_event(f"{what}: {row.get('system', row.get('structure'))} ({row['atoms']} atoms)")
        code = process.wait()
        if code != 0:
            log.seek(0)
            tail = " | ".join(log.read().strip().splitlines()[-3:])
            killed = " (killed by a signal: out of memory?)" if code < 0 else ""
            raise DeployccError(f"{what} exited with {code}{killed}: {tail}")


def run_scaling(config: ScalingConfig, on_event: Event = lambda message: None) -> ScalingResult:
    """Build, write the systems, measure every target (and the peer) on them."""
    from ..build import build
    from ..targets.base import target_names
    from .driver import BenchConfig, make_header
    from .systems import system

    names = target_names(config.targets)
    header = make_header(BenchConfig(model=config.model, device=config.device, threads=config.threads))
    header.update({"systems": list(config.systems), "repeats": config.repeats, "peer": config.peer})
    result = ScalingResult(header)
    with tempfile.TemporaryDirectory(prefix="deploycc-scale-") as tmp:
        files = _write_systems(config.systems, Path(tmp), system, on_event)
        for name in names:
            on_event(f"{name}: build")
            built = build(config.model, name, config.out, config.device,
                          stage=lambda s, n=name: on_event(f"{n}: {s}"))
            result.records += _measure_target(built.folder, files, config, Path(tmp) / f"{name}.json", on_event)
        if config.peer:
            result.records += _measure_peer(files, config, Path(tmp) / "peer.json", on_event)
    return result


def _write_systems(specs: Sequence[str], folder: Path, make, on_event: Event) -> list[tuple[str, Path]]:
    import ase.io

    files = []
    for k, spec in enumerate(specs):
        on_event(f"building {spec}")
        path = folder / f"system-{k}.extxyz"
        ase.io.write(str(path), make(spec))
        files.append((spec, path))
    return files


def _measure_target(folder: Path, files, config: ScalingConfig, result: Path, on_event: Event) -> list[ScalingRecord]:
    """One process per structure; a process that dies (e.g. killed for memory) is recorded as skipped."""
    records = []
    for spec, path in files:
        command = [sys.executable, "-m", "deploycc.bench.scaling", "--artifact", str(folder), "--result",
                   str(result), "--threads", str(config.threads), "--device", config.device, "--repeats",
                   str(config.repeats), "--budget", str(config.budget), "--structures", str(path), "--labels", spec]
        result.unlink(missing_ok=True)
        try:
            _run(command, config.threads, on_event, folder.name)
            records += [ScalingRecord(**row) for row in json.loads(result.read_text())]
        except DeployccError as exc:
            records.append(ScalingRecord(folder.name, spec, 0, False, skipped=f"failed: {exc}"))
    return records


def _measure_peer(files, config: ScalingConfig, result: Path, on_event: Event) -> list[ScalingRecord]:
    if config.peer != "ani1x":
        raise UserInputError(f"unknown peer '{config.peer}': the peer deploycc measures is ani1x")
    python = config.peer_python or sys.executable
    command = [python, str(Path(__file__).with_name("peers.py")), "--result", str(result), "--threads",
               str(config.threads), "--repeats", str(config.repeats), "--budget", str(config.budget),
               "--structures", *[str(p) for _s, p in files]]
    _run(command, config.threads, on_event, "ANI-1x")
    records = []
    for (spec, _path), row in zip(files, json.loads(result.read_text())):
        median = row.get("median_s", 0.0)
        records.append(ScalingRecord("ANI-1x", spec, row["atoms"], row["periodic"], median_ms=1e3 * median,
                                     us_per_atom=1e6 * median / row["atoms"], calls=row.get("calls", 0),
                                     peak_mb=row.get("peak_rss_mb", 0.0), skipped=row.get("skipped")))
    return records


if __name__ == "__main__":
    sys.exit(worker_main())
