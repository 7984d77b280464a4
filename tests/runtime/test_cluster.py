"""Predictions on a Dask cluster: the same file as the serial run (order and numbers), a worker killed
mid-run loses nothing, and cluster specs and unreachable schedulers give one-line errors."""

from __future__ import annotations

import os

import numpy as np
import pytest

distributed = pytest.importorskip("distributed", reason="Dask distributed not installed (pip install deploycc[cluster])")

import ase.io  # noqa: E402
from ase import Atoms  # noqa: E402

from deploycc.api import load  # noqa: E402
from deploycc.errors import UserInputError  # noqa: E402
from deploycc.runtime import cluster as cluster_module  # noqa: E402
from deploycc.runtime.cluster import ClusterSpec, dask_client, parse_cluster  # noqa: E402
from deploycc.runtime.predict import Distributed, predict_file  # noqa: E402
from helpers import random_molecule  # noqa: E402

CHUNK = 4


@pytest.fixture(scope="module")
def structures(tmp_path_factory):
    """30 random H/C/N/O molecules of 2-20 atoms, in extxyz."""
    rng = np.random.default_rng(21)
    atoms = [Atoms(numbers=z, positions=r) for z, r in (random_molecule(rng, int(n)) for n in rng.integers(2, 20, 30))]
    path = tmp_path_factory.mktemp("cluster") / "molecules.extxyz"
    ase.io.write(path, atoms)
    return path


