"""The command line: verbs and listings, the build -> verify gate, and user errors as one line on stderr with
their exit code, never a traceback (real processes; every bad input by row is tests/test_bad_inputs.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from helpers import drifting_target


def run_cli(*args, cwd=None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "deploycc", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env=full_env, timeout=300)


def assert_one_line_error(result: subprocess.CompletedProcess, code: int, *fragments: str) -> str:
    assert result.returncode == code, (result.returncode, result.stdout[-2000:], result.stderr[-2000:])
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert "Traceback" not in result.stderr + result.stdout
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


@pytest.mark.parametrize(
    "args, code, fragments",
    [
        (["build", "--model", "huge", "--target", "onnx"], 65, ["'huge'", "tiny"]),
        (["build", "--model", "tiny", "--target", "tensorflow"], 65, ["'tensorflow'", "torchscript"]),
        (["data", "generate", "--out", "x.h5", "--teacher", "dft"], 65, ["dft", "xtb"]),
        (["train", "--data", "missing.h5", "--out", "x.pt"], 65, ["missing.h5"]),
        (["verify", "no-such-folder"], 65, ["no-such-folder", "does not exist"]),
        (["predict", "tiny", "--structures", "in.extxyz", "--out", "out.csv"], 65, ["out.csv", "extended XYZ"]),
        (["predict", "tiny", "--structures", "in.extxyz", "--out", "o.extxyz", "--cluster", "many"], 65,
         ["--cluster", "local:N"]),
        (["predict", "tiny", "--structures", "in.extxyz", "--out", "o.extxyz", "--chunk-size", "0"], 65,
         ["--chunk-size"]),
        (["data", "generate", "--out", "x.h5", "--cluster", "local:0"], 65, ["local workers"]),
        (["data", "generate", "--out", "x.h5", "--normal-modes", "-2"], 65, ["--normal-modes", "at least 0"]),
        (["distil", "--out", "x.pt", "--nms-fraction", "0.01"], 65, ["--nms-fraction", "normal-mode"]),
        (["distil", "--out", "x.pt", "--box-every", "-1"], 65, ["--box-every", "at least 0"]),
        (["distil", "--out", "x.pt", "--energy-weight", "-1"], 65, ["--energy-weight", "non-negative"]),
        (["distil", "--out", "x.pt", "--teacher", "emt", "--train-only", "extra.txt"], 65,
         ["extra.txt", "does not exist"]),
        (["distil", "--out", "x.pt", "--box-every", "4", "--teacher", "emt"], 65, ["--box-every", "add --clusters"]),
        (["distil", "--out", "x.pt", "--box-every", "4", "--teacher", "ani1x", "--clusters"], 65,
         ["ani1x", "molecules only"]),
        (["data", "boxes", "--out", "x.h5", "--teacher", "ani1x"], 65, ["ani1x", "periodic"]),
        (["data", "boxes", "--out", "x.h5", "--waters", "0"], 65, ["--waters", "at least 1"]),
        (["data", "boxes", "--out", "x.h5", "--seed", "-1"], 65, ["--seed", "at least 0"]),
        (["data", "metals", "--out", "x.h5", "--max-atoms", "16"], 65, ["--max-atoms", "at least 32"]),
        (["data", "metals", "--out", "x.h5", "--workers", "0"], 65, ["--workers", "at least 1"]),
        (["data", "metals", "--out", "x.h5", "--md-interval", "0"], 65, ["--md-interval", "at least 1"]),
        (["data", "metals", "--out", ".", "--alloys", "1"], 65, ["--out", "folder"]),
    ],
)
def test_user_errors_are_one_line(args, code, fragments, tmp_path):
    assert_one_line_error(run_cli(*args, cwd=tmp_path), code, *fragments)


def test_corrupt_checkpoint_is_one_line(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"\x00not a checkpoint" * 10)
    assert_one_line_error(run_cli("build", "--model", bad, "--target", "eager", cwd=tmp_path), 65, "bad.pt")


def test_artifact_without_manifest_is_one_line(tmp_path):
    (tmp_path / "art").mkdir()
    assert_one_line_error(run_cli("verify", tmp_path / "art"), 65, "manifest.json")


def test_missing_tensorrt_or_gpu_exits_2(tmp_path):
    import importlib.util

    if importlib.util.find_spec("tensorrt") is not None and torch.cuda.is_available():
        pytest.skip("TensorRT and a GPU are present here")
    assert_one_line_error(run_cli("build", "--model", "tiny", "--target", "trt", cwd=tmp_path), 2, "trt")


def test_help_models_and_targets_list(tmp_path):
    helped = run_cli("--help", cwd=tmp_path)
    assert helped.returncode == 0
    for verb in ("models", "train", "targets", "build", "verify", "predict", "md", "bench", "select", "data"):
        assert f" {verb} " in helped.stdout, verb
    models = run_cli("models", cwd=tmp_path)
    assert models.returncode == 0
    rows = {line.split()[1]: line for line in models.stdout.splitlines() if line.startswith("│")}
    for name in ("original", "tiny", "ultra-tiny", "metals-tiny"):
        assert name in rows, name
    assert " metals " in rows["metals-tiny"] and " molecules " in rows["tiny"] and "✓" in rows["tiny"]
    targets = run_cli("targets", cwd=tmp_path)
    assert targets.returncode == 0 and not targets.stderr.strip()
    for name in ("eager", "torchscript", "onnx", "trt", "cuda-graph"):
        assert name in targets.stdout
    if not torch.cuda.is_available():
        assert "✗ cuda-graph: needs a CUDA GPU" in targets.stdout or "✗ cuda-graph: no CUDA GPU" in targets.stdout


@pytest.mark.slow
def test_build_then_verify_gate(tiny_checkpoint, calib_file, tmp_path):
    built = run_cli("build", "--model", tiny_checkpoint, "--target", "eager,onnx", "--out", tmp_path,
                    "--calib", calib_file)
    assert built.returncode == 0, built.stderr
    assert "Traceback" not in built.stdout + built.stderr and not built.stderr.strip()
    assert "eager parity (built)" in built.stdout and "onnx parity (built)" in built.stdout
    assert "✓ forces" in built.stdout and "✓ energy" in built.stdout and "Build summary" in built.stdout
    again = run_cli("build", "--model", tiny_checkpoint, "--target", "onnx", "--out", tmp_path, "--calib", calib_file)
    assert again.returncode == 0 and "onnx parity (cached)" in again.stdout, again.stderr
    report = tmp_path / "report.json"
    verified = run_cli("verify", tmp_path / "tiny-test" / "onnx", "--data", calib_file, "--json", report)
    assert verified.returncode == 0, verified.stderr
    assert "verified" in verified.stdout and "vs labels (onnx)" in verified.stdout
    written = json.loads(report.read_text())
    assert written["parity"]["passed"] is True and written["target"] == "onnx"
    assert "NaN" not in report.read_text()
    refused = run_cli("verify", tmp_path / "tiny-test" / "onnx", "--data", calib_file, "--json", tmp_path)
    assert_one_line_error(refused, 65, "--json", "is a folder; give a file name")


drifting_target("drifting-cli-test")


def test_a_parity_failure_prints_its_report_and_exits_1(tiny_checkpoint, calib_file, tmp_path, monkeypatch, capsys):
    from deploycc.cli import main

    monkeypatch.setattr(sys, "argv", ["deploycc", "build", "--model", str(tiny_checkpoint), "--target",
                                      "eager,drifting-cli-test", "--out", str(tmp_path), "--calib", str(calib_file)])
    with pytest.raises(SystemExit) as info:
        main()
    captured = capsys.readouterr()
    assert info.value.code == 1
    assert "✗ energy" in captured.out and "drifting-cli-test parity" in captured.out
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert lines == ["error: drifting-cli-test artifact failed parity against eager; the previous artifact (if any) "
                     "is unchanged"]
    assert (tmp_path / "tiny-test" / "eager" / "manifest.json").is_file()  # the other target still built
    assert not (tmp_path / "tiny-test" / "drifting-cli-test").exists()


def test_predict_on_two_local_workers_writes_the_serial_file(tmp_path):
    pytest.importorskip("distributed", reason="Dask distributed not installed (pip install deploycc[cluster])")
    from pathlib import Path

    sample = Path(__file__).resolve().parents[2] / "docs" / "examples" / "molecules.extxyz"
    # The same chunks make the same calls (another chunking batches differently: float32 rounding differs).
    serial = run_cli("predict", "tiny", "--structures", sample, "--out", tmp_path / "serial.extxyz",
                     "--chunk-size", "3", cwd=tmp_path)
    parallel = run_cli("predict", "tiny", "--structures", sample, "--out", tmp_path / "parallel.extxyz",
                       "--cluster", "local:2", "--chunk-size", "3", cwd=tmp_path)
    assert serial.returncode == 0 and parallel.returncode == 0, parallel.stderr[-2000:]
    assert (tmp_path / "serial.extxyz").read_text() == (tmp_path / "parallel.extxyz").read_text()
