"""Verbs that measure: `bench` (latency and throughput per target and batch size) and `select`."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..errors import UserInputError
from .app import MODEL_HELP, app
from .console import console
from .render import activity, print_bench, print_selection


def _sizes(text: str, option: str) -> list[int]:
    try:
        return [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise UserInputError(f"{option} must be comma-separated integers, got '{text}'") from None


@app.command("bench")
def bench_cmd(
    model: str = typer.Option("tiny", help=MODEL_HELP),
    target: str = typer.Option("all", help="target name, comma-separated names, or 'all' (skips unavailable)"),
    batch_sizes: str = typer.Option("1,2,4,8,16,32,64,128,256", help="comma-separated batch sizes"),
    atoms: int = typer.Option(25, help="structures of about this many atoms (workload structures within ±3)"),
    structures: Optional[Path] = typer.Option(None, help="workload file (default: the shipped calibration set)"),
    device: str = typer.Option("cpu", help="cpu or cuda"),
    threads: int = typer.Option(2, help="CPU threads per target (torch, ONNX Runtime, OMP/MKL)"),
    out: Optional[Path] = typer.Option(None, help="artifact root (default ./artifacts)"),
    json_out: Optional[Path] = typer.Option(None, "--json", help="write the records as JSON here"),
    markdown: Optional[Path] = typer.Option(None, help="write the table as Markdown here"),
    plot: Optional[Path] = typer.Option(None, help="write latency/throughput plots (PNG) here"),
    min_iters: int = typer.Option(50, help="timed calls per batch size, at least"),
    min_seconds: float = typer.Option(1.0, help="timed seconds per batch size, at least"),
    warmup: int = typer.Option(10, help="untimed calls before timing each batch size"),
    rounds: int = typer.Option(1, help="sweep every target this many times, alternating their order, and keep "
                                       "the median round (fairer comparisons on a shared machine)"),
) -> None:
    """Latency, throughput and peak memory per target and batch size, each target in its own process."""
    from ..bench.driver import BenchConfig, latest_path, run_bench
    from ..bench.plot import plot_result
    from ..bench.report import to_markdown

    config = BenchConfig(model=model, targets=target, batch_sizes=_sizes(batch_sizes, "--batch-sizes"), atoms=atoms,
                         device=device, structures=structures, threads=threads, out=out, min_iters=min_iters,
                         min_seconds=min_seconds, warmup=warmup, rounds=rounds)
    with activity("bench") as update:
        result = run_bench(config, on_event=update)
    print_bench(result)
    if json_out is not None:
        result.write_json(json_out)
        console.print(f"wrote {json_out}")
    if markdown is not None:
        markdown.write_text(to_markdown(result))
        console.print(f"wrote {markdown}")
    if plot is not None:
        plot_result(result, plot)
        console.print(f"wrote {plot}")
    console.print(f"saved {latest_path(out, str(result.header['model']), device)} (read by `deploycc select`)",
                  markup=False, soft_wrap=True)


@app.command("select")
def select_cmd(
    model: str = typer.Option("tiny", help=MODEL_HELP),
    batch_size: int = typer.Option(..., help="structures per call"),
    atoms: Optional[int] = typer.Option(None, help="atoms per structure (default: the bench's workload)"),
    device: str = typer.Option("cpu", help="cpu or cuda: whose latest bench to read"),
    mode: str = typer.Option("host", help="host (CPU tensors in and out) or device (cuda only)"),
    out: Optional[Path] = typer.Option(None, help="artifact root (default ./artifacts)"),
    json_out: Optional[Path] = typer.Option(None, "--json", help="write the selection as JSON here"),
) -> None:
    """The fastest built artifact that passed parity at this batch size, from the latest bench."""
    from ..artifact.layout import write_json
    from ..select import NothingEligibleError, select_backend

    try:
        selection = select_backend(model, batch_size, atoms, device, out, mode)
    except NothingEligibleError as exc:
        print_selection(exc.selection)
        raise
    print_selection(selection)
    console.print(f"selected: {selection.chosen.target} — {selection.row()}", markup=False, soft_wrap=True)
    if json_out is not None:
        write_json(json_out, selection.to_dict())
        console.print(f"wrote {json_out}")


@app.command("scale")
def scale_cmd(
    model: str = typer.Option("tiny", help=MODEL_HELP),
    target: str = typer.Option("eager,onnx", help="comma-separated targets (CPU)"),
    systems: Optional[str] = typer.Option(None, help="comma-separated system specs: water:N, water-cluster:N, "
                                          "copper:N, file:PATH, solvated:PATH:BOX (default: water and copper, "
                                          "300 to 100,000 atoms)"),
    threads: int = typer.Option(2, help="CPU threads per target"),
    device: str = typer.Option("cpu", help="cpu or cuda"),
    repeats: int = typer.Option(3, help="timed calls per structure, at most"),
    budget: float = typer.Option(60.0, help="seconds per structure and target, at most"),
    peer: Optional[str] = typer.Option(None, help="also measure a peer on the same structures: ani1x"),
    peer_python: Optional[str] = typer.Option(None, help="interpreter with torchani for the peer"),
    out: Optional[Path] = typer.Option(None, help="artifact root (default ./artifacts)"),
    json_out: Optional[Path] = typer.Option(None, "--json", help="write the records as JSON here"),
    markdown: Optional[Path] = typer.Option(None, help="write the table as Markdown here"),
    plot: Optional[Path] = typer.Option(None, help="write the log-log plot of µs/atom against atoms here"),
) -> None:
    """Cost per atom against system size (energy + forces + virials), per target, a peer in the same run."""
    from ..artifact.layout import write_json
    from ..bench.plot import plot_scaling
    from ..bench.report import scaling_markdown
    from ..bench.scaling import DEFAULT_SYSTEMS, ScalingConfig, run_scaling

    specs = [s.strip() for s in systems.split(",") if s.strip()] if systems else list(DEFAULT_SYSTEMS)
    if repeats < 1 or threads < 1 or not budget > 0:
        raise UserInputError("--repeats and --threads must be at least 1 and --budget positive")
    config = ScalingConfig(model=model, targets=target, systems=specs, threads=threads, device=device, repeats=repeats,
                           budget=budget, out=out, peer=peer, peer_python=peer_python)
    with activity("scale") as update:
        result = run_scaling(config, on_event=update)
    text = scaling_markdown(result)
    console.print(text, markup=False, soft_wrap=True)
    if json_out is not None:
        write_json(json_out, result.to_dict())
    if markdown is not None:
        markdown.write_text(text)
    if plot is not None:
        plot_scaling(result, plot)
