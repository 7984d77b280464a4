"""SevenNet-0 teacher (deploycc.data.sevennet): offline load, finite labels, forces and stress as energy
derivatives, and the one-line errors when sevenn or its shipped checkpoint is missing.

The tests that run the model skip when sevenn is not installed (`pip install 'deploycc[sevennet]'`); the error
tests run everywhere, on a faked import.
"""

from __future__ import annotations

import builtins
import socket
import sys
import types

import numpy as np
import pytest

from deploycc.data import sevennet
from deploycc.errors import MissingDependencyError

SKIP = "sevenn is not installed (pip install 'deploycc[sevennet]'): SevenNet-0 teacher tests skipped"


def _fail_import(monkeypatch, missing: str) -> None:
    """Make `import sevenn...` raise as if the module `missing` were not installed."""
    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name.split(".")[0] == "sevenn":
            raise ModuleNotFoundError(f"No module named '{missing}'", name=missing)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)


def test_missing_sevenn_names_the_extra(monkeypatch):
    _fail_import(monkeypatch, "sevenn")
    with pytest.raises(MissingDependencyError) as info:
        sevennet.sevennet_calculator()
    assert str(info.value) == "teacher 'sevennet' needs sevenn: pip install 'deploycc[sevennet]'"
    assert info.value.exit_code == 2
    with pytest.raises(MissingDependencyError, match=r"needs sevenn: pip install 'deploycc\[sevennet\]'"):
        sevennet.checkpoint_path()


def test_broken_sevenn_dependency_says_which(monkeypatch):
    _fail_import(monkeypatch, "torch_geometric")
    with pytest.raises(MissingDependencyError, match=r"needs sevenn: .*importing it failed: .*torch_geometric"):
        sevennet.sevennet_calculator()


def test_checkpoint_not_in_wheel_is_not_downloaded(monkeypatch, tmp_path):
    """A sevenn without the shipped SevenNet-0 file: a clear error, and sevenn's downloader is never reached."""
    prefix = str(tmp_path / "pretrained_potentials")
    const = types.SimpleNamespace(_prefix=prefix,
                                  SEVENNET_0_11Jul2024=f"{prefix}/SevenNet_0__11Jul2024/checkpoint_sevennet_0.pth")
    calls = []
    fake_util = types.SimpleNamespace(load_checkpoint=lambda path: calls.append(("load", path)),
                                      download_checkpoint=lambda *a: calls.append(("download", a)),
                                      pretrained_name_to_path=lambda *a: calls.append(("resolve", a)))
    fake = types.ModuleType("sevenn")
    fake._const, fake.util = const, fake_util
    monkeypatch.setitem(sys.modules, "sevenn", fake)
    monkeypatch.setitem(sys.modules, "sevenn._const", const)
    monkeypatch.setitem(sys.modules, "sevenn.util", fake_util)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.cache/sevennet copy either
    with pytest.raises(MissingDependencyError, match="checkpoint is not in the installed sevenn .* does not download"):
        sevennet.checkpoint_path()
    with pytest.raises(MissingDependencyError, match="does not download"):
        sevennet._model.__wrapped__("cpu")  # past the per-process cache
    assert calls == []


# ---- with sevenn installed -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def make_calc():
    pytest.importorskip("sevenn", reason=SKIP)
    import torch

    torch.set_num_threads(1)

    def no_network(*args, **kwargs):
        raise AssertionError("the SevenNet teacher tried to open a network connection")

    sevennet._model.cache_clear()  # really load the checkpoint here, with the network cut
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(socket.socket, "connect", no_network)
        patch.setattr(socket, "create_connection", no_network)
        sevennet.sevennet_calculator()
    return sevennet.sevennet_calculator


def _cu(reps=(1, 1, 1), seed=0, rattle=0.05):
    from ase.build import bulk

    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(reps)
    atoms.rattle(rattle, seed=seed)
    return atoms


def test_checkpoint_ships_in_the_wheel(make_calc):
    import sevenn

    path = sevennet.checkpoint_path()
    assert path.startswith(sevenn.__path__[0]) and path.endswith("checkpoint_sevennet_0.pth")


def test_labels_are_finite_on_a_periodic_alloy(make_calc):
    atoms = _cu((2, 2, 2), seed=1)
    symbols = np.array(atoms.get_chemical_symbols())
    symbols[::4] = "Au"  # Cu3Au-like, 32 atoms
    atoms.set_chemical_symbols(list(symbols))
    atoms.calc = make_calc()
    energy = atoms.get_potential_energy()
    forces, stress = atoms.get_forces(), atoms.get_stress()
    assert np.isfinite(energy) and -6.0 < energy / len(atoms) < -2.5  # PBE-like cohesive scale, eV/atom
    assert forces.shape == (32, 3) and np.isfinite(forces).all()
    assert stress.shape == (6,) and np.isfinite(stress).all()
    assert np.abs(forces.sum(axis=0)).max() < 1e-3  # no net force on a periodic cell


def test_forces_are_minus_energy_gradient(make_calc):
    atoms = _cu(seed=2, rattle=0.08)  # 4-atom cell, periodic images inside the 5 A cutoff
    atoms.calc = make_calc()
    forces = atoms.get_forces().copy()
    h = 1e-2
    for atom in range(3):
        for axis in range(3):
            energies = []
            for step in (h, -h):
                moved = atoms.copy()
                moved.positions[atom, axis] += step
                moved.calc = make_calc()
                energies.append(moved.get_potential_energy())
            numeric = -(energies[0] - energies[1]) / (2 * h)
            assert numeric == pytest.approx(forces[atom, axis], abs=2e-3), (atom, axis)  # float32 model: ~1e-4 seen


def test_stress_is_strain_derivative(make_calc):
    atoms = _cu(seed=3, rattle=0.05)
    atoms.calc = make_calc()
    stress = atoms.get_stress(voigt=False).copy()
    volume = atoms.get_volume()
    h = 1e-3
    for i, j in [(0, 0), (1, 1), (2, 2), (0, 1), (1, 2)]:
        energies = []
        for step in (h, -h):
            strain = np.eye(3)  # symmetric: eps_ij = eps_ji = step/2 off the diagonal, so dE/dstep = V sigma_ij
            strain[i, j] += step / 2
            strain[j, i] += step / 2
            moved = atoms.copy()
            moved.set_cell(atoms.cell.array @ strain, scale_atoms=True)
            moved.calc = make_calc()
            energies.append(moved.get_potential_energy())
        numeric = (energies[0] - energies[1]) / (2 * h) / volume
        assert numeric == pytest.approx(stress[i, j], abs=2e-4), (i, j)  # eV/A^3 (2e-4 = 0.03 GPa)


def test_each_calculator_is_new_but_the_model_is_loaded_once(make_calc):
    first, second = make_calc(), make_calc()
    assert first is not second and first.model is second.model
