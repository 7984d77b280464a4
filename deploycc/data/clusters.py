"""Molecular clusters from dotted SMILES ("O.O.O", "CCO.O.O.O"): the condensed-phase frames a molecule list
can hold.  Each fragment is embedded alone (RDKit, as `generate.embed`), then the fragments are packed at
random orientations into a sphere at about liquid density, no two atoms of different fragments closer than
`MIN_CONTACT` (heavy atoms: `MIN_HEAVY_CONTACT`), the first fragment (the solute) at the centre.

The shipped list `clusters.txt` holds water clusters of 2-24 molecules and small solutes in 4-16 waters;
`deploycc distil --clusters` samples them next to the molecules, split by cluster on its own so that the
molecule split stays what it was.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

CLUSTERS_FILE = Path(__file__).with_name("clusters.txt")
DENSITY = 1.0  # g/cm³: the packing sphere holds the cluster's mass at this density
AMU_PER_A3 = 0.602214  # 1 g/cm³ in amu/Å³
MIN_CONTACT = 1.7  # Å between atoms of different fragments (a short hydrogen bond is 1.6-1.8 Å H···O)
MIN_HEAVY_CONTACT = 2.6  # Å between heavy atoms of different fragments
TRIES = 400  # placements tried per fragment before the sphere grows by 5 %


def is_cluster(smiles: str) -> bool:
    """A SMILES of more than one fragment."""
    return "." in smiles


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    """A uniformly random rotation matrix (QR of a Gaussian matrix, signs fixed)."""
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


def _fits(placed_pos: np.ndarray, placed_heavy: np.ndarray, pos: np.ndarray, heavy: np.ndarray) -> bool:
    d = np.linalg.norm(placed_pos[:, None, :] - pos[None, :, :], axis=-1)  # small clusters: a few hundred atoms
    if d.min() < MIN_CONTACT:
        return False
    both = placed_heavy[:, None] & heavy[None, :]
    return not both.any() or d[both].min() >= MIN_HEAVY_CONTACT


def pack(fragments: list, seed: int):
    """ase.Atoms of the fragments (ase.Atoms each) packed into a sphere at `DENSITY`; None if they do not fit."""
    from ase import Atoms

    rng = np.random.default_rng(seed)
    mass = sum(float(f.get_masses().sum()) for f in fragments)
    radius = (3.0 * mass / (DENSITY * AMU_PER_A3) / (4.0 * np.pi)) ** (1.0 / 3.0)
    first = fragments[0].positions - fragments[0].positions.mean(0)
    positions, heavy = [first], [fragments[0].numbers > 1]
    for fragment in fragments[1:]:
        local = fragment.positions - fragment.positions.mean(0)
        for attempt in range(TRIES * 20):
            if attempt and attempt % TRIES == 0:
                radius *= 1.05
            direction = rng.normal(size=3)
            centre = direction / np.linalg.norm(direction) * radius * rng.uniform() ** (1.0 / 3.0)
            trial = local @ random_rotation(rng).T + centre
            if _fits(np.concatenate(positions), np.concatenate(heavy), trial, fragment.numbers > 1):
                positions.append(trial)
                heavy.append(fragment.numbers > 1)
                break
        else:
            return None
    numbers = np.concatenate([f.numbers for f in fragments])
    return Atoms(numbers=numbers, positions=np.concatenate(positions))


def embed_fragments(smiles: str, seed: int) -> list | None:
    """Each fragment of a dotted SMILES embedded alone (ase.Atoms each); None if RDKit fails on one."""
    from .generate import embed

    fragments = []
    for k, part in enumerate(smiles.split(".")):
        atoms = embed(part, seed + 7 * k)
        if atoms is None:
            return None
        fragments.append(atoms)
    return fragments


def embed_cluster(smiles: str, seed: int):
    """A cluster of the dotted SMILES' fragments (each embedded alone), as ase.Atoms; None if RDKit fails."""
    fragments = embed_fragments(smiles, seed)
    return None if fragments is None else pack(fragments, seed)


def read_clusters(path: Path = CLUSTERS_FILE) -> list[tuple[str, str]]:
    """(dotted SMILES, name) pairs of a cluster list (the format of the molecule lists)."""
    from .generate import read_smiles

    return read_smiles(path)


def cluster_list(seed: int = 0) -> list[tuple[str, str]]:
    """The shipped list: water clusters (H2O)n for n = 2-24, and each solute of `SOLUTES` in 4, 8 and 16 waters."""
    pairs = [(".".join(["O"] * n), f"water{n}") for n in range(2, 25)]
    for smiles, name in SOLUTES:
        for n in (4, 8, 16):
            pairs.append((".".join([smiles] + ["O"] * n), f"{name}+{n}water"))
    return pairs


SOLUTES = (("CO", "methanol"), ("CCO", "ethanol"), ("CC(=O)O", "acetic_acid"), ("CC(N)=O", "acetamide"),
           ("NC(=O)N", "urea"), ("CN", "methylamine"), ("C1CCOC1", "thf"), ("c1ccccc1", "benzene"),
           ("c1ccncc1", "pyridine"), ("OC(=O)C(N)C", "alanine"), ("CC(C)=O", "acetone"), ("C#N", "hcn"),
           ("NCC(=O)O", "glycine"), ("c1ccc(O)cc1", "phenol"), ("CC#N", "acetonitrile"))
