"""The metatomic target through metatomic's own tools: its ASE calculator, per-atom and selected-atom outputs,
MD, and the physics every path must keep (invariances, lattice images; forces and stress equal eager's,
whose gradients tests/model checks against finite differences in float64)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("metatomic.torch", reason="metatomic-torch not installed (pip install deploycc[metatomic])")
metatomic_ase = pytest.importorskip("metatomic_ase", reason="metatomic-ase not installed (pip install deploycc[metatomic])")

from ase import Atoms  # noqa: E402
from ase.build import bulk, molecule  # noqa: E402
from metatensor.torch import Labels  # noqa: E402
from metatomic.torch import ModelEvaluationOptions, ModelOutput, System, load_atomistic_model  # noqa: E402
from vesin.metatomic import neighbor_lists_for_model  # noqa: E402

from deploycc.checkpoint import load_checkpoint  # noqa: E402
from deploycc.targets import metatomic as metatomic_target  # noqa: E402
from deploycc.targets.base import get_target  # noqa: E402
from helpers import evaluate, periodic_structures  # noqa: E402


def export(checkpoint_path, tmp_path_factory):
    checkpoint = load_checkpoint(checkpoint_path)
    target = get_target("metatomic")
    out = tmp_path_factory.mktemp("metatomic")
    exported = target.export_checkpoint(checkpoint, target.settings(), out)
    return checkpoint, exported


@pytest.fixture(scope="module")
def molecular(tiny_checkpoint, tmp_path_factory):
    return export(tiny_checkpoint, tmp_path_factory)


@pytest.fixture(scope="module")
def periodic(periodic_checkpoint, tmp_path_factory):
    return export(periodic_checkpoint, tmp_path_factory)


def calculator(exported):
    return metatomic_ase.MetatomicCalculator(str(exported.path), check_consistency=True)


def small_molecules() -> list[Atoms]:
    return [molecule(name) for name in ("H2O", "CH4", "C6H6", "CH3CH2OH", "HCOOH")]


def assert_matches_eager(model, atoms_list, calc, stress: bool) -> None:
    expected = evaluate(model, atoms_list, torch.float32)
    for k, atoms in enumerate(atoms_list):
        atoms = atoms.copy()
        atoms.calc = calc
        n = len(atoms)
        assert abs(atoms.get_potential_energy() - expected.energies[k]) <= 2e-5 * n + 1e-6 * abs(expected.energies[k])
        np.testing.assert_allclose(atoms.get_forces(), expected.forces_of(k), rtol=0, atol=5e-4)
        if stress:
            want = -expected.virials[k] / atoms.cell.volume
            np.testing.assert_allclose(atoms.get_stress(voigt=False), want, rtol=0, atol=1e-5)


def test_metatomic_ase_calculator_matches_eager_on_molecules(molecular) -> None:
    checkpoint, exported = molecular
    assert_matches_eager(checkpoint.model, small_molecules(), calculator(exported), stress=False)


def test_metatomic_ase_calculator_matches_eager_with_stress_on_periodic_cells(periodic) -> None:
    checkpoint, exported = periodic
    cells = [a for a in periodic_structures(seed=4) if a.pbc.all()]
    assert len(cells) >= 3
    assert_matches_eager(checkpoint.model, cells, calculator(exported), stress=True)


def evaluate_model(exported, atoms: Atoms, sample_kind: str, selected: Labels | None = None):
    model = load_atomistic_model(str(exported.path))
    cell = torch.tensor(np.asarray(atoms.cell), dtype=torch.float64) * torch.tensor(atoms.pbc).unsqueeze(1)
    system = System(types=torch.tensor(atoms.numbers, dtype=torch.int32),
                    positions=torch.tensor(atoms.positions, dtype=torch.float64), cell=cell,
                    pbc=torch.tensor(atoms.pbc))
    for calc in neighbor_lists_for_model("angstrom", model, skin=0.0):
        calc.add_neighbor_list([system])
    options = ModelEvaluationOptions(length_unit="angstrom", selected_atoms=selected,
                                     outputs={"energy": ModelOutput(unit="eV", sample_kind=sample_kind)})
    return model([system], options, check_consistency=True)["energy"].block()


def test_per_atom_energies_sum_to_the_total_and_selected_atoms_count_alone(molecular) -> None:
    _checkpoint, exported = molecular
    atoms = molecule("CH3CH2OH")
    total = float(evaluate_model(exported, atoms, "system").values.sum())
    per_atom = evaluate_model(exported, atoms, "atom")
    assert per_atom.samples.names == ["system", "atom"] and per_atom.values.shape == (len(atoms), 1)
    assert abs(float(per_atom.values.sum()) - total) <= 1e-9 * max(1.0, abs(total))
    chosen = [0, 2, 5]  # an engine's local atoms; the others only neighbours (ghosts)
    selected = Labels(["system", "atom"], torch.tensor([[0, i] for i in chosen], dtype=torch.int32))
    part = float(evaluate_model(exported, atoms, "system", selected).values.sum())
    assert abs(part - float(per_atom.values[chosen].sum())) <= 1e-9 * max(1.0, abs(total))
    assert abs(part - total) > 1e-3  # the selection changed the answer


def test_energy_is_invariant_and_forces_rotate(molecular) -> None:
    _checkpoint, exported = molecular
    calc = calculator(exported)
    atoms = molecule("CH3CH2OH")
    atoms.calc = calc
    energy, forces = atoms.get_potential_energy(), atoms.get_forces()
    rotation = torch.linalg.qr(torch.randn(3, 3, generator=torch.Generator().manual_seed(3), dtype=torch.float64))[0].numpy()
    order = np.random.default_rng(0).permutation(len(atoms))
    moved = Atoms(atoms.numbers[order], positions=atoms.positions[order] @ rotation.T + [3.0, -7.0, 11.0])
    moved.calc = calc
    assert abs(moved.get_potential_energy() - energy) <= 2e-5 * len(atoms)
    np.testing.assert_allclose(moved.get_forces(), forces[order] @ rotation.T, rtol=0, atol=5e-4)


def test_lattice_images_make_the_energy_extensive(periodic) -> None:
    _checkpoint, exported = periodic
    calc = calculator(exported)
    cell = bulk("Cu", "fcc", a=3.61, cubic=True)
    cell.positions += np.random.default_rng(1).normal(0, 0.05, cell.positions.shape)
    cell.calc = calc
    single = cell.get_potential_energy()
    supercell = cell.repeat((2, 1, 3))
    supercell.calc = calc
    assert abs(supercell.get_potential_energy() - 6 * single) <= 1e-5 * len(supercell)


def test_md_through_the_metatomic_calculator_conserves_energy(molecular) -> None:
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution
    from ase.md.verlet import VelocityVerlet
    from ase import units

    checkpoint, exported = molecular
    atoms = molecule("CH3CH2OH")
    atoms.calc = calculator(exported)
    MaxwellBoltzmannDistribution(atoms, temperature_K=300, rng=np.random.default_rng(0))
    start = atoms.get_total_energy()
    VelocityVerlet(atoms, 0.25 * units.fs).run(20)
    assert abs(atoms.get_total_energy() - start) <= 5e-3
    expected = evaluate(checkpoint.model, [atoms], torch.float32)
    assert abs(atoms.get_potential_energy() - expected.energies[0]) <= 2e-5 * len(atoms)


def test_artifact_declares_the_checkpoint_elements_and_its_range(molecular) -> None:
    checkpoint, exported = molecular
    capabilities = load_atomistic_model(str(exported.path)).capabilities()
    assert list(capabilities.atomic_types) == checkpoint.elements
    config = checkpoint.model.config
    assert capabilities.interaction_range == pytest.approx(float(config.cutoff) * config.num_interactions)
    assert capabilities.length_unit == "angstrom" and capabilities.dtype == "float64"
    assert exported.notes["atomic_types"] == checkpoint.elements


def test_unavailable_without_metatomic_names_the_extra(monkeypatch) -> None:
    monkeypatch.setattr(metatomic_target, "_importable", lambda name: name != "metatomic.torch")
    target = get_target("metatomic")
    reason = target.availability(target.settings())
    assert reason is not None and "metatomic.torch" in reason and "deploycc[metatomic]" in reason
