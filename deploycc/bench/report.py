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
    lines.append(f"timing: {header.get('warmup')} warm-up calls, then >= {header.get('min_iters')} calls and "
                 f">= {header.get('min_seconds')} s per batch size; modes: {', '.join(header.get('modes', []))}")
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
