"""The molecule enumerator (deploycc/data/enumerate.py) and the molecules.txt it ships."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys

import pytest

pytest.importorskip("rdkit")

from rdkit import Chem  # noqa: E402

from deploycc.data import enumerate as enum  # noqa: E402
from deploycc.data.generate import embed, read_smiles  # noqa: E402

SHIPPED_COUNT, SHIPPED_SEED = 1200, 0
HCNO = {1, 6, 7, 8}


@pytest.fixture(scope="module")
def ranked() -> list[tuple[str, str]]:
    return enum.ranking(SHIPPED_SEED)


@pytest.fixture(scope="module")
def shipped() -> list[tuple[str, str]]:
    return read_smiles(enum.MOLECULES_FILE)


@pytest.fixture(scope="module")
def curated_smiles() -> set[str]:
    return {Chem.MolToSmiles(Chem.MolFromSmiles(s)) for s, _ in read_smiles()}


def _elements(smiles: str) -> set[int]:
    mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
    return {a.GetAtomicNum() for a in mol.GetAtoms()}


def _size(smiles: str) -> int:
    return Chem.AddHs(Chem.MolFromSmiles(smiles)).GetNumAtoms()


def _digest(pairs) -> str:
    return hashlib.sha256("\n".join(f"{s} {n}" for s, n in pairs).encode()).hexdigest()


def test_same_seed_same_list_in_another_process(ranked):
    """Another interpreter, with another hash seed, enumerates exactly the same list."""
    code = ("import hashlib; from deploycc.data.enumerate import enumerate_molecules as e; "
            "print(hashlib.sha256('\\n'.join(f'{s} {n}' for s, n in e(1200, 0)).encode()).hexdigest())")
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == _digest(ranked[:1200])
    assert enum.enumerate_molecules(1200, 0) == ranked[:1200]  # and the same again in this process


def test_prefix_property_and_count(ranked):
    assert enum.enumerate_molecules(300, 0) == ranked[:300]
    assert len(enum.enumerate_molecules(5000, 0)) == 5000
    assert len(ranked) > 5000


def test_no_duplicates_and_canonical(ranked):
    smiles = [s for s, _ in ranked]
    assert len(set(smiles)) == len(smiles)
    for s in smiles[:1500]:
        assert Chem.MolToSmiles(Chem.MolFromSmiles(s)) == s


def test_only_allowed_elements_neutral_closed_shell(ranked):
    for s, name in ranked[:2000]:
        mol = Chem.MolFromSmiles(s)
        assert {a.GetAtomicNum() for a in Chem.AddHs(mol).GetAtoms()} <= set(enum.ALLOWED), name
        assert Chem.GetFormalCharge(mol) == 0, name
        assert all(a.GetNumRadicalElectrons() == 0 for a in mol.GetAtoms()), name
        assert " " not in name and not name.startswith("#")


def test_sizes_within_bounds(ranked, curated_smiles):
    sizes = [_size(s) for s, _ in ranked[:2000]]
    assert min(sizes) >= enum.MIN_ATOMS
    for (s, name), n in zip(ranked[:2000], sizes):
        assert n <= enum.MAX_ATOMS or s in curated_smiles, (name, n)
    assert max(sizes) >= 40 and sum(n <= 10 for n in sizes) >= 20


def test_curated_molecules_come_first(ranked, curated_smiles):
    head = {s for s, _ in ranked[:len(curated_smiles)]}
    assert head == curated_smiles


def test_elements_filter_for_an_hcno_teacher():
    pairs = enum.enumerate_molecules(1200, 0, elements=HCNO)
    assert len(pairs) >= 600
    assert all(_elements(s) <= HCNO for s, _ in pairs)
    assert len({s for s, _ in pairs}) == len(pairs)
    no_n = enum.enumerate_molecules(200, 0, elements={1, 6, 8})
    assert no_n and all(7 not in _elements(s) for s, _ in no_n)


def test_selection_is_balanced(ranked):
    stats = enum.molecule_stats(ranked[:1200])
    assert stats["count"] == 1200
    assert stats["hcno_only"] >= 600
    for symbol in ("F", "P", "S", "Cl"):
        assert stats["elements"][symbol] >= 100, (symbol, stats)
    assert sum(stats["sizes"].values()) == 1200
    for key in ("1-10", "11-20", "21-30", "31-40", "41-50"):
        assert stats["sizes"].get(key, 0) >= 50, stats


def test_molecule_stats_counts():
    stats = enum.molecule_stats([("CCO", "ethanol"), ("ClCCl", "dcm"), ("c1ccccc1", "benzene")])
    assert stats["count"] == 3
    assert stats["elements"]["H"] == 3 and stats["elements"]["Cl"] == 1 and stats["elements"]["O"] == 1
    assert stats["sizes"] == {"1-10": 2, "11-20": 1}
    assert stats["hcno_only"] == 2


def test_g2_molecules_are_neutral_closed_shell():
    pairs = enum.g2_smiles()
    names = {n for _, n in pairs}
    assert len(pairs) >= 50
    assert {"g2_CH4", "g2_C6H6", "g2_CH3CH2OH", "g2_PH3"} <= names
    assert not names & {"g2_CH3", "g2_OH", "g2_NO", "g2_O2", "g2_SiH4", "g2_LiF"}  # radicals, other elements


def test_shipped_file_is_the_regeneration(ranked, shipped):
    """molecules.txt is what `deploycc data molecules` writes: the ranking less the molecules its
    header lists as failing to embed, cut at 1,200."""
    dropped = {s for s, _ in enum.read_dropped()}
    assert len(dropped) < 50
    expected = [p for p in ranked if p[0] not in dropped][:SHIPPED_COUNT]
    assert shipped == expected


def test_shipped_file_counts(shipped, curated_smiles):
    text = enum.MOLECULES_FILE.read_text()
    header = [line for line in text.splitlines() if line.startswith("#")]
    assert text.startswith("#") and any("deploycc data molecules" in line for line in header)
    assert len(text.encode()) < 250_000
    assert len(shipped) >= 1200
    smiles = [s for s, _ in shipped]
    assert len(set(smiles)) == len(smiles)
    assert all(Chem.MolToSmiles(Chem.MolFromSmiles(s)) == s for s in smiles)
    assert sum(_elements(s) <= HCNO for s in smiles) >= 600
    assert curated_smiles <= set(smiles)


def test_sample_of_shipped_molecules_embeds(shipped):
    for smiles, name in shipped[::len(shipped) // 20][:20]:
        atoms = embed(smiles, 0)
        assert atoms is not None, name
        assert len(atoms) == _size(smiles)
