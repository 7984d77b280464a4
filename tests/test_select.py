"""`deploycc select`: the fastest eligible artifact from the latest bench, and why the others were rejected.

The bench JSON written here is measured-data input (made up); the artifacts are real eager and ONNX builds of
a random model (conftest's `tiny_checkpoint`, parity on `calib_file`).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from deploycc.artifact.manifest import read_manifest
from deploycc.bench import BenchConfig, latest_path, run_bench
from deploycc.build import build
from deploycc.errors import UserInputError
from deploycc.select import NothingEligibleError, Selection, candidate_rows, model_name, nearest_batch, select_backend

MODEL = "tiny-test"  # the artifact folder name of conftest's tiny_checkpoint
TARGETS = ("eager", "onnx")


def run_cli(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "deploycc", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=300)


def assert_one_line_error(result: subprocess.CompletedProcess, code: int, *fragments: str) -> None:
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and "Traceback" not in result.stderr + result.stdout
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


@pytest.fixture(scope="module")
def built_root(tiny_checkpoint, calib_file, tmp_path_factory) -> Path:
    """Real eager and ONNX artifacts of the test checkpoint, built once."""
    root = tmp_path_factory.mktemp("select-artifacts")
    for target in TARGETS:
        build(str(tiny_checkpoint), target, root, calib=calib_file)
    return root


@pytest.fixture
def root(built_root, tmp_path) -> Path:
    """A private copy of the built artifacts (tests tamper with them)."""
    copy = tmp_path / "artifacts"
    shutil.copytree(built_root, copy)
    return copy


def row(target: str, batch: int, per_s: float, atoms: float = 25.0, mode: str = "host") -> dict:
    median = 1e3 * batch / per_s
    return {"target": target, "batch_size": batch, "atoms": atoms, "median_ms": median, "p90_ms": 1.1 * median,
            "p99_ms": 1.2 * median, "mean_ms": median, "cv": 0.05, "structures_per_s": per_s,
            "atoms_per_s": per_s * atoms, "peak_mem_mb": 1.0, "mode": mode, "device": "cpu",
            "enqueue_bound": None, "slots": 20, "neighbours_ms": 0.4}


def write_bench(root: Path, records: list[dict], checkpoints: dict | None = None, target_atoms: int = 25,
                mean_atoms: float | None = None) -> Path:
    """A bench result as `deploycc bench` saves it, with the checkpoint hashes of the built artifacts."""
    if checkpoints is None:
        checkpoints = {t: read_manifest(root / MODEL / t).checkpoint.sha256 for t in TARGETS}
    header = {"model": MODEL, "device": "cpu", "date": "2025-01-01T00:00:00Z", "checkpoint_sha256": checkpoints,
              "workload": {"target_atoms": target_atoms,
                           "mean_atoms": float(target_atoms if mean_atoms is None else mean_atoms)},
              "batch_sizes": sorted({r["batch_size"] for r in records})}
    path = latest_path(root, MODEL, "cpu")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"header": header, "records": records}))
    return path


def edit_manifest(root: Path, target: str, edit) -> None:
    path = root / MODEL / target / "manifest.json"
    raw = json.loads(path.read_text())
    edit(raw)
    path.write_text(json.dumps(raw))


def verdicts(selection: Selection) -> dict[str, list[str]]:
    return {c.target: c.reasons for c in selection.candidates}


@pytest.mark.parametrize("eager_rate, onnx_rate, expected", [(100.0, 250.0, "onnx"), (300.0, 250.0, "eager")])
def test_fastest_eligible_is_chosen(root, eager_rate, onnx_rate, expected):
    write_bench(root, [row("eager", 32, eager_rate), row("onnx", 32, onnx_rate),
                       row("eager", 1, 50.0), row("onnx", 1, 10.0)])
    selection = select_backend(MODEL, 32, device="cpu", root=root)
    assert selection.chosen.target == expected
    assert selection.metric == "structures_per_s" and selection.batch_size == 32 and selection.atoms == 25.0
    assert all(c.eligible for c in selection.candidates)
    assert [c.target for c in selection.candidates][0] == expected
    assert selection.chosen.record["structures_per_s"] == max(eager_rate, onnx_rate)
    assert set(selection.chosen.parity) == {"energy", "forces"}
    text = selection.row()
    assert "batch 32" in text and "structures/s" in text and "max |ΔF|" in text and "25.0 atoms/structure" in text
    assert json.loads(json.dumps(selection.to_dict()))["selected"] == expected


def test_batch_one_ranks_by_median_latency(root):
    write_bench(root, [row("eager", 1, 50.0), row("onnx", 1, 80.0)])
    selection = select_backend(MODEL, 1, root=root)
    assert selection.metric == "median_ms"
    assert selection.chosen.target == "onnx"  # 12.5 ms < 20 ms


def test_failed_parity_is_skipped_with_its_reason(root):
    def fail_forces(raw):
        raw["parity"]["passed"] = False
        next(c for c in raw["parity"]["checks"] if c["name"] == "forces")["passed"] = False

    edit_manifest(root, "onnx", fail_forces)
    write_bench(root, [row("eager", 32, 100.0), row("onnx", 32, 250.0)])
    selection = select_backend(MODEL, 32, root=root)
    assert selection.chosen.target == "eager"
    assert verdicts(selection)["onnx"] == ["parity failed (forces)"]
    assert verdicts(selection)["eager"] == []


def test_artifact_modified_after_build_is_skipped(root):
    with open(root / MODEL / "onnx" / "model.onnx", "ab") as handle:
        handle.write(b"tampered")
    write_bench(root, [row("eager", 32, 100.0), row("onnx", 32, 250.0)])
    selection = select_backend(MODEL, 32, root=root)
    assert selection.chosen.target == "eager"
    assert verdicts(selection)["onnx"] == ["stale hash: model.onnx modified since it was built"]


def test_artifact_rebuilt_from_another_checkpoint_is_skipped(root):
    write_bench(root, [row("eager", 32, 100.0), row("onnx", 32, 250.0)],
                checkpoints={"eager": read_manifest(root / MODEL / "eager").checkpoint.sha256, "onnx": "0" * 64})
    selection = select_backend(MODEL, 32, root=root)
    assert selection.chosen.target == "eager"
    assert verdicts(selection)["onnx"] == ["rebuilt from another checkpoint since the bench"]


def test_artifact_built_for_another_device_is_skipped(root):
    edit_manifest(root, "onnx", lambda raw: raw.update(device="cuda:0"))
    write_bench(root, [row("eager", 32, 100.0), row("onnx", 32, 250.0)])
    selection = select_backend(MODEL, 32, root=root)
    assert selection.chosen.target == "eager"
    assert verdicts(selection)["onnx"] == ["now built for cuda, benchmarked on cpu"]


def test_unreadable_and_old_layout_manifests_are_rejected_as_to_build(root):
    write_bench(root, [row("eager", 32, 100.0), row("onnx", 32, 250.0)])
    (root / MODEL / "onnx" / "manifest.json").write_text("{not json")
    edit_manifest(root, "eager", lambda raw: raw.update(format_version=1, layout="dense"))
    with pytest.raises(NothingEligibleError) as caught:
        select_backend(MODEL, 32, root=root)
    selection = caught.value.selection
    assert verdicts(selection) == {"eager": ["unreadable manifest"], "onnx": ["unreadable manifest"]}
    assert all(c.fix == "build" for c in selection.candidates)
    assert "deploycc build --model tiny-test --target eager,onnx --force" in str(caught.value)


def test_atoms_per_call_above_the_atoms_profile_is_rejected(root):
    """The request is batch x atoms per call, checked against the artifact's atoms profile."""
    edit_manifest(root, "onnx", lambda raw: raw["settings"]["atoms"].update(max=500))
    write_bench(root, [row("eager", 16, 100.0), row("onnx", 16, 250.0),
                       row("eager", 32, 100.0), row("onnx", 32, 250.0)])
    assert select_backend(MODEL, 16, root=root).chosen.target == "onnx"  # 16 x 25 = 400 atoms fit
    selection = select_backend(MODEL, 32, root=root)  # 32 x 25 = 800 atoms do not
    assert selection.chosen.target == "eager"
    assert verdicts(selection)["onnx"] == ["32 x 25 atoms per call above its atoms profile max 500"]
    with pytest.raises(NothingEligibleError):
        select_backend(MODEL, 32, atoms=60, root=root)  # another size: no bench row fits either