@pytest.fixture(scope="module")
def serial(structures, tiny_checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("serial") / "serial.extxyz"
    predict_file(load(tiny_checkpoint), structures, out, chunk_size=CHUNK)
    return ase.io.read(out, ":")


@pytest.fixture(scope="module")
def client():
    with dask_client(ClusterSpec(workers=2)) as c:
        yield c


def assert_same_file(path, expected) -> None:
    got = ase.io.read(path, ":")
    assert len(got) == len(expected)
    for a, b in zip(got, expected):
        assert (a.numbers == b.numbers).all() and np.array_equal(a.positions, b.positions)
        assert a.get_potential_energy() == b.get_potential_energy()
        assert np.array_equal(a.get_forces(), b.get_forces())


def test_two_workers_write_the_serial_file(structures, serial, tiny_checkpoint, client, tmp_path) -> None:
    out = tmp_path / "parallel.extxyz"
    progress = []
    report = predict_file(load(tiny_checkpoint), structures, out, on_progress=lambda d, t: progress.append(d),
                          chunk_size=CHUNK, distributed=Distributed(client, str(tiny_checkpoint)))
    assert report.structures == 30 and progress[-1] == 30 and progress == sorted(progress)
    assert len(progress) == -(-30 // CHUNK)
    assert_same_file(out, serial)
    workers = client.run(lambda: os.getpid())
    assert len(set(workers.values())) == 2


def test_a_worker_killed_mid_run_loses_nothing(structures, serial, tiny_checkpoint, client, tmp_path) -> None:
    victim = sorted(client.scheduler_info()["workers"])[0]
    killed = []

    def kill_once(done: int, total: int) -> None:
        if not killed:
            killed.append(done)
            try:
                client.run(os._exit, 1, workers=[victim])
            except Exception:  # the worker's connection drops as it dies
                pass

    out = tmp_path / "survived.extxyz"
    predict_file(load(tiny_checkpoint), structures, out, on_progress=kill_once, chunk_size=CHUNK,
                 distributed=Distributed(client, str(tiny_checkpoint)))
    assert killed == [CHUNK]
    assert_same_file(out, serial)
    assert victim not in client.scheduler_info()["workers"]  # it really died (the nanny starts a new one)


def test_a_local_spec_starts_and_stops_its_own_cluster(structures, serial, tiny_checkpoint, tmp_path) -> None:
    out = tmp_path / "local.extxyz"
    predict_file(load(tiny_checkpoint), structures, out, chunk_size=10,
                 distributed=Distributed(parse_cluster("local:1"), str(tiny_checkpoint)))
    assert_same_file(out, serial)


@pytest.mark.parametrize("spec", ["local:0", "local:x", "local", "localhost:8786", "tcp://host", "http://a:1", ""])
def test_bad_cluster_specs_are_one_line_errors(spec: str) -> None:
    with pytest.raises(UserInputError, match="--cluster"):
        parse_cluster(spec)


def test_cluster_specs_parse() -> None:
    assert parse_cluster("local:3") == ClusterSpec(workers=3) and parse_cluster("local:3").local
    assert parse_cluster("tcp://10.1.2.3:8786") == ClusterSpec(address="tcp://10.1.2.3:8786")


def test_an_unreachable_scheduler_is_a_one_line_error(monkeypatch) -> None:
    import socket

    with socket.socket() as probe:  # a free local port: nothing listens there
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setattr(cluster_module, "CONNECT_TIMEOUT", "1s")
    with pytest.raises(UserInputError, match="no Dask scheduler answered"):
        with dask_client(parse_cluster(f"tcp://127.0.0.1:{port}")):
            pass


def test_labelling_on_two_workers_makes_the_serial_dataset(client) -> None:
    pytest.importorskip("rdkit", reason="RDKit not installed (pip install deploycc[data])")
    from deploycc.data.generate import generate_molecules
    from deploycc.data.teachers import get_teacher

    smiles = [("O", "water"), ("CO", "methanol"), ("CC#N", "acetonitrile"), ("C1CC1", "cyclopropane"),
              ("NC=O", "formamide"), ("not-a-smiles", "broken")]
    kwargs = {"rattles": 2, "md_frames": 2, "seed": 5}
    serial, serial_report = generate_molecules(smiles, get_teacher("emt"), **kwargs)
    parallel, parallel_report = generate_molecules(smiles, get_teacher("emt"), cluster=client, **kwargs)
    assert len(serial) == len(parallel) > 10
    assert np.array_equal(serial.group, parallel.group) and np.array_equal(serial.energies, parallel.energies)
    for a, b in zip(serial.positions, parallel.positions):
        assert np.array_equal(a, b)
    for a, b in zip(serial.forces, parallel.forces):
        assert np.array_equal(a, b)
    for split in ("train", "val", "test"):
        assert np.array_equal(serial.splits[split], parallel.splits[split])
    assert serial_report.molecules == parallel_report.molecules == 5
    assert serial_report.skipped_reasons == parallel_report.skipped_reasons == {"RDKit embedding failed": 1}


def test_a_scheduler_address_runs_on_that_cluster(structures, serial, tiny_checkpoint, client, tmp_path) -> None:
    """`tcp://HOST:PORT` connects to a running scheduler (here the fixture's), uses its workers and leaves
    the cluster running."""
    address = client.scheduler.address
    spec = parse_cluster(address)
    assert not spec.local and address.startswith("tcp://127.0.0.1:")
    out = tmp_path / "remote.extxyz"
    predict_file(load(tiny_checkpoint), structures, out, chunk_size=CHUNK,
                 distributed=Distributed(spec, str(tiny_checkpoint)))
    assert_same_file(out, serial)
    assert len(client.scheduler_info()["workers"]) == 2  # still up for others


def test_local_workers_keep_glibcs_adaptive_mmap_threshold(client) -> None:
    # Dask sets MALLOC_TRIM_THRESHOLD_ in its workers; that freezes glibc's mmap threshold and made torch
    # teachers much slower (lab/dask_overhead.py); the local cluster unsets it, and keeps Dask's other variables.
    import os

    environs = client.run(lambda: {k: os.environ.get(k) for k in ("MALLOC_TRIM_THRESHOLD_", "MKL_NUM_THREADS")})
    assert len(environs) == 2
    assert all(env["MALLOC_TRIM_THRESHOLD_"] is None and env["MKL_NUM_THREADS"] == "1" for env in environs.values())
