"""`deploycc select`: the fastest built artifact that passed parity, from the latest bench of a model.

`select_backend` reads `<root>/<model>/bench/latest-<device>.json` (written by every `deploycc bench`), takes each
target's row at the requested batch size (or the nearest benchmarked one), rejects targets whose artifact is
missing, failed parity, was modified or rebuilt from another checkpoint since the bench, or does not cover the
batch size and atom count, and ranks the rest by throughput (median latency at batch 1).

Nothing here prints: `candidate_rows` and `Selection.row` render the result.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .artifact.layout import MANIFEST, artifact_dir
from .artifact.manifest import read_manifest
from .artifact.open import artifact_file
from .bench.driver import latest_path
from .bench.report import format_ms, format_rate
from .errors import ArtifactError, UserInputError
from .paths import artifacts_root

ATOMS_WINDOW = 3.0  # a bench row describes molecules within this many atoms of its mean (the bench's window)


@dataclass
class Candidate:
    """One target: its bench row at the chosen batch size, its parity errors, and why it was rejected."""

    target: str
    record: dict[str, Any] | None = None
    parity: dict[str, float] = field(default_factory=dict)  # check name -> max abs error
    reasons: list[str] = field(default_factory=list)  # empty: eligible
    fix: str | None = None  # 'build' or 'bench': what would make it eligible

    @property
    def eligible(self) -> bool:
        return not self.reasons

    def reject(self, reason: str, fix: str) -> None:
        self.reasons.append(reason)
        if self.fix != "build":
            self.fix = fix


@dataclass
class Selection:
    """The ranked candidates (eligible first, best first) and how the bench row was chosen."""

    model: str
    device: str
    mode: str
    requested_batch: int
    batch_size: int
    atoms: float
    metric: str  # structures_per_s (higher is better) or median_ms (batch 1, lower is better)
    bench_file: Path
    bench_date: str
    candidates: list[Candidate]
    notes: list[str] = field(default_factory=list)

    @property
    def chosen(self) -> Candidate | None:
        return next((c for c in self.candidates if c.eligible), None)

    def row(self, candidate: Candidate | None = None) -> str:
        """The bench row a candidate (default: the chosen one) was ranked by, with its parity errors."""
        c = candidate or self.chosen
        if c is None or c.record is None:
            return "no bench row"
        r = c.record
        return (f"bench row batch {r['batch_size']} ({r['mode']}, {r['device']}): {r['atoms']:.1f} atoms/structure, "
                f"median {format_ms(r['median_ms'])} ms, p90 {format_ms(r['p90_ms'])} ms, {format_rate(r['structures_per_s'])} "
                f"structures/s, {format_rate(r['atoms_per_s'])} atoms/s; {_parity_text(c.parity)} "
                f"[{self.bench_file}, {self.bench_date}]")

    def to_dict(self) -> dict[str, Any]:
        chosen = self.chosen
        return {"model": self.model, "device": self.device, "mode": self.mode,
                "requested_batch": self.requested_batch, "batch_size": self.batch_size, "atoms": self.atoms,
                "metric": self.metric, "bench_file": str(self.bench_file), "bench_date": self.bench_date,
                "selected": chosen.target if chosen else None, "row": self.row() if chosen else None,
                "notes": self.notes,
                "candidates": [{"target": c.target, "eligible": c.eligible, "reasons": c.reasons,
                                "record": c.record, "parity_max_abs": c.parity} for c in self.candidates]}


class NothingEligibleError(UserInputError):
    """No artifact qualifies; carries the selection so its table can still be shown."""

    def __init__(self, message: str, selection: Selection) -> None:
        super().__init__(message)
        self.selection = selection


def _parity_text(parity: dict[str, float]) -> str:
    if not parity:
        return "parity: not recorded"
    energy, forces = parity.get("energy"), parity.get("forces")
    parts = [f"max |ΔE| {energy:.1e} eV/atom" if energy is not None else "",
             f"max |ΔF| {forces:.1e} eV/Å" if forces is not None else ""]
    return "parity " + ", ".join(p for p in parts if p)


def model_name(model: str) -> str:
    """The artifact folder name of a preset name or checkpoint path (as `deploycc build` names it)."""
    return Path(model).stem if str(model).endswith(".pt") else str(model)


def load_latest_bench(root: Path, model: str, device: str, batch_size: int, atoms: int | None) -> tuple[Path, dict]:
    """The latest bench JSON of `model` on `device`; a user error saying what to run when there is none."""
    path = latest_path(root, model, device)
    command = f"deploycc bench --model {model} --device {device} --batch-sizes {batch_size}"
    command += f" --atoms {atoms}" if atoms else ""
    if not path.is_file():
        raise UserInputError(f"no bench of {model} on {device} ({path} is missing): run `{command}`")
    try:
        payload = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserInputError(f"{path} is not valid JSON ({exc}): run `{command}`") from None
    if not isinstance(payload, dict) or not {"header", "records"} <= set(payload):
        raise UserInputError(f"{path} is not a deploycc bench result: run `{command}`")
    return path, payload


def nearest_batch(sizes: list[int], requested: int) -> int:
    """`requested` if benchmarked, else the smallest benchmarked size above it, else the largest below."""
    if requested in sizes:
        return requested
    above = [b for b in sizes if b > requested]
    return min(above) if above else max(sizes)


def check_artifact(c: Candidate, folder: Path, header: dict[str, Any], batch_size: int, atoms: float) -> None:
    """Reject `c` when its artifact is missing, failed parity, was modified or rebuilt, or does not fit."""
    try:
        manifest = read_manifest(folder)
    except ArtifactError:
        c.reject("not built" if not (folder / MANIFEST).is_file() else "unreadable manifest", "build")
        return
    parity = manifest.parity
    c.parity = {check["name"]: check["max_abs"] for check in parity.get("checks", [])}
    if not manifest.parity_passed:
        failed = [check["name"] for check in parity.get("checks", []) if not check.get("passed")]
        c.reject(f"parity failed ({', '.join(failed) or 'not recorded'})", "build")
    try:
        artifact_file(folder, manifest)
    except ArtifactError:
        c.reject(f"stale hash: {manifest.artifact.file} modified since it was built", "build")
    benched = (header.get("checkpoint_sha256") or {}).get(c.target)
    if benched and benched != manifest.checkpoint.sha256:
        c.reject("rebuilt from another checkpoint since the bench", "bench")
    built_for = manifest.device.split(":")[0]
    if built_for != str(header.get("device", "cpu")).split(":")[0]:
        c.reject(f"now built for {built_for}, benchmarked on {header.get('device')}", "bench")
    _check_profiles(c, manifest.settings, batch_size, atoms)


def _check_profiles(c: Candidate, settings: dict[str, Any], batch_size: int, atoms: float) -> None:
    """The request (batch_size structures of `atoms` atoms in one call) must fit the atoms profile."""
    width = settings.get("atoms", {})
    if width and batch_size * atoms > width.get("max", batch_size * atoms):
        c.reject(f"{batch_size} x {atoms:g} atoms per call above its atoms profile max {width['max']}", "build")


def check_record(c: Candidate, records: list[dict[str, Any]], batch_size: int, atoms: float) -> None:
    """Attach `c`'s bench row at `batch_size`; reject when there is none or its molecules are another size."""
    rows = [r for r in records if r["target"] == c.target and r["batch_size"] == batch_size]
    if not rows:
        benched = any(r["target"] == c.target for r in records)
        c.reject(f"not benchmarked at batch {batch_size}" if benched else "not in the latest bench", "bench")
        return
    c.record = rows[0]
    if abs(float(c.record["atoms"]) - atoms) > ATOMS_WINDOW:
        c.reject(f"benchmarked at {c.record['atoms']:.1f} atoms/structure, not {atoms:g} ± {ATOMS_WINDOW:g}",
                 "bench")


