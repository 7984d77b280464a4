"""Structures for scaling benchmarks, built in code: water boxes, fcc copper, proteins from PDB files, and a
protein solvated in a periodic water box.

System specs (the `deploycc scale` option): `water:N` (a periodic box of about N atoms of water at
1 g/cm³, molecules on a grid with random orientations), `water-cluster:N` (the same cube of water without
periodic boundaries), `copper:N` (an fcc Cu supercell of about N atoms),
`file:PATH` (any ASE-readable file, or a PDB read by `read_pdb`), `solvated:PATH:BOX` (the structure of PATH
centred in a cubic periodic water box of BOX Å, waters within 2.4 Å of it removed).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import UserInputError

WATER_DENSITY = 0.0334  # molecules per Å³ at 1 g/cm³
VIRTUAL_SITES = ("MW", "EP", "LP")  # massless sites of 4- and 5-site water models in PDB files
PDB_ELEMENTS = {"H": 1, "C": 6, "N": 7, "O": 8, "S": 16, "P": 15, "F": 9}


def water_box(atoms: int, seed: int = 0):
    """A cubic periodic box of about `atoms` atoms of water."""
    from ase import Atoms
    from scipy.spatial.transform import Rotation

    side = max(1, round((atoms / 3) ** (1 / 3)))
    spacing = WATER_DENSITY ** (-1 / 3)
    water = np.array([[0.0, 0.0, 0.0], [0.9572, 0.0, 0.0], [-0.2400, 0.9266, 0.0]])  # O, H, H
    grid = (np.stack(np.meshgrid(*[np.arange(side)] * 3, indexing="ij"), -1).reshape(-1, 3) + 0.5) * spacing
    rotations = Rotation.random(len(grid), random_state=seed).as_matrix()
    positions = (np.einsum("kab,nb->kna", rotations, water) + grid[:, None, :]).reshape(-1, 3)
    return Atoms(numbers=[8, 1, 1] * len(grid), positions=positions, cell=[side * spacing] * 3, pbc=True)


def copper(atoms: int, rattle: float = 0.02, seed: int = 0):
    """A cubic fcc Cu supercell of about `atoms` atoms, rattled."""
    from ase.build import bulk

    side = max(1, round((atoms / 4) ** (1 / 3)))
    cell = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(side)
    cell.rattle(rattle, seed=seed)
    return cell


def read_pdb(path: Path):
    """A PDB file's atoms: elements from columns 77-78, else the atom name's first letter; virtual sites of
    water models skipped; CRYST1 as a periodic cell."""
    from ase import Atoms

    numbers, positions, cell = [], [], None
    for line in Path(path).read_text().splitlines():
        if line.startswith("CRYST1"):
            cell = [float(line[6:15]), float(line[15:24]), float(line[24:33])]
        if not line.startswith(("ATOM", "HETATM")):
            continue
        name = line[12:16].strip().lstrip("0123456789")
        if name.startswith(VIRTUAL_SITES):
            continue
        element = line[76:78].strip().capitalize() if len(line) >= 78 and line[76:78].strip() else name[:1]
        if element not in PDB_ELEMENTS:
            raise UserInputError(f"{path}: element '{element}' of atom '{name}' is not one of "
                                 f"{', '.join(PDB_ELEMENTS)}")
        numbers.append(PDB_ELEMENTS[element])
        positions.append([float(line[30:38]), float(line[38:46]), float(line[46:54])])
    if not numbers:
        raise UserInputError(f"{path} holds no ATOM/HETATM records")
    atoms = Atoms(numbers=numbers, positions=positions)
    if cell is not None:
        atoms.cell, atoms.pbc = np.diag(cell), True
    return atoms


def read_file(path: str | Path):
    path = Path(path)
    if not path.is_file():
        raise UserInputError(f"structure file {path} does not exist")
    if path.suffix.lower() == ".pdb":
        return read_pdb(path)
    import ase.io

    return ase.io.read(str(path))


def solvate(solute, box: float, seed: int = 0, clearance: float = 2.4):
    """`solute` centred in a cubic periodic water box of `box` Å, overlapping waters removed."""
    from scipy.spatial import cKDTree

    water = water_box(round(3 * WATER_DENSITY * box**3), seed)
    water.set_cell([box] * 3, scale_atoms=True)
    centred = solute.copy()
    centred.pbc = False
    centred.positions += box / 2 - solute.positions.mean(0)
    distance, _ = cKDTree(centred.positions).query(water.positions)
    keep = np.repeat((distance.reshape(-1, 3) > clearance).all(1), 3)
    out = centred + water[keep]
    out.cell, out.pbc = [box] * 3, True
    return out


def system(spec: str, seed: int = 0):
    """The structure a spec names (see the module docstring), with a label."""
    kind, _, rest = spec.partition(":")
    try:
        if kind == "water":
            return water_box(int(rest), seed)
        if kind == "water-cluster":
            cluster = water_box(int(rest), seed)
            cluster.pbc = False
            return cluster
        if kind == "copper":
            return copper(int(rest), seed=seed)
        if kind == "file":
            return read_file(rest)
        if kind == "solvated":
            path, _, box = rest.rpartition(":")
            return solvate(read_file(path), float(box), seed)
    except ValueError:
        pass
    raise UserInputError(f"bad system '{spec}': use water:N, water-cluster:N, copper:N, file:PATH or solvated:PATH:BOX")
