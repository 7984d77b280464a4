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


# --- periodic metals --------------------------------------------------------------------------------------------

SMALL_METALS = dict(bulk=1, alloys=1, vacancies=1, slabs=1, clusters=1, rattles=1, md_frames=1, md_interval=1)


def test_metal_systems_cover_bulk_alloys_vacancies_slabs_and_clusters():
    from deploycc.data.metals import METALS, MetalsSettings, systems

    made = list(systems(MetalsSettings(**SMALL_METALS)))
    names = [name for name, _ in made]
    assert len(made) == len(METALS) + 4
    assert [n.split("-")[0] for n in names[len(METALS):]] == ["alloy", "vacancy", "slab", "cluster"]
    by_kind = {name.split("-")[0]: atoms for name, atoms in made}
    assert by_kind["slab"].pbc.tolist() == [True, True, False] and not by_kind["cluster"].pbc.any()
    assert by_kind["alloy"].pbc.all() and len(set(by_kind["alloy"].get_chemical_symbols())) == 2
    assert all(20 <= len(atoms) <= 200 for _, atoms in made)
    again = [(n, a.positions) for n, a in systems(MetalsSettings(**SMALL_METALS))]
    assert [n for n, _ in again] == names  # seeded
    assert all(np.array_equal(p, a.positions) for (_, p), (_, a) in zip(again, made))


def test_small_metal_cells_stay_within_max_atoms_and_the_standard_ones_do_not():
    from deploycc.data.metals import MetalsSettings, systems

    counts = dict(bulk=3, alloys=12, vacancies=6, slabs=12, clusters=12)
    small = [len(atoms) for _, atoms in systems(MetalsSettings(**counts, max_atoms=48))]
    standard = [len(atoms) for _, atoms in systems(MetalsSettings(**counts))]
    assert len(small) == len(standard) == 21 + 42
    assert max(small) <= 55 and min(small) >= 29  # the 55-atom icosahedron is the smallest of its kind
    assert max(n for n in small if n != 55) <= 48
    assert max(standard) > 100 and np.mean(standard) > 1.5 * np.mean(small)


def test_alloy_fraction_sets_the_share_of_the_second_element_and_the_default_keeps_the_dataset():
    from deploycc.data.metals import MetalsSettings, parse_fraction_range, systems

    def minority_shares(settings: MetalsSettings) -> list[float]:
        shares = []
        for _, atoms in systems(settings):
            symbols = atoms.get_chemical_symbols()
            shares.append(min(symbols.count(s) for s in set(symbols)) / len(symbols))
        return shares

    counts = dict(bulk=0, alloys=60, vacancies=0, slabs=0, clusters=0, max_atoms=64, seed=3)
    concentrated = minority_shares(MetalsSettings(**counts, alloy_fraction=parse_fraction_range("0.45:0.5")))
    dilute = minority_shares(MetalsSettings(**counts, alloy_fraction=parse_fraction_range("0.1:0.15")))
    assert np.median(concentrated) > 0.38 and np.median(dilute) < 0.2  # per-atom draws spread around the target
    default = [a.positions for _, a in systems(MetalsSettings(**SMALL_METALS))]
    explicit = [a.positions for _, a in systems(MetalsSettings(**SMALL_METALS, alloy_fraction=(0.1, 0.5)))]
    assert all(np.array_equal(a, b) for a, b in zip(default, explicit))
    for bad in ("0.5:0.3", "0:0.5", "0.2:0.6", "0.3", "a:b", "nan:0.4"):
        with pytest.raises(UserInputError, match="--alloy-fraction"):
            parse_fraction_range(bad)


def test_a_metals_dataset_is_the_same_for_any_number_of_workers():
    from deploycc.data.metals import MetalsSettings, generate_metals

    settings = MetalsSettings(**{**SMALL_METALS, "md_frames": 2, "max_atoms": 32})
    here, _ = generate_metals(get_teacher("emt"), settings)
    spread, report = generate_metals(get_teacher("emt"), settings, workers=2)
    assert report.structures == len(spread) == len(here) == 3 * 11
    np.testing.assert_array_equal(spread.group, here.group)
    assert all(np.array_equal(a, b) for a, b in zip(spread.positions, here.positions))
    np.testing.assert_allclose(spread.energies, here.energies, rtol=0, atol=1e-10)
    other, _ = generate_metals(get_teacher("emt"), MetalsSettings(**{**SMALL_METALS, "md_frames": 2, "max_atoms": 32,
                                                                     "seed": 1}))
    assert not np.allclose(other.energies[:3], here.energies[:3])