def test_unbuilt_target_and_missing_row_are_rejected(root):
    write_bench(root, [row("eager", 32, 100.0), row("onnx", 8, 900.0), row("torchscript", 32, 999.0)])
    selection = select_backend(MODEL, 32, root=root)
    assert selection.chosen.target == "eager"
    reasons = verdicts(selection)
    assert reasons["torchscript"] == ["not built"]
    assert reasons["onnx"] == ["not benchmarked at batch 32"]


def test_built_but_not_benchmarked_target_is_listed_and_rejected(root):
    write_bench(root, [row("eager", 32, 100.0)])
    selection = select_backend(MODEL, 32, root=root)
    assert selection.chosen.target == "eager"
    assert verdicts(selection)["onnx"] == ["not in the latest bench"]
    assert selection.candidates[-1].fix == "bench"


def test_other_atom_counts_are_rejected(root):
    write_bench(root, [row("eager", 32, 100.0, atoms=25.0), row("onnx", 32, 250.0, atoms=25.0)])
    assert select_backend(MODEL, 32, atoms=27, root=root).chosen.target == "onnx"
    with pytest.raises(NothingEligibleError) as caught:
        select_backend(MODEL, 32, atoms=60, root=root)
    assert all("atoms/structure" in c.reasons[0] for c in caught.value.selection.candidates)
    assert "deploycc bench" in str(caught.value) and "--atoms 60" in str(caught.value)
    assert "\n" not in str(caught.value)


