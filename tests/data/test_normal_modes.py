"""Normal-mode sampling: MMFF modes in physical units, no rigid motion, harmonic equipartition, the soft-mode
floor, and the sampler's fallback for conformers without modes."""

import numpy as np
import pytest

pytest.importorskip("rdkit")
pytest.importorskip("ase")
from ase.data import atomic_masses  # noqa: E402

from deploycc.data.generate import embed  # noqa: E402
from deploycc.data import normal_modes as nm  # noqa: E402
from deploycc.data.normal_modes import NormalModeSampler, modes_of  # noqa: E402


def _modes(smiles, seed=1):
    atoms = embed(smiles, seed)
    return atoms, modes_of(smiles, atoms.positions)


def _mmff_energy(smiles, positions):
    """MMFF94 energy (kcal/mol) of a conformer, from a force field made afresh (the reference)."""
    from rdkit import Chem
    from rdkit.Chem import AllChem
    from rdkit.Geometry import Point3D

    mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
    conformer = Chem.Conformer(mol.GetNumAtoms())
    for k, (x, y, z) in enumerate(positions):
        conformer.SetAtomPosition(k, Point3D(float(x), float(y), float(z)))
    mol.AddConformer(conformer, assignId=True)
    return AllChem.MMFFGetMoleculeForceField(mol, AllChem.MMFFGetMoleculeProperties(mol)).CalcEnergy()


def test_water_vibrates_at_its_force_field_frequencies():
    _, modes = _modes("O")
    bend, *stretches = np.sort(modes.wavenumbers)
    assert len(modes.wavenumbers) == 3
    assert 1400 < bend < 1800  # MMFF94 water: a bend near 1600 cm^-1, stretches near 3700
    assert all(3400 < s < 4000 for s in stretches)


@pytest.mark.parametrize("smiles, seed, linear", [("O=C=O", 1, True), ("FC#CF", 1, True), ("FC#CF", 2, True),
                                                  ("FC#CF", 3, True), ("C#CC#C", 3, True), ("C=O", 1, False),
                                                  ("CC(=O)Oc1ccccc1C(=O)O", 1, False)])
def test_there_are_3n_minus_6_modes_or_5_when_linear(smiles, seed, linear):
    atoms, modes = _modes(smiles, seed)
    assert modes.stiffness.shape == (3 * len(atoms) - (5 if linear else 6),)


def test_modes_are_orthonormal_in_mass_weighted_coordinates():
    atoms, modes = _modes("CCO")
    mass = np.repeat(atomic_masses[atoms.numbers], 3)
    gram = modes.displacements.T @ (mass[:, None] * modes.displacements)
    assert np.allclose(gram, np.eye(len(modes.stiffness)), atol=1e-8)


def test_displacements_neither_translate_nor_rotate_the_molecule():
    atoms, modes = _modes("CC(=O)Oc1ccccc1C(=O)O")
    masses = atomic_masses[atoms.numbers][:, None]
    centre = (masses * modes.origin).sum(0) / masses.sum()
    d = modes.displaced(1000.0, np.random.default_rng(0)) - modes.origin
    assert np.abs((masses * d).sum(0)).max() < 1e-8
    assert np.abs((masses * np.cross(modes.origin - centre, d)).sum(0)).max() < 1e-8
    assert np.abs(d).max() > 0.01  # and they do move it


def test_harmonic_energy_is_half_kt_per_mode():
    # formaldehyde's modes are all far above the floor and nearly harmonic at 50 K: <E - E0> = M kT / 2
    atoms, modes = _modes("C=O")
    e0 = _mmff_energy("C=O", modes.origin)
    rng = np.random.default_rng(1)
    rise = [_mmff_energy("C=O", modes.displaced(50.0, rng)) - e0 for _ in range(600)]
    expected = 0.5 * len(modes.stiffness) * nm.KB_KCAL * 50.0
    assert np.mean(rise) == pytest.approx(expected, rel=0.1)


def test_hot_frames_keep_every_bond_within_the_stretch_limit():
    # straight-line torsions of aspirin's methyl stretch its C-H bonds at 1000 K; such draws are redrawn
    atoms, modes = _modes("CC(=O)Oc1ccccc1C(=O)O")
    rng = np.random.default_rng(4)
    frames = [modes.displaced(1000.0, rng) for _ in range(300)]
    i, j = modes.bonds.T
    length = np.linalg.norm(modes.origin[i] - modes.origin[j], axis=1)
    worst = max(np.abs(np.linalg.norm(f[i] - f[j], axis=1) / length - 1.0).max() for f in frames)
    assert len(modes.bonds) == 21 and worst <= nm.MAX_STRETCH
    assert sum(np.array_equal(f, modes.origin) for f in frames) == 0  # and they are displaced


def test_soft_modes_are_displaced_as_if_at_the_floor():
    atoms, modes = _modes("CC(=O)Oc1ccccc1C(=O)O")
    soft = int(np.argmin(modes.wavenumbers))
    assert modes.wavenumbers[soft] < nm.FLOOR_WAVENUMBER  # aspirin has torsions softer than the floor
    mass = np.repeat(atomic_masses[atoms.numbers], 3)
    rng = np.random.default_rng(3)
    coordinate = [modes.displacements[:, soft] @ (mass * (modes.displaced(600.0, rng) - modes.origin).ravel())
                  for _ in range(800)]
    floor = (nm.FLOOR_WAVENUMBER / nm.WAVENUMBER_PER_SQRT_STIFFNESS) ** 2
    assert np.std(coordinate) == pytest.approx(np.sqrt(nm.KB_KCAL * 600.0 / floor), rel=0.1)


def test_clusters_and_mismatched_conformers_have_no_modes():
    water = embed("O", 1)
    assert modes_of("O.O", np.vstack([water.positions, water.positions + 3.0])) is None
    assert modes_of("CO", water.positions) is None  # 3 positions for methanol's 6 atoms


def test_the_sampler_rattles_what_has_no_modes_and_is_reproducible():
    pool = [(4, embed("CCO", 1)), (9, embed("O.O", 1))]
    sampler = NormalModeSampler(pool, {4: "CCO", 9: "O.O"})
    first = sampler.frames(12, np.random.default_rng(5))
    again = NormalModeSampler(pool, {4: "CCO", 9: "O.O"}).frames(12, np.random.default_rng(5))
    assert {mol_id for mol_id, _ in first} == {4, 9}
    for (mol_id, atoms), (other_id, other) in zip(first, again):
        source = dict(pool)[mol_id]
        assert mol_id == other_id and np.array_equal(atoms.positions, other.positions)
        assert np.array_equal(atoms.numbers, source.numbers)
        assert 0.0 < np.abs(atoms.positions - source.positions).max() < 1.5
    assert sampler.modes(1) is None and sampler.modes(0) is not None


def test_boltzmann_constant_is_in_kcal_per_mol():
    from ase import units

    assert nm.KB_KCAL == pytest.approx(units.kB / (units.kcal / units.mol), rel=1e-5)
