"""deploycc.engines.torchsim.DeployccModel: torch-sim's interface check, batched energies/forces/stresses equal
to the Predictor's in system order, the stress sign, molecules without a cell, and batched MD."""

from __future__ import annotations

import numpy as np
import pytest

ts = pytest.importorskip("torch_sim", reason="torch-sim-atomistic not installed (pip install deploycc[torchsim])")

import torch  # noqa: E402
from ase.build import molecule  # noqa: E402
from torch_sim.models.interface import validate_model_outputs  # noqa: E402
from torch_sim.units import MetalUnits  # noqa: E402

from deploycc.bench.systems import water_box  # noqa: E402
from deploycc.engines.torchsim import DeployccModel  # noqa: E402
from deploycc.errors import DeployccError  # noqa: E402

MOLECULES = ["H2O", "CH4", "NH3", "C6H6", "CH3OH"]
DTYPE = torch.float64


@pytest.fixture(scope="module")
def model() -> DeployccModel:
    return DeployccModel("tiny", device="cpu")


def boxed(name: str, side: float = 20.0):
    """A molecule in a periodic box far wider than the cutoff: torch-sim 0.3 has one pbc flag per state, so a
    state mixing molecules with a periodic system holds the molecules this way."""
    atoms = molecule(name)
    atoms.set_cell([side] * 3)
    atoms.center()
    atoms.pbc = True
    return atoms


def test_torch_sim_validates_the_model():
    model = DeployccModel("tiny", device="cpu", unseen_elements="allow")  # the check uses Si and Fe
    assert (model.device, model.dtype, model.compute_stress, model.compute_forces) == (torch.device("cpu"), DTYPE,
                                                                                       True, True)
    assert model.memory_scales_with == "n_atoms_x_density"
    validate_model_outputs(model, torch.device("cpu"), DTYPE)