def test_nearest_batch_prefers_the_next_larger_size():
    assert nearest_batch([1, 8, 64], 8) == 8
    assert nearest_batch([1, 8, 64], 32) == 64
    assert nearest_batch([1, 8, 64], 9) == 64
    assert nearest_batch([1, 8, 64], 128) == 64
    assert model_name("/x/y/tiny-test.pt") == "tiny-test" and model_name("tiny") == "tiny"


def test_unbenchmarked_batch_uses_the_nearest_and_says_so(root):
    write_bench(root, [row(t, b, r * b) for t, r in (("eager", 10.0), ("onnx", 20.0)) for b in (1, 8, 64)])
    selection = select_backend(MODEL, 32, root=root)
    assert selection.batch_size == 64 and selection.requested_batch == 32
    assert selection.chosen.record["batch_size"] == 64 and selection.chosen.target == "onnx"
    assert any("batch 32 was not benchmarked" in n and "64" in n for n in selection.notes)
    assert not any("not benchmarked" in n for n in select_backend(MODEL, 8, root=root).notes)  # exact size


def test_bench_notes_warn_about_a_workload_of_another_size_and_missing_hashes(root):
    write_bench(root, [row("eager", 8, 100.0, atoms=40.0), row("onnx", 8, 90.0, atoms=40.0)], target_atoms=25,
                mean_atoms=40.0)
    selection = select_backend(MODEL, 8, atoms=40, root=root)
    assert any("asked for 25 atoms but its molecules average 40" in n for n in selection.notes)
    assert not any(n.startswith("atoms:") for n in selection.notes)  # asked for explicitly
    path = write_bench(root, [row("eager", 8, 100.0), row("onnx", 8, 90.0)])
    payload = json.loads(path.read_text())
    del payload["header"]["checkpoint_sha256"]
    path.write_text(json.dumps(payload))
    selection = select_backend(MODEL, 8, root=root)
    assert any("does not record checkpoint hashes" in n for n in selection.notes)
    assert any(n.startswith("atoms: 25 per structure") for n in selection.notes)


