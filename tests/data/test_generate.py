"""Structure generation from SMILES and labelling by real teachers; failures are skipped and counted."""

from __future__ import annotations

import numpy as np
import pytest
from ase.calculators.calculator import Calculator, all_changes
from ase.calculators.emt import EMT

from deploycc.data.generate import LabelReport, embed, generate_molecules, molecule_frames, read_smiles
from deploycc.data.teachers import Teacher, get_teacher
from deploycc.errors import UserInputError


def test_shipped_smiles_cover_elements_and_sizes():
    pytest.importorskip("rdkit")
    from rdkit import Chem

    pairs = read_smiles()
    sizes, elements = [], set()
    for smiles, _ in pairs:
        mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
        sizes.append(mol.GetNumAtoms())
        elements |= {a.GetSymbol() for a in mol.GetAtoms()}
    assert {"H", "C", "N", "O", "F", "P", "S", "Cl"} <= elements
    assert min(sizes) <= 5 and max(sizes) >= 60


def test_embed_gives_explicit_hydrogens():
    pytest.importorskip("rdkit")
    atoms = embed("CCO", seed=1)
    assert atoms.get_chemical_formula() == "C2H6O"
    distances = atoms.get_all_distances()[np.triu_indices(len(atoms), 1)]
    assert distances.min() > 0.9


def test_xtb_labels_are_finite_and_split_by_molecule():
    pytest.importorskip("rdkit")
    pytest.importorskip("tblite")
    data, report = generate_molecules([("CO", "methanol"), ("CC#N", "acetonitrile"), ("O", "water")],
                                      get_teacher("xtb"), rattles=2, md_frames=1, seed=3)
    assert report.structures == len(data) >= 6 and report.skipped == 0
    assert np.isfinite(data.energies).all() and all(np.isfinite(f).all() for f in data.forces)
    groups = {name: set(data.group[idx]) for name, idx in data.splits.items()}
    assert not (groups["train"] & groups["test"]) and not (groups["train"] & groups["val"])


class _FailsEveryOtherCall(Calculator):
    """A real calculator (EMT) that raises on every second call, like an SCF that does not converge."""

    implemented_properties = ["energy", "forces"]
    calls = 0

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        type(self).calls += 1
        if type(self).calls % 2 == 0:
            raise RuntimeError("SCF did not converge")
        Calculator.calculate(self, atoms, properties, system_changes)
        copy = self.atoms.copy()
        copy.calc = EMT()
        self.results = {"energy": copy.get_potential_energy(), "forces": copy.get_forces()}


def test_teacher_failures_are_skipped_and_counted():
    from ase.build import bulk

    teacher = Teacher("flaky", _FailsEveryOtherCall, "test")
    report = LabelReport()
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat(2)
    atoms.pbc = False
    frames = molecule_frames(atoms, teacher, np.random.default_rng(0), rattles=6, md_frames=0, report=report)
    assert len(frames) == 3 and report.skipped == 3
    assert report.skipped_reasons == {"RuntimeError": 3}


def test_unknown_teacher_and_bad_factory():
    with pytest.raises(UserInputError, match="xtb"):
        get_teacher("dft")
    with pytest.raises(UserInputError, match="cannot be imported"):
        get_teacher("no_such_module:factory")
    assert get_teacher("ase.calculators.emt:EMT").make_calculator().__class__.__name__ == "EMT"