def test_batched_state_matches_the_predictor_system_by_system(model):
    systems = [boxed("H2O"), water_box(81, seed=1), boxed("CH4"), boxed("C6H6"), boxed("NH3")]
    out = model(ts.io.atoms_to_state(systems, model.device, DTYPE))
    assert out["energy"].shape == (5,) and out["forces"].shape == (sum(map(len, systems)), 3)
    assert out["stress"].shape == (5, 3, 3) and out["energy"].dtype == DTYPE
    assert len(set(np.round(out["energy"].numpy(), 3))) == 5  # distinct energies: a reordering would show
    energies, forces, stresses = model.predictor.evaluate(systems)  # the same request: the same numbers
    np.testing.assert_allclose(out["energy"].numpy(), energies, rtol=1e-12)
    np.testing.assert_allclose(out["forces"].numpy(), np.concatenate(forces), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(out["stress"].numpy(), stresses, rtol=1e-12, atol=1e-12)
    start = 0
    for k, atoms in enumerate(systems):  # one structure per call: float32 sums in other slot widths
        energy, force, stress = model.predictor.evaluate([atoms])
        assert out["energy"][k].item() == pytest.approx(energy[0], rel=1e-6)
        np.testing.assert_allclose(out["forces"][start:start + len(atoms)].numpy(), force[0], atol=1e-4)
        np.testing.assert_allclose(out["stress"][k].numpy(), stress[0], atol=1e-6)
        start += len(atoms)
    assert np.abs(out["stress"][1].numpy()).max() > 1e-4  # the water box has a stress
    reverse = model(ts.io.atoms_to_state(systems[::-1], model.device, DTYPE))
    np.testing.assert_allclose(reverse["energy"].numpy()[::-1], out["energy"].numpy(), rtol=1e-6)
    isolated, _ = model.predictor.predict([molecule(n) for n in ("H2O", "CH4", "C6H6", "NH3")])
    np.testing.assert_allclose(out["energy"].numpy()[[0, 2, 3, 4]], isolated, atol=1e-4)  # the box adds nothing


def test_stress_has_ase_sign_by_finite_strain(model):
    box = water_box(81, seed=2)
    stress = model(ts.io.atoms_to_state([box], model.device, DTYPE))["stress"][0].numpy()

    def strained_energy(eps: float) -> float:
        atoms = box.copy()
        atoms.set_cell(box.cell.array @ (np.eye(3) + eps * np.diag([1.0, 0.0, 0.0])), scale_atoms=True)
        return model(ts.io.atoms_to_state([atoms], model.device, DTYPE))["energy"][0].item()

    derivative = (strained_energy(1e-3) - strained_energy(-1e-3)) / 2e-3 / box.get_volume()
    assert abs(stress[0, 0]) > 1e-3
    assert stress[0, 0] == pytest.approx(derivative, rel=2e-2)  # (1/V) dE/dstrain, ASE's and torch-sim's sign


def test_molecules_without_a_cell_have_nan_stress_or_none(model):
    mols = [molecule(n) for n in MOLECULES]
    state = ts.io.atoms_to_state(mols, model.device, DTYPE)
    assert not state.pbc
    out = model(state)
    energies, forces = model.predictor.predict(mols)
    np.testing.assert_allclose(out["energy"].numpy(), energies, rtol=1e-6)
    np.testing.assert_allclose(out["forces"].numpy(), np.concatenate(forces), rtol=1e-6, atol=1e-6)
    assert out["stress"].shape == (len(mols), 3, 3) and torch.isnan(out["stress"]).all()
    no_stress = DeployccModel(model.predictor, compute_stress=False)
    assert "stress" not in no_stress(state) and no_stress.device == torch.device("cpu")


def test_atoms_in_any_order_scatter_back(model):
    mols = [molecule("CH4"), molecule("H2O")]
    state = ts.io.atoms_to_state(mols, model.device, DTYPE)
    perm = torch.randperm(state.n_atoms, generator=torch.Generator().manual_seed(0))
    shuffled = {"positions": state.positions[perm], "atomic_numbers": state.atomic_numbers[perm],
                "system_idx": state.system_idx[perm], "cell": state.cell, "pbc": state.pbc}
    out, ordered = model(shuffled), model(state)
    # float32 sums in another atom order differ by ~1e-5 eV/Å; a misplaced force would be off by ~0.1-1
    np.testing.assert_allclose(out["forces"].numpy(), ordered["forces"][perm].numpy(), atol=1e-4)
    np.testing.assert_allclose(out["energy"].numpy(), ordered["energy"].numpy(), rtol=1e-6)


def test_predictor_errors_propagate(model):
    clash = molecule("H2O")
    clash.positions[1] = clash.positions[0]
    with pytest.raises(DeployccError, match="structure 1"):
        model(ts.io.atoms_to_state([molecule("CH4"), clash], model.device, DTYPE))


def test_batched_nve_md_matches_the_predictor_and_conserves_energy(model):
    mols = [molecule(n) for n in MOLECULES]
    kT = torch.tensor(300 * MetalUnits.temperature, dtype=DTYPE)
    init, _update = ts.nve(model=model, dt=torch.tensor(0.0, dtype=DTYPE), kT=kT, seed=0)
    start = init(ts.io.atoms_to_state(mols, model.device, DTYPE))  # the momenta integrate draws (same seed)
    total0 = start.energy + ts.calc_kinetic_energy(masses=start.masses, momenta=start.momenta,
                                                   system_idx=start.system_idx)
    final = ts.integrate(mols, model, integrator=ts.nve, n_steps=15, temperature=300.0, timestep=0.00025, seed=0)
    energies, forces = model.predictor.predict(final.to_atoms())
    np.testing.assert_allclose(final.energy.numpy(), energies, rtol=1e-6)
    np.testing.assert_allclose(final.forces.numpy(), np.concatenate(forces), rtol=1e-6, atol=1e-6)
    moved = (final.energy - start.energy).abs()
    assert (moved > 1e-3).all() and moved.max() > 0.1  # the atoms moved: every potential energy changed
    total = final.energy + ts.calc_kinetic_energy(masses=final.masses, momenta=final.momenta,
                                                  system_idx=final.system_idx)
    drift = (total - total0).abs()
    assert (drift < 5e-3).all() and (drift < 0.25 * moved).all(), (drift, moved)  # 0.25 fs velocity Verlet