def test_nothing_eligible_says_what_to_build(root):
    (root / MODEL / "onnx" / "model.onnx").write_bytes(b"x")
    write_bench(root, [row("onnx", 32, 250.0)])
    shutil.rmtree(root / MODEL / "eager")
    with pytest.raises(NothingEligibleError) as caught:
        select_backend(MODEL, 32, root=root)
    message = str(caught.value)
    assert "deploycc build --model tiny-test --target" in message and "onnx" in message
    assert isinstance(caught.value, UserInputError) and "\n" not in message
    columns, rows = candidate_rows(caught.value.selection)
    assert columns[0] == "rank" and columns[-1] == "verdict"
    assert all(r[0] == "-" and r[-1].startswith("rejected: ") for r in rows)


@pytest.mark.parametrize("content, fragment", [(None, "is missing"), ("{oops", "not valid JSON"),
                                               ('{"records": []}', "not a deploycc bench result")])
def test_missing_or_broken_bench_files_are_one_line_errors(root, content, fragment):
    path = latest_path(root, MODEL, "cpu")
    if content is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    with pytest.raises(UserInputError) as caught:
        select_backend(MODEL, 4, atoms=20, root=root)
    text = str(caught.value)
    assert fragment in text and "\n" not in text
    assert "deploycc bench --model tiny-test --device cpu --batch-sizes 4 --atoms 20" in text


def test_bad_requests_and_a_bench_without_that_mode(root):
    with pytest.raises(UserInputError, match="must be positive"):
        select_backend(MODEL, 0, root=root)
    with pytest.raises(UserInputError, match="must be positive"):
        select_backend(MODEL, 4, atoms=0, root=root)
    write_bench(root, [row("eager", 4, 100.0, mode="device")])
    with pytest.raises(UserInputError, match="no host-mode measurements"):
        select_backend(MODEL, 4, root=root)
    assert select_backend(MODEL, 4, root=root, mode="device").chosen.target == "eager"


def test_cli_without_a_bench_is_one_line_exit_65(tmp_path):
    result = run_cli("select", "--model", "tiny", "--batch-size", "32", "--out", str(tmp_path), cwd=tmp_path)
    assert_one_line_error(result, 65, "deploycc bench --model tiny", "latest-cpu.json")


def test_cli_prints_the_table_and_the_selected_row(root, tmp_path):
    write_bench(root, [row("eager", 32, 100.0), row("onnx", 32, 250.0)])
    out = tmp_path / "selection.json"
    result = run_cli("select", "--model", MODEL, "--batch-size", "32", "--out", str(root), "--json", str(out),
                     cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "selected: onnx — bench row batch 32" in result.stdout
    assert "eager" in result.stdout
    assert json.loads(out.read_text())["selected"] == "onnx"


def test_real_bench_then_select(tiny_checkpoint, calib_file, root):
    """A short real sweep saves the latest bench (with checkpoint hashes) that select then ranks."""
    config = BenchConfig(model=str(tiny_checkpoint), targets=",".join(TARGETS), batch_sizes=[1, 4], atoms=20,
                         threads=1, out=root, min_iters=3, min_seconds=0.0, warmup=1, structures=calib_file,
                         calib=calib_file, worker_timeout=120)
    result = run_bench(config)
    saved = json.loads(latest_path(root, MODEL, "cpu").read_text())
    assert saved["header"]["checkpoint_sha256"]["onnx"] == read_manifest(root / MODEL / "onnx").checkpoint.sha256
    selection = select_backend(str(tiny_checkpoint), 4, atoms=20, root=root)
    measured = {r.target: r.structures_per_s for r in result.records if r.batch_size == 4}
    assert set(measured) == set(TARGETS)
    assert selection.chosen.target == max(measured, key=measured.get)
    assert all(c.eligible for c in selection.candidates)
    assert selection.chosen.record["slots"] > 0 and "padded_atoms" not in selection.chosen.record
