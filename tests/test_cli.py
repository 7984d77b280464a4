"""The CLI turns user errors into one line on stderr and a non-zero exit code, never a traceback."""

from __future__ import annotations

import subprocess
import sys

import pytest


def run_cli(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "deploycc", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=300)


def assert_one_line_error(result: subprocess.CompletedProcess, code: int, *fragments: str) -> None:
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert "Traceback" not in result.stderr + result.stdout
    for fragment in fragments:
        assert fragment in lines[0]


@pytest.mark.parametrize(
    "args, code, fragments",
    [
        (["build", "--model", "huge", "--target", "onnx"], 65, ["huge", "tiny"]),
        (["build", "--model", "tiny", "--target", "tensorflow"], 65, ["tensorflow", "torchscript"]),
        (["data", "generate", "--out", "x.h5", "--teacher", "dft"], 65, ["dft", "xtb"]),
        (["train", "--data", "missing.h5", "--out", "x.pt"], 65, ["missing.h5"]),
        (["verify", "no-such-folder"], 65, ["no-such-folder"]),
    ],
)
def test_user_errors_are_one_line(args, code, fragments, tmp_path):
    assert_one_line_error(run_cli(*args, cwd=tmp_path), code, *fragments)


def test_corrupt_checkpoint_is_one_line(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"\x00not a checkpoint" * 10)
    assert_one_line_error(run_cli("build", "--model", str(bad), "--target", "eager", cwd=tmp_path), 65, "bad.pt")


def test_artifact_without_manifest_is_one_line(tmp_path):
    (tmp_path / "art").mkdir()
    assert_one_line_error(run_cli("verify", str(tmp_path / "art")), 65, "manifest.json")


def test_missing_tensorrt_or_gpu_exits_2(tmp_path):
    import importlib.util

    import torch

    if importlib.util.find_spec("tensorrt") is not None and torch.cuda.is_available():
        pytest.skip("TensorRT and a GPU are present here")
    result = run_cli("build", "--model", "tiny", "--target", "trt", cwd=tmp_path)
    assert_one_line_error(result, 2, "trt")


def test_models_and_targets_list(tmp_path):
    models = run_cli("models", cwd=tmp_path)
    assert models.returncode == 0 and "ultra-tiny" in models.stdout
    targets = run_cli("targets", cwd=tmp_path)
    assert targets.returncode == 0
    for name in ("eager", "torchscript", "onnx", "trt"):
        assert name in targets.stdout


def test_build_then_verify_gate(tiny_checkpoint, calib_file, tmp_path):
    built = run_cli("build", "--model", str(tiny_checkpoint), "--target", "torchscript", "--out", str(tmp_path),
                    "--calib", str(calib_file))
    assert built.returncode == 0, built.stderr
    assert "✓ forces" in built.stdout
    report = tmp_path / "report.json"
    verified = run_cli("verify", str(tmp_path / "tiny-test" / "torchscript"), "--data", str(calib_file),
                       "--json", str(report))
    assert verified.returncode == 0, verified.stderr
    assert '"passed": true' in report.read_text()
