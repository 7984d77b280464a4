"""Verbs about artifacts: `targets`, `build`, `verify`."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Optional

import typer

from ..errors import MissingDependencyError, ParityError, UnseenElementWarning, UnsupportedModelError
from .app import MODEL_HELP, app
from .console import console, errors
from .signals import Interrupted
from .render import activity, escape, print_build_summary, print_parity, print_targets, print_verify, report_unseen


@app.command("targets")
def targets_cmd(device: Optional[str] = typer.Option(None, help="check availability for this device")) -> None:
    """List the registered targets and whether each can build here (with the reason when not)."""
    print_targets(device)


@app.command("build")
def build_cmd(
    model: str = typer.Option("tiny", help=MODEL_HELP),
    target: str = typer.Option("all", help="target name, comma-separated names, or 'all'"),
    out: Optional[Path] = typer.Option(None, help="artifact root (default ./artifacts)"),
    device: Optional[str] = typer.Option(None, help="cpu or cuda (default: the target's device)"),
    calib: Optional[Path] = typer.Option(None, help="structures for the parity check (default: the shipped set)"),
    force: bool = typer.Option(False, help="rebuild even when the cache is valid"),
) -> None:
    """Export MODEL for each target, reload it, check parity against eager, write artifact + manifest."""
    from ..build import build
    from ..targets.base import target_names

    results, failed = [], []
    for name in target_names(target):
        try:
            with activity("build") as update:
                update(f"{name}: starting")
                result = build(model, name, out, device, force, calib, stage=lambda s, n=name: update(f"{n}: {s}"))
        except KeyboardInterrupt:
            raise Interrupted(f"interrupted while building {name}; the previous artifact (if any) is unchanged "
                              "and its staging folder was removed") from None
        except (MissingDependencyError, UnsupportedModelError) as exc:
            if target != "all":
                raise
            console.print(f"[yellow]skipped[/yellow] {name}: {escape(str(exc))}")
            continue
        except ParityError as exc:
            print_parity(exc.report.to_dict(), f"{name} parity")
            failed.append(name)
            errors.print(f"error: {exc}; the previous artifact (if any) is unchanged", soft_wrap=True)
            continue
        results.append(result)
        print_parity(result.parity, f"{name} parity ({result.status})")
    print_build_summary(results, failed)
    if failed:
        raise typer.Exit(1)


@app.command("verify")
def verify_cmd(
    artifact: Path = typer.Argument(..., help="artifact folder (or file inside it)"),
    data: Optional[Path] = typer.Option(None, help="HDF5 / extxyz / ASE-readable file (default: the shipped set)"),
    json_out: Optional[Path] = typer.Option(None, "--json", help="write the JSON report here"),
    device: Optional[str] = typer.Option(None, help="run the artifact on this device"),
    unseen_elements: str = typer.Option("warn", help="elements absent from the training data: warn, refuse, allow"),
) -> None:
    """Parity of a built artifact against eager (from its manifest's checkpoint); exit 1 on failure."""
    from ..artifact.layout import write_json
    from ..errors import UserInputError
    from ..verify import verify

    if json_out is not None and json_out.is_dir():
        raise UserInputError(f"--json {json_out} is a folder; give a file name")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UnseenElementWarning)
        report = verify(artifact, data, device, unseen_elements)
    report_unseen(caught)
    print_verify(report)
    if json_out is not None:
        write_json(json_out, report)
    if not report["parity"]["passed"]:
        errors.print(f"error: {artifact} failed parity", soft_wrap=True)
        raise typer.Exit(1)
    console.print("[green]verified[/green]")
