"""Crash safety: a build killed midway (SIGKILL, Ctrl-C) leaves the previous artifact byte-identical.

A build writes into a staging folder beside the artifact and publishes it with renames only; a later build
(or opening the artifact) removes what a killed build left behind.
"""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms

from deploycc.api import load
from deploycc.build import build
from deploycc.errors import ArtifactError
from deploycc.targets.eager import EagerTarget

from helpers import random_molecule

TARGET = "eager"
ARTIFACT_FILE = EagerTarget.artifact_file  # model.pt


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def leftovers(folder: Path) -> list[Path]:
    return sorted(p for p in folder.parent.iterdir()
                  if p.name.startswith(f".{folder.name}.") and not p.name.endswith(".lock"))


def start_build(checkpoint: Path, out: Path, calib: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # A test run started in the background (nohup, `&` in a script) inherits an ignored SIGINT, which Python then
    # keeps ignoring: restore the default so that the Ctrl-C below reaches the build as it would in a terminal.
    return subprocess.Popen([sys.executable, "-m", "deploycc", "build", "--model", str(checkpoint), "--target", TARGET,
                             "--out", str(out), "--calib", str(calib), "--force"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def wait_for(process: subprocess.Popen, ready, timeout: float = 120.0) -> None:
    """Poll (every 2 ms) until `ready()`; fail if the build ends first (it was not caught midway)."""
    deadline = time.monotonic() + timeout
    while not ready():
        if process.poll() is not None:
            out, err = process.communicate()
            pytest.fail(f"the build ended (rc {process.returncode}) before it was caught midway: {err[-2000:]}")
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail("the build never reached the point to interrupt")
        time.sleep(0.002)


def staged(final: Path, name: str | None = None):
    def ready() -> bool:
        for stage in final.parent.glob(f".{final.name}.tmp-*"):
            if name is None or (stage / name).is_file():
                return True
        return False

    return ready


@pytest.fixture(scope="module")
def slow_calib(calib_file, tmp_path_factory) -> Path:
    """The calibration molecules repeated 80 times: parity then takes seconds, so a signal sent once the
    artifact file exists lands during reload/parity rather than racing the end of a fast build."""
    from deploycc.data.schema import read_h5, write_h5

    data = read_h5(calib_file)
    many = data.subset(np.tile(np.arange(len(data)), 80))
    many.splits = {}
    path = tmp_path_factory.mktemp("slow") / "calib.h5"
    write_h5(many, path)
    return path


@pytest.fixture
def published(tiny_checkpoint, calib_file, tmp_path) -> Path:
    return build(str(tiny_checkpoint), TARGET, tmp_path, calib=calib_file).folder


def probe() -> list[Atoms]:
    rng = np.random.default_rng(5)
    return [Atoms(numbers=z, positions=r) for z, r in (random_molecule(rng, n) for n in (3, 7, 12))]


# "staging": killed as soon as the staging folder exists (during export);
# "exported": killed after the artifact file was written into it (reload / parity / manifest).
@pytest.mark.parametrize("moment", ["staging", "exported"])
def test_sigkill_midway_leaves_the_previous_artifact_byte_identical(moment, published, tiny_checkpoint,
                                                                    calib_file, slow_calib, tmp_path):
    before = snapshot(published)
    energies_before, _ = load(published).predict(probe())
    process = start_build(tiny_checkpoint, tmp_path, slow_calib)
    wait_for(process, staged(published, None if moment == "staging" else ARTIFACT_FILE))
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=60)
    assert process.returncode == -signal.SIGKILL
    assert leftovers(published), "the kill did not land midway (no staging folder left behind)"

    assert snapshot(published) == before  # every byte of the previous artifact, manifest included
    energies, _ = load(published).predict(probe())  # it still opens (hashes checked) and predicts the same
    np.testing.assert_array_equal(energies, energies_before)

    again = build(str(tiny_checkpoint), TARGET, tmp_path, calib=calib_file)  # the next build recovers
    assert again.status == "cached"
    assert leftovers(published) == []
    assert snapshot(published) == before


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["ctrl-c", "sigterm"])
def test_an_interrupt_midway_exits_130_or_143_and_cleans_up(published, tiny_checkpoint, slow_calib, tmp_path,
                                                            signum, code):
    before = snapshot(published)
    process = start_build(tiny_checkpoint, tmp_path, slow_calib)
    wait_for(process, staged(published, ARTIFACT_FILE))
    process.send_signal(signum)
    out, err = process.communicate(timeout=120)
    assert process.returncode == code, (out[-2000:], err[-2000:])
    lines = [line for line in err.splitlines() if line.strip()]
    expected = (f"error: interrupted while building {TARGET}; the previous artifact (if any) is unchanged and its "
                "staging folder was removed")
    assert len(lines) == 1 and lines[0] == expected, err
    assert "Traceback" not in out + err
    assert snapshot(published) == before
    assert leftovers(published) == []  # a caught interrupt removes its own staging folder


def test_kill_between_the_two_renames_of_publish_is_recovered_on_open(published, tiny_checkpoint, calib_file,
                                                                      tmp_path):
    before = snapshot(published)
    backup = published.parent / f".{published.name}.previous"
    os.replace(published, backup)  # publish's first rename happened, the second did not
    half = published.parent / f".{published.name}.tmp-killed"
    half.mkdir()
    (half / ARTIFACT_FILE).write_bytes(b"half")

    lock = published.parent / f".{published.name}.lock"
    with open(lock, "a") as handle:  # while a build holds the lock, readers do not touch its swap
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(ArtifactError, match="being replaced by a build right now"):
            load(published)
        assert backup.is_dir()

    predictor = load(published)  # no build running: opening restores the previous artifact
    assert np.isfinite(predictor.predict(probe())[0]).all()
    assert snapshot(published) == before and not backup.exists()
    assert build(str(tiny_checkpoint), TARGET, tmp_path, calib=calib_file).status == "cached"
    assert leftovers(published) == []


def test_failed_build_keeps_nothing_half_written(published, tiny_checkpoint, calib_file, tmp_path, monkeypatch):
    """Any exception after export (here: the reload) leaves the previous artifact and no staging folder."""
    before = snapshot(published)

    def broken(*args, **kwargs):
        raise RuntimeError("reload failed")

    monkeypatch.setattr(EagerTarget, "runner", broken)
    with pytest.raises(RuntimeError, match="reload failed"):
        build(str(tiny_checkpoint), TARGET, tmp_path, calib=calib_file, force=True)
    assert snapshot(published) == before
    assert leftovers(published) == []


def test_sigterm_during_predict_exits_143_and_keeps_the_previous_output(tiny_checkpoint, tmp_path):
    import ase.io

    rng = np.random.default_rng(11)
    structures = tmp_path / "many.extxyz"
    ase.io.write(structures, [Atoms(*random_molecule(rng, 12)) for _ in range(4000)])
    out = tmp_path / "labelled.extxyz"
    out.write_text("previous output\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen([sys.executable, "-m", "deploycc", "predict", str(tiny_checkpoint), "--structures",
                                str(structures), "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env=env)
    temporary = lambda: any(tmp_path.glob(f".{out.name}.tmp-*"))  # noqa: E731
    wait_for(process, temporary)
    process.send_signal(signal.SIGTERM)
    stdout, err = process.communicate(timeout=120)
    assert process.returncode == 143, (stdout[-2000:], err[-2000:])
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines == ["error: interrupted; temporary files were removed, inputs and previous outputs are unchanged"]
    assert out.read_text() == "previous output\n"
    assert not temporary()
