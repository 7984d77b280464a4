"""The structure rules (deploycc/runtime/validate.py): each refusal is one line naming the structure."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk

from deploycc.errors import UnseenElementWarning, UserInputError
from deploycc.runtime.neighbours import Structure, half_list
from deploycc.runtime.validate import (MIN_DISTANCE, Rules, as_structure, check_neighbours, check_structure,
                                       check_unseen_policy, formula, label_of, validated)

RULES = Rules.make("m/eager", max_z=100, cutoff=5.0)


def refusal(item, rules: Rules = RULES, where: str = "structure 3") -> str:
    with pytest.raises(UserInputError) as info:
        validated(item, where, rules)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(where), message
    return message


def test_rules_and_policies():
    assert RULES.min_distance == MIN_DISTANCE == 0.5
    assert RULES.elements is None and RULES.max_slots is None
    assert Rules.make("x", 10, 4.0, [8, 1, 1]).elements == frozenset({1, 8})
    assert Rules.make("x", 10, 4.0, max_slots=32).max_slots == 32
    for policy in ("warn", "refuse", "allow"):
        assert check_unseen_policy(policy) == policy
    with pytest.raises(UserInputError, match="unseen_elements must be one of warn, refuse, allow, got 'never'"):
        Rules.make("x", 10, 4.0, unseen_elements="never")


def test_formula_never_fails():
    assert formula(np.array([8, 1, 1])) == "H2O"
    assert formula(np.array([1, 0])) == "HX"
    assert formula(np.array([1, 300, 300])) == "Z1Z300x2"  # beyond ASE's symbols
    assert formula(np.array([-2, 6])) == "Z-2Z6"
    assert label_of("structure 2", np.array([6, 1])) == "structure 2 (CH)"
    assert label_of("structure 2", np.zeros(0, np.int64)) == "structure 2"


@pytest.mark.parametrize("atoms, fragment", [
    (Atoms(), "structure 3 has no atoms"),
    (Atoms(numbers=[1, 0], positions=[[0, 0, 0], [1, 0, 0]]), "structure 3 (HX) has atomic number 0 outside 1..100"),
    (Atoms(numbers=[1, 101], positions=[[0, 0, 0], [1, 0, 0]]), "has atomic number 101 outside 1..100"),
    (Atoms(numbers=[1, 200], positions=[[0, 0, 0], [1, 0, 0]]), "has atomic number 200 outside 1..100"),
    (Atoms("H2", positions=[[0, 0, 0], [np.nan, 0, 0]]), "structure 3 (H2) has NaN or infinite positions"),
    (Atoms("H2", positions=[[0, 0, 0], [0, -np.inf, 0]]), "has NaN or infinite positions"),
    (Atoms("OH2", positions=[[0, 0, 0], [0.96, 0, 0], [0, 0, 0]]),
     "structure 3 (H2O) has atoms 0 and 2 0 Å apart, closer than the 0.5 Å m/eager accepts"),
    (Atoms("CH", positions=[[0, 0, 0], [0.49, 0, 0]]), "has atoms 0 and 1 0.49 Å apart"),
])
def test_molecule_refusals(atoms, fragment):
    assert fragment in refusal(atoms)


def test_negative_atomic_numbers_and_the_boundary_distance():
    structure = Structure.of([6, -3], [[0, 0, 0], [1, 0, 0]])
    with pytest.raises(UserInputError, match=r"atomic number -3 outside 1\.\.100"):
        check_structure(structure, "structure 0", RULES)
    structure, half = validated(Atoms("CH", positions=[[0, 0, 0], [0.501, 0, 0]]), "structure 0", RULES)
    assert len(half.i) == 1  # just above the minimum distance: accepted
    strict = Rules("m/eager", 100, 5.0, min_distance=0.6)
    with pytest.raises(UserInputError, match="closer than the 0.6 Å"):
        validated(Atoms("CH", positions=[[0, 0, 0], [0.55, 0, 0]]), "structure 0", strict)


def test_periodic_images_closer_than_the_minimum_are_refused():
    across = Atoms("Cu2", positions=[[0.1, 1.0, 1.0], [3.45, 1.0, 1.0]], cell=[3.6, 3.6, 3.6], pbc=True)
    message = refusal(across)  # 3.35 Å apart in the cell, 0.25 Å through the boundary
    assert "atoms 0 and 1 (periodic images) 0.25 Å apart" in message and "structure 3 (Cu2)" in message
    across.pbc = False  # the same atoms without periodicity are fine
    validated(across, "structure 3", RULES)
    self_image = Atoms("Cu", cell=[0.4, 5.0, 5.0], pbc=[True, False, False])  # an atom next to its own image
    assert "atoms 0 and 0 (periodic images) 0.4 Å apart" in refusal(self_image)
    validated(Atoms("Cu", cell=[0.4, 5.0, 5.0], pbc=False), "structure 3", RULES)  # no periodic axis: fine


@pytest.mark.parametrize("cell, pbc, fragment", [
    ([[np.nan, 0, 0], [0, 3.6, 0], [0, 0, 3.6]], True, "is periodic but its cell has NaN or infinite entries"),
    ([[3.6, 0, 0], [0, np.inf, 0], [0, 0, 3.6]], True, "NaN or infinite entries"),
    ([[3.6, 0, 0], [7.2, 0, 0], [0, 0, 3.6]], True, "is periodic but its cell has zero volume"),
    ([[3.6, 0, 0], [0, 0, 0], [0, 0, 3.6]], [True, True, False], "zero volume"),
    ([[3.6, 0, 0], [3.6, 1e-9, 0], [0, 0, 3.6]], [True, True, False], "zero volume"),
])
def test_bad_cells_are_refused(cell, pbc, fragment):
    atoms = Atoms("Cu2", positions=[[0, 0, 0], [1.8, 1.8, 1.8]], pbc=pbc)
    atoms.cell.array[:] = np.array(cell, dtype=float)
    message = refusal(atoms)
    assert fragment in message and message.startswith("structure 3 (Cu2) ")


def test_cells_that_are_fine():
    slab = Atoms("Cu2", positions=[[0, 0, 0], [1.8, 1.8, 1.8]], cell=[[3.6, 0, 0], [0, 3.6, 0], [0, 0, 0]],
                 pbc=[True, True, False])  # no third vector: only periodic axes need one
    structure, half = validated(slab, "structure 0", RULES)
    assert structure.periodic and len(half.i) > 0
    wire = Atoms("Cu", cell=[[0, 0, 0], [0, 0, 0], [0, 0, 2.4]], pbc=[False, False, True])
    _, half = validated(wire, "structure 0", RULES)
    np.testing.assert_allclose(sorted(set(np.round(np.abs(half.shifts[:, 2]), 6))), [2.4, 4.8])
    molecule = Atoms("Cu2", positions=[[0, 0, 0], [2.5, 0, 0]], cell=[[np.nan] * 3] * 3, pbc=False)
    validated(molecule, "structure 0", RULES)  # the cell of a non-periodic structure is not used


def test_more_neighbours_than_the_slot_profile_is_refused():
    rules = Rules.make("m/onnx", 100, 5.0, max_slots=40)
    dense = bulk("Cu", "fcc", a=3.61, cubic=True)  # 12 + 6 + 24 = 42 neighbours within 5 Å per atom
    with pytest.raises(UserInputError) as info:
        validated(dense, "structure 1", rules)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("structure 1 (Cu4): atom 0 has 42 neighbours within 5 Å; m/onnx holds at most 40 "
                              "(its neighbours profile)"), message
    validated(dense, "structure 1", Rules.make("m/onnx", 100, 5.0, max_slots=42))  # exactly the profile: fine
    rules_wide = Rules.make("m/onnx", 100, 3.0, max_slots=40)
    validated(dense, "structure 1", rules_wide)  # fewer neighbours with a shorter cutoff
    busy = Atoms("CH4", positions=[[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1], [0, 0, -1]])
    with pytest.raises(UserInputError, match=r"atom 0 has 4 neighbours within 5 Å; m/onnx holds at most 3"):
        check_neighbours(Structure.from_atoms(busy), half_list(Structure.from_atoms(busy), 5.0), "structure 0",
                         Rules.make("m/onnx", 100, 5.0, max_slots=3))


def test_unseen_elements_warn_refuse_allow():
    hf = Atoms("HF", positions=[[0, 0, 0], [0.92, 0, 0]])
    with pytest.warns(UnseenElementWarning, match=r"structure 3 \(HF\) contains F \(Z=9\), absent from the training "
                                                  r"data of m/eager: its results are extrapolation"):
        validated(hf, "structure 3", Rules.make("m/eager", 100, 5.0, [1, 6, 7, 8]))
    with pytest.raises(UserInputError, match=r"contains F \(Z=9\).*use unseen_elements='warn' or 'allow'"):
        validated(hf, "structure 3", Rules.make("m/eager", 100, 5.0, [1, 6, 7, 8], "refuse"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        validated(hf, "structure 3", Rules.make("m/eager", 100, 5.0, [1, 6, 7, 8], "allow"))
        validated(hf, "structure 3", Rules.make("m/eager", 100, 5.0, None, "refuse"))  # unknown: not checked
        validated(Atoms("CH", positions=[[0, 0, 0], [1.1, 0, 0]]), "structure 3",
                  Rules.make("m/eager", 100, 5.0, [1, 6, 7, 8], "refuse"))


def test_only_ase_atoms_or_structures_are_taken():
    with pytest.raises(UserInputError, match="structure 2 is a str, not an ase.Atoms"):
        as_structure("H2O", "structure 2")
    with pytest.raises(UserInputError, match="structure 0 is a dict, not an ase.Atoms"):
        as_structure({"numbers": [1]}, "structure 0")
    structure = Structure.of([1, 1], [[0, 0, 0], [0.74, 0, 0]])
    assert as_structure(structure, "structure 0") is structure
    converted = as_structure(Atoms("H2", positions=[[0, 0, 0], [0.74, 0, 0]], cell=[3, 3, 3], pbc=[1, 0, 1]),
                             "structure 0")
    np.testing.assert_array_equal(converted.pbc, [True, False, True])
    np.testing.assert_array_equal(converted.cell, np.diag([3.0, 3.0, 3.0]))


def test_validated_gives_the_half_list_of_the_requested_cutoff():
    atoms = Atoms("C3", positions=[[0, 0, 0], [1.5, 0, 0], [5.5, 0, 0]])
    structure, half = validated(atoms, "structure 0", RULES)
    assert len(half.i) == 2  # 0-1 and 1-2 (4 Å); 0-2 is 5.5 Å
    _, wide = validated(atoms, "structure 0", RULES, list_cutoff=6.0)
    assert len(wide.i) == 3
