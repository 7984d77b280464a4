"""The ANI-1x teacher: interpreter discovery, the server protocol, the batching with padding, and (where an
interpreter with torchani 2.2.4 exists: `make ani-venv`) the real ensemble's labels."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import molecule

from deploycc.data import ani1x, ani_worker
from deploycc.data.teachers import get_teacher
from deploycc.errors import MissingDependencyError, UserInputError


def test_messages_round_trip_through_the_framing():
    stream = io.BytesIO()
    ani_worker.write_message(stream, ani_worker.pack(numbers=np.array([1, 8]), positions=np.eye(2, 3)))
    ani_worker.write_message(stream, b"")
    stream.seek(0)
    first = np.load(io.BytesIO(ani_worker.read_message(stream)))
    assert first["numbers"].tolist() == [1, 8] and first["positions"].shape == (2, 3)
    assert ani_worker.read_message(stream) == b""  # the end-of-requests message
    assert ani_worker.read_message(stream) is None  # and then end of stream


class _Quadratic(torch.nn.Module):
    """Energy sum_i k_Z |r_i|^2 over real atoms (species >= 0), in Hartree: exact forces known; it stands in
    for the ensemble to test label()'s padding and bookkeeping, which do not depend on the model."""

    def forward(self, inputs):
        species, coordinates = inputs
        weight = torch.where(species >= 0, species.clamp(min=0).to(coordinates.dtype), torch.zeros(()))
        energies = (weight[..., None] * coordinates**2).sum(dim=(1, 2))
        return type("Result", (), {"energies": energies})()


def test_label_batches_molecules_of_different_sizes_with_padding(monkeypatch):
    monkeypatch.setattr(ani_worker, "BATCH_ATOMS", 7)  # forces several padded batches
    rng = np.random.default_rng(0)
    counts = np.array([3, 1, 5, 2, 4])
    numbers = rng.choice([1, 6, 7, 8], size=counts.sum())
    positions = rng.normal(size=(counts.sum(), 3))
    energies, forces = ani_worker.label(_Quadratic(), numbers, positions.astype(np.float32), counts)
    offsets = np.concatenate([[0], np.cumsum(counts)])
    for k in range(len(counts)):
        z, r = numbers[offsets[k]:offsets[k + 1]], positions[offsets[k]:offsets[k + 1]]
        assert energies[k] == pytest.approx((z[:, None] * r**2).sum() * ani_worker.HARTREE_EV, rel=1e-5)
        np.testing.assert_allclose(forces[offsets[k]:offsets[k + 1]], -2 * z[:, None] * r * ani_worker.HARTREE_EV,
                                   rtol=1e-5, atol=1e-5)


def test_the_interpreter_named_by_the_environment_must_exist(monkeypatch, tmp_path):
    monkeypatch.setenv("DEPLOYCC_ANI_PYTHON", str(tmp_path / "nope" / "python"))
    with pytest.raises(MissingDependencyError, match="DEPLOYCC_ANI_PYTHON=.*does not exist; teacher 'ani1x' needs"):
        ani1x.interpreter()


def test_without_any_interpreter_the_teacher_says_how_to_get_one(monkeypatch, tmp_path):
    monkeypatch.delenv("DEPLOYCC_ANI_PYTHON", raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(ani1x, "__file__", str(tmp_path / "a" / "b" / "ani1x.py"))  # no .venv-ani beside it
    monkeypatch.setattr(ani1x, "_has_torchani", lambda: False)
    with pytest.raises(MissingDependencyError, match=r"make ani-venv"):
        ani1x.interpreter()


def test_a_server_that_cannot_start_is_one_line(tmp_path):
    fake = tmp_path / "python"
    fake.write_text("#!/bin/sh\necho 'ModuleNotFoundError: No module named torchani' >&2\nexit 1\n")
    fake.chmod(0o755)
    with pytest.raises(MissingDependencyError, match="did not start: ModuleNotFoundError: No module named torchani"):
        ani1x.Ani1xServer(str(fake))


def test_the_registry_knows_what_ani1x_can_label():
    teacher = get_teacher("ani1x")
    assert teacher.elements == frozenset({1, 6, 7, 8}) and not teacher.periodic and teacher.label_batch is not None


def _have_ani() -> str | None:
    try:
        return ani1x.interpreter()
    except MissingDependencyError:
        return None


needs_ani = pytest.mark.skipif(_have_ani() is None, reason="no interpreter with torchani 2.2.4 (make ani-venv, or "
                                                             "set DEPLOYCC_ANI_PYTHON)")


@pytest.fixture(scope="module")
def server():
    started = ani1x.Ani1xServer()
    yield started
    started.close()


@needs_ani
def test_ani1x_labels_are_finite_batched_equals_alone_and_forces_are_gradients(server):
    rng = np.random.default_rng(1)
    frames = []
    for name in ("CH3CH2OH", "H2O", "CH3CONH2", "C6H6"):
        atoms = molecule(name)
        atoms.positions += rng.normal(0, 0.03, atoms.positions.shape)
        frames.append(atoms)
    energies, forces = server.label(frames)
    assert np.isfinite(energies).all() and all(np.isfinite(f).all() for f in forces)
    for k, atoms in enumerate(frames):
        alone_e, alone_f = server.label([atoms])
        assert alone_e[0] == pytest.approx(energies[k], abs=1e-3)
        np.testing.assert_allclose(alone_f[0], forces[k], atol=1e-3)
    water = frames[1]
    h = 5e-3  # float32 energies of ~-2000 eV: a wide step keeps the rounding well below the tolerance
    shifted = [water.copy() for _ in range(2)]
    shifted[0].positions[0, 2] += h
    shifted[1].positions[0, 2] -= h
    (e_plus, e_minus), _ = server.label(shifted)
    assert -(e_plus - e_minus) / (2 * h) == pytest.approx(forces[1][0, 2], abs=0.02)


@needs_ani
def test_ani1x_refuses_elements_and_cells_it_does_not_know(server):
    with pytest.raises(UserInputError, match=r"knows H C N O only; structure 0 holds atomic numbers \[16\]"):
        server.label([Atoms("SH2", positions=[[0, 0, 0], [1.34, 0, 0], [0, 1.34, 0]])])
    with pytest.raises(UserInputError, match="labels molecules only; structure 0 is periodic"):
        server.label([Atoms("H2", positions=[[0, 0, 0], [0.74, 0, 0]], cell=[5, 5, 5], pbc=True)])
    assert np.isfinite(server.label([molecule("H2O")])[0]).all()  # the server goes on after a refusal
