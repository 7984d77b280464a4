"""`deploycc select`: the fastest eligible artifact from the latest bench, and why the others were rejected.

The bench JSON written here is measured-data input (made up); the artifacts are real builds of a random model.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from deploycc.artifacts import read_manifest
from deploycc.bench import BenchConfig, latest_path, run_bench
from deploycc.errors import UserInputError
from deploycc.pipeline import build
from deploycc.select import NothingEligibleError, nearest_batch, select_backend

from test_cli import assert_one_line_error, run_cli

MODEL = "tiny-test"  # the artifact folder name of conftest's tiny_checkpoint


@pytest.fixture(scope="module")
def built_root(tiny_checkpoint, calib_file, tmp_path_factory) -> Path:
    """Real eager and torchscript artifacts of the test checkpoint, built once."""
    root = tmp_path_factory.mktemp("select-artifacts")
    for target in ("eager", "torchscript"):
        build(str(tiny_checkpoint), target, root, calib=calib_file)
    return root


@pytest.fixture
def root(built_root, tmp_path) -> Path:
    """A private copy of the built artifacts (tests tamper with them)."""
    copy = tmp_path / "artifacts"
    shutil.copytree(built_root, copy)
    return copy


def row(target: str, batch: int, per_s: float, atoms: float = 25.0) -> dict:
    median = 1e3 * batch / per_s
    return {"target": target, "batch_size": batch, "atoms": atoms, "median_ms": median, "p90_ms": 1.1 * median,
            "p99_ms": 1.2 * median, "mean_ms": median, "cv": 0.05, "structures_per_s": per_s,
            "atoms_per_s": per_s * atoms, "peak_mem_mb": 1.0, "mode": "host", "device": "cpu",
            "enqueue_bound": None}


def write_bench(root: Path, records: list[dict], checkpoints: dict | None = None, target_atoms: int = 25) -> Path:
    """A bench result as `deploycc bench` saves it, with the checkpoint hashes of the built artifacts."""
    if checkpoints is None:
        checkpoints = {t: read_manifest(root / MODEL / t)["checkpoint"]["sha256"] for t in ("eager", "torchscript")}
    header = {"model": MODEL, "device": "cpu", "date": "2025-01-01T00:00:00Z", "checkpoint_sha256": checkpoints,
              "workload": {"target_atoms": target_atoms, "mean_atoms": float(target_atoms)},
              "batch_sizes": sorted({r["batch_size"] for r in records})}
    path = latest_path(root, MODEL, "cpu")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"header": header, "records": records}))
    return path


def verdicts(selection) -> dict[str, list[str]]:
    return {c.target: c.reasons for c in selection.candidates}


@pytest.mark.parametrize("eager_rate, ts_rate, expected", [(100.0, 250.0, "torchscript"), (300.0, 250.0, "eager")])
def test_fastest_eligible_is_chosen(root, eager_rate, ts_rate, expected):
    write_bench(root, [row("eager", 32, eager_rate), row("torchscript", 32, ts_rate),
                       row("eager", 1, 50.0), row("torchscript", 1, 10.0)])
    selection = select_backend(MODEL, 32, device="cpu", root=root)
    assert selection.chosen.target == expected
    assert selection.metric == "structures_per_s" and selection.batch_size == 32
    assert all(c.eligible for c in selection.candidates)
    assert selection.chosen.record["structures_per_s"] == max(eager_rate, ts_rate)
    text = selection.row()
    assert "batch 32" in text and "structures/s" in text and "max |ΔF|" in text


def test_batch_one_ranks_by_median_latency(root):
    write_bench(root, [row("eager", 1, 50.0), row("torchscript", 1, 80.0)])
    selection = select_backend(MODEL, 1, root=root)
    assert selection.metric == "median_ms"
    assert selection.chosen.target == "torchscript"  # 12.5 ms < 20 ms


def test_failed_parity_is_skipped_with_its_reason(root):
    folder = root / MODEL / "torchscript"
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["parity"]["passed"] = False
    manifest["parity"]["checks"][1]["passed"] = False
    (folder / "manifest.json").write_text(json.dumps(manifest))
    write_bench(root, [row("eager", 32, 100.0), row("torchscript", 32, 250.0)])
    selection = select_backend(MODEL, 32, root=root)
    assert selection.chosen.target == "eager"
    assert verdicts(selection)["torchscript"] == ["parity failed (forces)"]


def test_artifact_modified_after_build_is_skipped(root):
    with open(root / MODEL / "torchscript" / "model.ts", "ab") as handle:
        handle.write(b"tampered")
    write_bench(root, [row("eager", 32, 100.0), row("torchscript", 32, 250.0)])
    selection = select_backend(MODEL, 32, root=root)
    assert selection.chosen.target == "eager"
    assert any("stale hash" in reason for reason in verdicts(selection)["torchscript"])


def test_artifact_rebuilt_from_another_checkpoint_is_skipped(root):
    write_bench(root, [row("eager", 32, 100.0), row("torchscript", 32, 250.0)],
                checkpoints={"eager": read_manifest(root / MODEL / "eager")["checkpoint"]["sha256"],
                             "torchscript": "0" * 64})
    selection = select_backend(MODEL, 32, root=root)
    assert selection.chosen.target == "eager"
    assert any("another checkpoint" in r for r in verdicts(selection)["torchscript"])


def test_unbuilt_target_and_missing_row_are_rejected(root):
    write_bench(root, [row("eager", 32, 100.0), row("torchscript", 8, 900.0), row("onnx", 32, 999.0)])
    selection = select_backend(MODEL, 32, root=root)
    assert selection.chosen.target == "eager"
    reasons = verdicts(selection)
    assert reasons["onnx"] == ["not built"]
    assert reasons["torchscript"] == ["not benchmarked at batch 32"]


def test_other_atom_counts_are_rejected(root):
    write_bench(root, [row("eager", 32, 100.0, atoms=25.0), row("torchscript", 32, 250.0, atoms=25.0)])
    assert select_backend(MODEL, 32, atoms=27, root=root).chosen.target == "torchscript"
    with pytest.raises(NothingEligibleError) as caught:
        select_backend(MODEL, 32, atoms=60, root=root)
    assert all("atoms/structure" in c.reasons[0] for c in caught.value.selection.candidates)
    assert "deploycc bench" in str(caught.value) and "--atoms 60" in str(caught.value)


def test_nearest_batch_prefers_the_next_larger_size():
    assert nearest_batch([1, 8, 64], 8) == 8
    assert nearest_batch([1, 8, 64], 32) == 64
    assert nearest_batch([1, 8, 64], 9) == 64
    assert nearest_batch([1, 8, 64], 128) == 64


def test_unbenchmarked_batch_uses_the_nearest_and_says_so(root):
    write_bench(root, [row(t, b, r * b) for t, r in (("eager", 10.0), ("torchscript", 20.0)) for b in (1, 8, 64)])
    selection = select_backend(MODEL, 32, root=root)
    assert selection.batch_size == 64 and selection.requested_batch == 32
    assert selection.chosen.record["batch_size"] == 64
    assert any("batch 32 was not benchmarked" in n and "64" in n for n in selection.notes)
    assert not any("not benchmarked" in n for n in select_backend(MODEL, 8, root=root).notes)  # exact size


def test_nothing_eligible_says_what_to_build(root):
    (root / MODEL / "torchscript" / "model.ts").write_bytes(b"x")
    write_bench(root, [row("torchscript", 32, 250.0)])
    shutil.rmtree(root / MODEL / "eager")
    with pytest.raises(NothingEligibleError) as caught:
        select_backend(MODEL, 32, root=root)
    message = str(caught.value)
    assert "deploycc build --model tiny-test --target" in message and "torchscript" in message
    assert isinstance(caught.value, UserInputError) and "\n" not in message


def test_cli_without_a_bench_is_one_line_exit_65(tmp_path):
    result = run_cli("select", "--model", "tiny", "--batch-size", "32", "--out", str(tmp_path))
    assert_one_line_error(result, 65, "deploycc bench --model tiny", "latest-cpu.json")


def test_cli_prints_the_table_and_the_selected_row(root, tmp_path):
    write_bench(root, [row("eager", 32, 100.0), row("torchscript", 32, 250.0)])
    out = tmp_path / "selection.json"
    result = run_cli("select", "--model", MODEL, "--batch-size", "32", "--out", str(root), "--json", str(out))
    assert result.returncode == 0, result.stderr
    assert "selected: torchscript — bench row batch 32" in result.stdout
    assert "eager" in result.stdout
    assert json.loads(out.read_text())["selected"] == "torchscript"


def test_real_bench_then_select(tiny_checkpoint, calib_file, root):
    """A short real sweep saves the latest bench (with checkpoint hashes) that select then ranks."""
    config = BenchConfig(model=str(tiny_checkpoint), targets="eager,torchscript", batch_sizes=[1, 4], atoms=20,
                         threads=1, out=root, min_iters=3, min_seconds=0.0, warmup=1, structures=calib_file,
                         calib=calib_file, worker_timeout=120)
    result = run_bench(config)
    saved = json.loads(latest_path(root, MODEL, "cpu").read_text())
    assert saved["header"]["checkpoint_sha256"]["torchscript"] == read_manifest(
        root / MODEL / "torchscript")["checkpoint"]["sha256"]
    selection = select_backend(str(tiny_checkpoint), 4, atoms=20, root=root)
    measured = {r.target: r.structures_per_s for r in result.records if r.batch_size == 4}
    assert set(measured) == {"eager", "torchscript"}
    assert selection.chosen.target == max(measured, key=measured.get)
    assert all(c.eligible for c in selection.candidates)