def _targets(root: Path, model: str, header: dict[str, Any], records: list[dict[str, Any]]) -> list[str]:
    """Targets in the bench (measured or built for it) and targets built under <root>/<model> since."""
    names = [r["target"] for r in records] + list(header.get("artifacts") or {})
    folder = Path(root) / model
    if folder.is_dir():
        names += sorted(p.name for p in folder.iterdir() if not p.name.startswith(".") and (p / MANIFEST).is_file())
    return list(dict.fromkeys(names))


def _bench_notes(header: dict[str, Any], atoms: float, requested_atoms: int | None) -> list[str]:
    notes = []
    work = header.get("workload") or {}
    if requested_atoms is None:
        notes.append(f"atoms: {atoms:g} per structure, the bench's workload (--atoms to ask for another size)")
    mean = work.get("mean_atoms")
    if mean is not None and abs(float(mean) - float(work.get("target_atoms", mean))) > ATOMS_WINDOW:
        notes.append(f"warning: the bench asked for {work.get('target_atoms')} atoms but its molecules average "
                     f"{mean} (too few structures of that size in {work.get('source') or 'the workload'})")
    if "checkpoint_sha256" not in header:
        notes.append("warning: this bench does not record checkpoint hashes; rebuilt artifacts are not detected")
    if header.get("busy_warning"):
        notes.append(f"warning: {header['busy_warning']}")
    return notes


