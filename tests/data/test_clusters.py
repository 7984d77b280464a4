"""Molecular clusters from dotted SMILES: packing without clashes, fragments intact, the shipped list, and a
split that leaves the molecules' split as it was."""

import numpy as np
import pytest

pytest.importorskip("rdkit")

from deploycc.data import clusters  # noqa: E402
from deploycc.data.generate import embed  # noqa: E402
from deploycc.train.frames import split_molecules  # noqa: E402


def _fragments(smiles, seed=0):
    return [embed(part, seed + 7 * k) for k, part in enumerate(smiles.split("."))]


@pytest.mark.parametrize("smiles", ["O.O", "O.O.O.O.O.O.O.O.O.O.O.O", "CCO.O.O.O.O.O.O.O.O", "c1ccccc1.O.O.O.O"])
def test_packed_fragments_keep_their_shape_and_never_clash(smiles):
    atoms = clusters.embed_cluster(smiles, seed=3)
    fragments = _fragments(smiles, seed=3)
    sizes = [len(f) for f in fragments]
    assert atoms.numbers.tolist() == np.concatenate([f.numbers for f in fragments]).tolist()
    starts = np.concatenate([[0], np.cumsum(sizes)])
    owner = np.repeat(np.arange(len(sizes)), sizes)
    d = np.linalg.norm(atoms.positions[:, None] - atoms.positions[None], axis=-1)
    for k, fragment in enumerate(fragments):  # rigid placement: each fragment's internal distances unchanged
        own = slice(starts[k], starts[k + 1])
        inner = np.linalg.norm(fragment.positions[:, None] - fragment.positions[None], axis=-1)
        assert np.allclose(d[own, own], inner, atol=1e-9)
    between = owner[:, None] != owner[None, :]
    heavy = (atoms.numbers > 1)[:, None] & (atoms.numbers > 1)[None, :]
    assert d[between].min() >= clusters.MIN_CONTACT
    assert d[between & heavy].min() >= clusters.MIN_HEAVY_CONTACT
    # packed, not scattered: every fragment within the sphere the density gives, grown at most a few times
    mass = atoms.get_masses().sum()
    radius = (3 * mass / (clusters.DENSITY * clusters.AMU_PER_A3) / (4 * np.pi)) ** (1 / 3)
    centres = np.array([atoms.positions[starts[k]:starts[k + 1]].mean(0) for k in range(len(sizes))])
    assert np.linalg.norm(centres - centres[0], axis=1).max() <= 2.0 * radius


def test_the_same_seed_packs_the_same_cluster():
    a, b, c = (clusters.embed_cluster("O.O.O.O.O", s) for s in (1, 1, 2))
    assert np.array_equal(a.positions, b.positions) and not np.allclose(a.positions, c.positions)


def test_embed_takes_a_dotted_smiles_as_a_cluster():
    atoms = embed("O.O.O", 0)
    assert atoms.get_chemical_formula() == "H6O3"


def test_a_fragment_rdkit_cannot_read_fails_the_cluster():
    assert clusters.embed_cluster("O.C1CC", 0) is None


def test_the_shipped_list_is_what_cluster_list_makes_and_every_entry_embeds():
    shipped = clusters.read_clusters()
    assert shipped == clusters.cluster_list()
    assert all(clusters.is_cluster(smi) for smi, _ in shipped)
    assert all(embed(smi, 0) is not None for smi, _ in shipped[::5])


def test_clusters_are_split_among_themselves_and_leave_the_molecule_split_alone():
    molecules = [(s, s) for s in ("C", "CC", "CCC", "CO", "CCO", "CN", "CCN", "C=O", "CC=O", "OCO", "NCO", "COC")]
    with_clusters = molecules + clusters.cluster_list()[:20]
    alone, mixed = split_molecules(molecules, seed=4), split_molecules(with_clusters, seed=4)
    for name in ("train", "val", "test"):
        assert [p for p in mixed[name] if "." not in p[1]] == alone[name]
        assert any("." in smi for _, smi in mixed[name])  # every split gets clusters
