"""The first ten minutes: `--version`, help texts (every preset named, no '<bool>' tags), output that fits 80
columns, no blank first line, the shipped sample, and progress lines when stdout is not a terminal."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import ase.io
import pytest
import typer
from rich.console import Console
from typer.testing import CliRunner

import deploycc.cli.render as render
from deploycc.bench import BenchRecord, BenchResult
from deploycc.bench.stats import summarize_targets
from deploycc.cli import app
from deploycc.model import PRESET_CONFIGS
from deploycc.paths import presets_dir

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "docs" / "examples" / "molecules.extxyz"


def run_cli(*args, cwd=None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "deploycc", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env=full_env, timeout=300)


def command_paths(command: typer.core.TyperGroup, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command and subcommand of the CLI, as argument paths (the root first)."""
    out = [prefix]
    for name, sub in getattr(command, "commands", {}).items():
        out += command_paths(sub, prefix + (name,))
    return out


def all_commands() -> list[tuple[tuple[str, ...], object]]:
    root = typer.main.get_command(app)
    found = []
    for path in command_paths(root):
        command = root
        for name in path:
            command = command.commands[name]
        found.append((path, command))
    return found


def test_version_is_one_short_line_with_the_library_versions(tmp_path):
    result = run_cli("--version", cwd=tmp_path)
    assert result.returncode == 0 and not result.stderr.strip()
    lines = result.stdout.splitlines()
    assert len(lines) == 1 and len(lines[0]) <= 100, lines
    assert lines[0].startswith(f"deploycc {metadata.version('deploycc')} ")
    assert f"torch {metadata.version('torch')}" in lines[0]
    assert f"onnxruntime {metadata.version('onnxruntime')}" in lines[0]


def test_every_model_option_names_every_preset():
    names = set(PRESET_CONFIGS) | {p.stem for p in presets_dir().glob("*.pt")}
    checked = []
    for path, command in all_commands():
        for param in command.params:
            if param.name == "model" or (param.name == "artifact" and path in (("predict",), ("md",))):
                checked.append(" ".join(path))
                missing = [n for n in names if n not in (param.help or "")]
                assert not missing, (path, param.name, missing, param.help)
    assert {"build", "bench", "select", "scale", "train", "predict", "md"} <= set(checked)


def test_no_help_shows_a_bool_tag():
    runner = CliRunner()
    paths = [path for path, _ in all_commands()]
    assert ("build",) in paths and ("data", "generate") in paths
    for path in paths:
        result = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "120"})
        assert result.exit_code == 0, (path, result.output)
        assert "--help" in result.output and "<bool>" not in result.output, (path, result.output)
    build = runner.invoke(app, ["build", "--help"], env={"COLUMNS": "120"}).output
    assert "<str>" in build  # types of options that take a value are still shown


@pytest.mark.parametrize("verb", ["targets", "models"])
def test_listings_fit_80_columns(verb, tmp_path):
    result = run_cli(verb, cwd=tmp_path, env={"COLUMNS": "80"})
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines and lines[0].strip(), "no blank first line"
    assert max(len(line) for line in lines) <= 80, max(lines, key=len)
    table = [line for line in lines if line.startswith(("┏", "┃", "│", "└"))]
    assert table and max(len(line) for line in table) <= 80


def rec(target: str, b: int, per_s: float) -> BenchRecord:
    """A made-up record of `b` structures of 25 atoms at `per_s` structures/s (rendering input)."""
    return BenchRecord(target, b, 25.0, b / per_s * 1e3, 1.5, 2.5, 1.2, 0.05, per_s, per_s * 25, 12.5, "host", "cpu",
                       None, slots=12, neighbours_ms=0.5)


def bench_output(monkeypatch, width: int) -> str:
    buffer = io.StringIO()
    monkeypatch.setattr(render, "console", Console(file=buffer, width=width, highlight=False))
    records = [rec(t, b, 100.0 * b ** 0.5) for t in ("eager", "torchscript", "onnx-fp16") for b in (1, 16, 256)]
    header = {"model": "tiny", "device": "cpu", "workload": None, "library_versions": {}}
    render.print_bench(BenchResult(header, records, summarize_targets(records)))
    return buffer.getvalue()


def test_the_bench_table_leaves_out_columns_to_fit_80_and_says_so(monkeypatch):
    narrow = bench_output(monkeypatch, 80)
    table = [line for line in narrow.splitlines() if line.startswith(("┏", "┃", "│", "└"))]
    assert len(table) >= 9 + 3 and max(len(line) for line in table) <= 80
    assert "left out at this width: neighbours ms" in narrow and "--markdown and --json" in narrow
    assert "median" in narrow and "structures/s" in narrow and "onnx-fp16" in narrow
    wide = bench_output(monkeypatch, 200)
    assert "left out" not in wide and "neighbours ms" in wide and "p99 ms" in wide


def test_predict_on_the_shipped_sample_has_no_blank_first_line(tmp_path):
    molecules = ase.io.read(SAMPLE, index=":")
    assert 6 <= len(molecules) <= 12 and SAMPLE.stat().st_size < 50_000
    assert {s for m in molecules for s in m.get_chemical_symbols()} <= {"H", "C", "N", "O"}
    out = tmp_path / "work" / "labelled.extxyz"
    result = run_cli("predict", "tiny", "--structures", SAMPLE, "--out", out, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0].startswith(f"{len(molecules)} structures"), result.stdout
    assert not result.stderr.strip()
    labelled = ase.io.read(out, index=":")
    assert len(labelled) == len(molecules)
    assert labelled[-1].get_forces().shape == (len(molecules[-1]), 3) and labelled[-1].get_potential_energy() != 0


@pytest.mark.slow
def test_bench_prints_progress_lines_into_a_pipe_and_alternates_rounds(tiny_checkpoint, calib_file, tmp_path):
    result = run_cli("bench", "--model", tiny_checkpoint, "--target", "eager", "--batch-sizes", "1,2", "--atoms", "20",
                     "--structures", calib_file, "--out", tmp_path, "--threads", "1", "--min-iters", "2",
                     "--min-seconds", "0", "--warmup", "1", "--rounds", "2", "--json", tmp_path / "b.json",
                     cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("bench eager: "), lines[:3]
    assert "bench eager: starting worker (round 1 of 2)" in lines
    assert "bench eager: starting worker (round 2 of 2)" in lines
    assert lines.count("bench eager: batch 1 (host)") == 2 and lines.count("bench eager: batch 2 (host)") == 2
    saved = json.loads((tmp_path / "b.json").read_text())
    assert saved["header"]["rounds"] == 2 and len(saved["records"]) == 2