def _bench_atoms(header: dict[str, Any], records: list[dict[str, Any]]) -> float:
    """The atom count the bench asked for (its workload), else its first row's."""
    asked = (header.get("workload") or {}).get("target_atoms")
    return float(asked) if asked else float(records[0]["atoms"])


def _rank(candidates: list[Candidate], metric: str) -> list[Candidate]:
    eligible = [c for c in candidates if c.eligible]
    sign = 1.0 if metric == "median_ms" else -1.0
    eligible.sort(key=lambda c: sign * float(c.record[metric]))
    return eligible + [c for c in candidates if not c.eligible]


def _what_to_run(selection: Selection, requested_atoms: int | None) -> str:
    rejected = [c for c in selection.candidates if not c.eligible]
    to_build = [c.target for c in rejected if c.fix == "build"]
    targets = ",".join(c.target for c in rejected) or "all"
    bench = (f"deploycc bench --model {selection.model} --target {targets} --device {selection.device} "
             f"--batch-sizes {selection.requested_batch}" + (f" --atoms {requested_atoms}" if requested_atoms else ""))
    if to_build:
        return f"`deploycc build --model {selection.model} --target {','.join(to_build)} --force`, then `{bench}`"
    return f"`{bench}`"


def select_backend(model: str, batch_size: int, atoms: int | None = None, device: str = "cpu",
                   root: Path | None = None, mode: str = "host") -> Selection:
    """Rank the built artifacts of `model` by the latest bench on `device` at `batch_size` (and `atoms`);
    raise NothingEligibleError (a user error saying what to run) when none qualifies."""
    if batch_size < 1 or (atoms is not None and atoms < 1):
        raise UserInputError(f"--batch-size and --atoms must be positive, got {batch_size} and {atoms}")
    name, root = model_name(model), Path(root or artifacts_root())
    path, payload = load_latest_bench(root, name, device, batch_size, atoms)
    header = payload["header"]
    records = [r for r in payload["records"] if r.get("mode", "host") == mode]
    sizes = sorted({int(r["batch_size"]) for r in records})
    if not sizes:
        raise UserInputError(f"{path} has no {mode}-mode measurements: run `deploycc bench --model {name} "
                             f"--device {device} --batch-sizes {batch_size}`")
    chosen_batch = nearest_batch(sizes, batch_size)
    want_atoms = float(atoms) if atoms is not None else _bench_atoms(header, records)
    candidates = []
    for target in _targets(root, name, header, records):
        candidate = Candidate(target)
        check_artifact(candidate, artifact_dir(root, name, target), header, batch_size, want_atoms)
        check_record(candidate, records, chosen_batch, want_atoms)
        candidates.append(candidate)
    metric = "median_ms" if chosen_batch == 1 else "structures_per_s"
    notes = _bench_notes(header, want_atoms, atoms)
    if chosen_batch != batch_size:
        notes.insert(0, f"batch {batch_size} was not benchmarked; using the nearest benchmarked batch "
                        f"{chosen_batch} (benchmarked: {', '.join(map(str, sizes))})")
    selection = Selection(name, device, mode, batch_size, chosen_batch, want_atoms, metric, path,
                          str(header.get("date", "")), _rank(candidates, metric), notes)
    if selection.chosen is None:
        raise NothingEligibleError(f"no eligible artifact of {name} at batch {batch_size} on {device}: run "
                                   f"{_what_to_run(selection, atoms)}", selection)
    return selection


def candidate_rows(selection: Selection) -> tuple[list[str], list[list[str]]]:
    """Column names and one formatted row per candidate (rank, bench numbers, parity, verdict)."""
    columns = ["rank", "target", "batch", "atoms/structure", "median ms", "p90 ms", "structures/s", "atoms/s",
               "parity max |ΔF| eV/Å", "verdict"]
    rows, rank = [], 0
    for c in selection.candidates:
        r = c.record or {}
        rank += c.eligible
        numbers = ([str(r["batch_size"]), f"{r['atoms']:.1f}", format_ms(r["median_ms"]), format_ms(r["p90_ms"]),
                    format_rate(r["structures_per_s"]), format_rate(r["atoms_per_s"])] if r else ["-"] * 6)
        forces = f"{c.parity['forces']:.1e}" if "forces" in c.parity else "-"
        verdict = "eligible" if c.eligible else "rejected: " + "; ".join(c.reasons)
        rows.append([str(rank) if c.eligible else "-", c.target, *numbers, forces, verdict])
    return columns, rows
