"""The neighbour-slot student equals an independent textbook implementation (all pairs, explicit images,
per-pair filters, scatter-add sums) with the same weights: energies, forces and virials in float64."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms

from helpers import evaluate, make_model, make_periodic_model, periodic_structures, random_molecule
from reference import reference


def molecule(seed: int, n: int) -> Atoms:
    z, r = random_molecule(np.random.default_rng(seed), n)
    return Atoms(numbers=z, positions=r)


CASES = [("molecule", lambda: molecule(1, 14)), ("molecule-2", lambda: molecule(2, 5))] + [
    (name, lambda k=k: periodic_structures(2)[k])
    for k, name in enumerate(["cu-cell", "au-primitive", "triclinic", "alloy", "slab", "cluster"])]


@pytest.mark.parametrize("name,make", CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("recompute", [False, True])
def test_same_weights_same_energy_forces_and_virial(name, make, recompute):
    model = make_periodic_model(seed=3) if name not in ("molecule", "molecule-2") else make_model(seed=3)
    atoms = make()
    energy, forces, virial = reference(model, atoms)
    result = evaluate(model, [atoms], recompute=recompute)
    scale = max(1.0, abs(energy))
    assert abs(result.energies[0] - energy) < 1e-10 * scale
    np.testing.assert_allclose(result.forces_of(0), forces, rtol=0, atol=1e-10 * max(1.0, np.abs(forces).max()))
    np.testing.assert_allclose(result.virials[0], virial, rtol=0, atol=1e-10 * max(1.0, np.abs(virial).max()))
    # the comparison is not between zeros (a one-atom cell has zero force by symmetry, but a virial)
    assert np.abs(forces).max() > 1e-3 or (len(atoms) == 1 and np.abs(virial).max() > 1e-3)


def test_reference_disagrees_with_a_different_model():
    """Guard: the reference is sensitive to the weights, so agreement above is not vacuous."""
    atoms = periodic_structures(2)[3]
    energy, forces, _ = reference(make_periodic_model(seed=3), atoms)
    other = evaluate(make_periodic_model(seed=4), [atoms])
    assert abs(other.energies[0] - energy) > 1e-3
    assert np.abs(other.forces_of(0) - forces).max() > 1e-3
