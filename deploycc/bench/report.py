"""Rendering bench results for people: table rows, number formats, header lines, Markdown."""

from __future__ import annotations

from typing import Any

from .driver import BenchResult
from .memory import MEMORY_NOTE


def format_rate(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:.1f}" if value >= 10 else f"{value:.2f}"


def format_ms(value: float) -> str:
    return f"{value:.3f}" if value < 10 else f"{value:.2f}" if value < 100 else f"{value:.1f}"


def table_rows(result: BenchResult) -> tuple[list[str], list[list[str]]]:
    """Column names and formatted rows (one per record); a mode column only when there are several modes."""
    with_mode = len({r.mode for r in result.records}) > 1
    columns = ["target"] + (["mode"] if with_mode else []) + [
        "batch", "atoms/structure", "median ms", "p90 ms", "p99 ms", "CV %", "structures/s", "atoms/s", "peak MB",
        "neighbours ms"]
    rows = []
    for r in result.records:
        rows.append([r.target] + ([r.mode] if with_mode else []) + [
            str(r.batch_size), f"{r.atoms:.1f}", format_ms(r.median_ms), format_ms(r.p90_ms), format_ms(r.p99_ms),
            f"{100 * r.cv:.1f}", format_rate(r.structures_per_s), format_rate(r.atoms_per_s), f"{r.peak_mem_mb:.1f}",
            format_ms(r.neighbours_ms)])
    return columns, rows


def header_lines(header: dict[str, Any]) -> list[str]:
    """Short human lines describing the machine and the run."""
    versions = header.get("library_versions", {})
    libs = ", ".join(f"{k} {v}" for k, v in versions.items() if k in ("torch", "onnxruntime", "onnxruntime-gpu",
                                                                        "tensorrt", "numpy", "python", "deploycc"))
    lines = [f"model: {header.get('model')}, device: {header.get('device')}",
             f"CPU: {header.get('cpu')} ({header.get('logical_cores')} logical cores, "
             f"{header.get('cores_available')} available), {header.get('threads')} threads per target"]
    if header.get("gpu"):
        lines.append(f"GPU: {header['gpu']}")
    if header.get("load_average"):
        lines.append(f"load average at start: {', '.join(str(x) for x in header['load_average'])}")
    work = header.get("workload") or {}
    if work:
        kind = f"structures ({work['periodic']} periodic)" if work.get("periodic") else "molecules"
        lines.append(f"workload: {work.get('structures')} {kind} of {work.get('min_atoms')}-{work.get('max_atoms')} "
                     f"atoms (mean {work.get('mean_atoms')}) from {work.get('source')}; {header.get('input_pool')} "
                     f"rattled copies per batch (σ {header.get('rattle_sigma_angstrom')} Å), neighbour lists built "
                     "before timing (their time is the last column)")
    rounds = header.get("rounds") or 1
    repeat = f", {rounds} rounds (targets alternate; the median round kept)" if rounds > 1 else ""
    lines.append(f"timing: {header.get('warmup')} warm-up calls, then >= {header.get('min_iters')} calls and "
                 f">= {header.get('min_seconds')} s per batch size{repeat}; modes: {', '.join(header.get('modes', []))}")
    if header.get("others_cpu_share") is not None:
        lines.append(f"other processes kept {100 * header['others_cpu_share']:.0f}% of the cores busy while measuring")
    lines.append(f"libraries: {libs}")
    return lines


def to_markdown(result: BenchResult) -> str:
    """The table with the header lines, per-target summary lines, warnings and notices."""
    columns, rows = table_rows(result)
    out = [f"# deploycc bench: {result.header.get('model')}", ""]
    out += [f"- {line}" for line in header_lines(result.header)]
    out += ["", "| " + " | ".join(columns) + " |",
            "|" + "|".join("---" if k < (2 if "mode" in columns else 1) else "---:" for k in range(len(columns))) + "|"]
    out += ["| " + " | ".join(row) + " |" for row in rows]
    if result.summaries:
        out += ["", "## Summary", ""] + [f"- {s.line()}" for s in result.summaries]
    if result.warnings:
        out += ["", "## Warnings", ""] + [f"- {w}" for w in result.warnings]
    if result.notices:
        out += ["", "## Notices", ""] + [f"- {n}" for n in result.notices]
    out += ["", f"_{MEMORY_NOTE}._", ""]
    return "\n".join(out)


def scaling_markdown(result) -> str:
    """The scaling sweep as a Markdown table: one row per system, µs/atom (median ms) per target."""
    targets = list(dict.fromkeys(r.target for r in result.records))
    systems = list(dict.fromkeys(r.system for r in result.records))
    cell = {(r.target, r.system): r for r in result.records}
    out = [f"# deploycc scale: {result.header.get('model')}", ""]
    out += [f"- {line}" for line in header_lines(result.header)[1:2] + header_lines(result.header)[-1:]]
    out += ["- per structure: neighbour list once, one warm-up call, then the median of up to "
            f"{result.header.get('repeats')} timed calls of energies + forces + virials; peak RSS of the process", ""]
    out.append("| system | atoms | pairs/atom | " + " | ".join(f"{t} µs/atom (ms)" for t in targets)
               + " | " + " | ".join(f"{t} peak MB" for t in targets) + " |")
    out.append("|---|---:|---:|" + "---:|" * (2 * len(targets)))
    for name in systems:
        rows = [cell.get((t, name)) for t in targets]
        atoms = max(r.atoms for r in rows if r is not None)
        pairs = next((r.pairs_per_atom for r in rows if r is not None and r.pairs_per_atom), 0.0)
        speed = [("skipped" if r.skipped else f"{r.us_per_atom:.1f} ({format_ms(r.median_ms)})") if r else "-"
                 for r in rows]
        memory = [f"{r.peak_mb:,.0f}" if r and not r.skipped else "-" for r in rows]
        out.append(f"| {name} | {atoms:,} | {pairs:.1f} | " + " | ".join(speed) + " | " + " | ".join(memory) + " |")
    skipped = [f"{r.target} {r.system}: {r.skipped}" for r in result.records if r.skipped]
    if skipped:
        out += ["", "## Skipped", ""] + [f"- {s}" for s in skipped]
    return "\n".join(out) + "\n"