def test_emt_labels_periodic_metals_split_by_system(tmp_path):
    from deploycc.data.metals import MetalsSettings, generate_metals
    from deploycc.data.schema import read_h5, write_h5

    data, report = generate_metals(get_teacher("emt"), MetalsSettings(**SMALL_METALS))
    assert report.molecules == 11 and report.skipped == 0
    assert report.structures == len(data) == 2 * 11  # one rattle and one MD frame per system
    assert report.atoms == sum(len(z) for z in data.numbers)
    assert np.isfinite(data.energies).all() and all(np.isfinite(f).all() for f in data.forces)
    assert data.pbc.any(axis=1).sum() == 2 * 10  # all but the cluster are periodic
    periodic = data.pbc.all(axis=1)
    assert all(abs(np.linalg.det(c)) > 1.0 for c in data.cells[periodic])
    groups = {name: set(data.group[idx].tolist()) for name, idx in data.splits.items()}
    assert not (groups["train"] & groups["val"]) and not (groups["train"] & groups["test"])
    assert not (groups["val"] & groups["test"]) and all(groups.values())
    path = tmp_path / "metals.h5"
    write_h5(data, path)
    back = read_h5(path)
    np.testing.assert_array_equal(back.pbc, data.pbc)
    np.testing.assert_array_equal(back.cells, data.cells)
    assert back.attrs["teacher"] == "emt" and back.attrs["kind"] == "periodic metals"


def test_metal_teacher_failures_are_skipped_and_counted():
    from deploycc.data.metals import MetalsSettings, generate_metals

    _FailsEveryOtherCall.calls = 0
    teacher = Teacher("flaky", _FailsEveryOtherCall, "test")
    settings = MetalsSettings(**{**SMALL_METALS, "md_frames": 0, "rattles": 2})
    data, report = generate_metals(teacher, settings)
    assert report.structures == len(data) and report.skipped > 0
    assert report.structures + report.skipped == 2 * 11
    assert sum(report.skipped_reasons.values()) == report.skipped
    assert all(reason.startswith("RuntimeError") for reason in report.skipped_reasons)


def test_a_teacher_that_labels_nothing_is_a_user_error():
    pytest.importorskip("rdkit")

    class Never(Calculator):
        implemented_properties = ["energy", "forces"]

        def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
            raise RuntimeError("no")

    with pytest.raises(UserInputError, match="labelled no structure"):
        generate_molecules([("O", "water")], Teacher("never", Never, "test"), rattles=2, md_frames=0)


def test_labelled_frames_carry_no_calculator_back():
    """A worker returns frames through pickle: the teacher's calculator (tblite holds C objects) stays behind."""
    import pickle

    from deploycc.data.generate import label_molecule
    from deploycc.data.teachers import get_teacher

    frames, report = label_molecule((0, "CO"), get_teacher("emt"), rattles=2, md_frames=1, seed=0)
    assert report.molecules == 1 and len(frames) == 3
    assert all(frame.calc is None for frame, _e, _f in frames)
    restored = pickle.loads(pickle.dumps(frames))
    assert np.array_equal(restored[0][2], frames[0][2])


def test_normal_mode_frames_follow_the_rattles_of_the_same_seed():
    pytest.importorskip("rdkit")
    from deploycc.data.generate import label_molecule

    emt = get_teacher("emt")
    plain, _ = label_molecule((0, "CCO"), emt, rattles=3, md_frames=0, seed=4)
    mixed, report = label_molecule((0, "CCO"), emt, rattles=3, md_frames=0, seed=4, normal_modes=4)
    assert report.molecules == 1 and len(mixed) == 7
    assert all(np.array_equal(a.positions, b.positions) for (a, _, _), (b, _, _) in zip(plain, mixed[:3]))
    masses = mixed[0][0].get_masses()[:, None]
    centres = [(masses * frame.positions).sum(0) / masses.sum() for frame, _, _ in mixed[3:]]
    assert np.allclose(centres, centres[0], atol=1e-8)  # normal-mode frames share a centre of mass
    rattle_centres = [(masses * frame.positions).sum(0) / masses.sum() for frame, _, _ in mixed[:3]]
    assert not np.allclose(rattle_centres, centres[0], atol=1e-4)  # rattles do not
    assert all(np.isfinite(e) and np.isfinite(f).all() for _, e, f in mixed)
