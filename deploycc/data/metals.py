"""Periodic metal structures (bulk, alloys, strain, vacancies, slabs, clusters, MD) labelled by a teacher.

Every "system" (a group: one starting structure) yields rattled frames and frames of a short Langevin run
of the teacher itself at 300-1500 K, so splits by group never share a trajectory.  Sizes are 32-200 atoms.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np

from .generate import MAX_FORCE, LabelReport, thermalize
from .schema import Structures, from_atoms, split_by_group
from .teachers import Teacher

METALS = ("Al", "Cu", "Ag", "Au", "Ni", "Pd", "Pt")
TEMPERATURES = (300.0, 600.0, 900.0, 1200.0, 1500.0)


@dataclass(frozen=True)
class MetalsSettings:
    """How many of each kind of system to make, and how many frames each gives."""

    bulk: int = 3  # per element: fcc, bcc, hcp cells of different sizes and strains
    alloys: int = 20
    vacancies: int = 10
    slabs: int = 12
    clusters: int = 6
    rattles: int = 6
    md_frames: int = 14
    md_interval: int = 5  # teacher-MD steps (2 fs) between kept frames
    seed: int = 0


def _lattice_constant(symbol: str) -> float:
    from ase.data import atomic_numbers, reference_states

    return float(reference_states[atomic_numbers[symbol]]["a"])


def _bulk(symbol: str, kind: str, rng: np.random.Generator, a: float | None = None):
    """A 32-200 atom supercell of an fcc, bcc or hcp crystal at the fcc atomic volume (bcc/hcp strained)."""
    from ase.build import bulk

    a_fcc = a or _lattice_constant(symbol)
    if kind == "fcc":
        cell = bulk(symbol, "fcc", a=a_fcc, cubic=True)
        reps = [(2, 2, 2), (3, 3, 3), (3, 3, 4), (2, 3, 4)][rng.integers(4)]
    elif kind == "bcc":
        cell = bulk(symbol, "bcc", a=a_fcc * 0.5 ** (1 / 3), cubic=True)  # 2 atoms per a^3 instead of 4
        reps = [(3, 3, 3), (4, 4, 4), (3, 4, 4)][rng.integers(3)]
    else:
        nn = a_fcc / np.sqrt(2)
        cell = bulk(symbol, "hcp", a=nn, c=nn * np.sqrt(8 / 3))
        reps = [(4, 4, 3), (4, 4, 4), (3, 4, 5)][rng.integers(3)]
    return cell.repeat(reps)


def _strain(atoms, rng: np.random.Generator, scale: float = 0.04):
    """Random symmetric strain up to `scale` (volume and shear), atoms moved with the cell."""
    eps = rng.uniform(-scale, scale, (3, 3))
    eps = 0.5 * (eps + eps.T)
    atoms.set_cell(atoms.cell.array @ (np.eye(3) + eps), scale_atoms=True)
    return atoms


def _alloy(rng: np.random.Generator):
    """A random binary fcc alloy at the Vegard lattice constant."""
    first, second = rng.choice(METALS, size=2, replace=False)
    fraction = rng.uniform(0.1, 0.5)
    a = (1 - fraction) * _lattice_constant(first) + fraction * _lattice_constant(second)
    atoms = _bulk(first, "fcc", rng, a=a)
    swap = rng.random(len(atoms)) < fraction
    symbols = np.array(atoms.get_chemical_symbols())
    symbols[swap] = second
    atoms.set_chemical_symbols(list(symbols))
    return atoms


def _vacancy(rng: np.random.Generator):
    atoms = _bulk(str(rng.choice(METALS)), "fcc", rng)
    for _ in range(int(rng.integers(1, 4))):
        del atoms[int(rng.integers(len(atoms)))]
    return atoms


def _slab(rng: np.random.Generator):
    """An fcc(111), (100) or (110) slab with 6-8 Angstrom of vacuum on each side, periodic in-plane only."""
    from ase.build import fcc100, fcc110, fcc111

    symbol = str(rng.choice(METALS))
    build = [fcc111, fcc100, fcc110][rng.integers(3)]
    size = [(4, 4, 4), (3, 3, 5), (4, 4, 5), (3, 4, 6)][rng.integers(4)]
    atoms = build(symbol, size=size, a=_lattice_constant(symbol), vacuum=float(rng.uniform(6, 8)))
    atoms.pbc = (True, True, False)
    return atoms


def _cluster(rng: np.random.Generator):
    """A non-periodic nanoparticle (octahedron, icosahedron or decahedron) of 38-147 atoms."""
    from ase.cluster import Decahedron, Icosahedron, Octahedron

    symbol = str(rng.choice(METALS))
    a = _lattice_constant(symbol)
    kind = int(rng.integers(3))
    if kind == 0:
        atoms = Octahedron(symbol, length=int(rng.integers(4, 6)), cutoff=int(rng.integers(0, 2)), latticeconstant=a)
    elif kind == 1:
        atoms = Icosahedron(symbol, noshells=int(rng.integers(3, 5)), latticeconstant=a)
    else:
        atoms = Decahedron(symbol, p=int(rng.integers(3, 5)), q=2, r=int(rng.integers(0, 2)), latticeconstant=a)
    atoms.center(vacuum=5.0)
    atoms.pbc = False
    return atoms


def systems(settings: MetalsSettings) -> Iterator[tuple[str, object]]:
    """(name, atoms) of every starting structure."""
    rng = np.random.default_rng(settings.seed)
    for symbol in METALS:
        for k in range(settings.bulk):
            kind = ("fcc", "bcc", "hcp")[k % 3]
            yield f"{symbol}-{kind}-{k}", _strain(_bulk(symbol, kind, rng), rng)
    makers: list[tuple[str, int, Callable]] = [("alloy", settings.alloys, _alloy),
                                               ("vacancy", settings.vacancies, _vacancy),
                                               ("slab", settings.slabs, _slab), ("cluster", settings.clusters, _cluster)]
    for name, count, make in makers:
        for k in range(count):
            atoms = make(rng)
            yield f"{name}-{k}-{atoms.get_chemical_formula()}", _strain(atoms, rng, 0.02) if atoms.pbc.all() else atoms


def _frames(atoms, teacher: Teacher, settings: MetalsSettings, rng: np.random.Generator) -> Iterator[object]:
    """Rattled copies, then frames of a teacher Langevin run at a random temperature in 300-1500 K."""
    from ase import units
    from ase.md.langevin import Langevin

    for _ in range(settings.rattles):
        frame = atoms.copy()
        frame.positions += rng.normal(0.0, rng.uniform(0.02, 0.10), frame.positions.shape)
        yield frame
    if settings.md_frames <= 0:
        return
    md_atoms = atoms.copy()
    md_atoms.calc = teacher.make_calculator()
    temperature = float(rng.choice(TEMPERATURES))
    thermalize(md_atoms, temperature, rng)
    dynamics = Langevin(md_atoms, 2.0 * units.fs, temperature_K=temperature, friction=0.02, fixcm=False, rng=rng)
    for _ in range(settings.md_frames):
        dynamics.run(settings.md_interval)
        frame = md_atoms.copy()
        frame.calc = None
        yield frame


def generate_metals(teacher: Teacher, settings: MetalsSettings,
                    on_system: Callable[[str], None] = lambda name: None) -> tuple[Structures, LabelReport]:
    """Label every frame of every system; failures are skipped and counted."""
    rng = np.random.default_rng(settings.seed + 1)
    report = LabelReport()
    started = time.perf_counter()
    labelled, groups = [], []
    for group, (name, atoms) in enumerate(systems(settings)):
        report.molecules += 1
        for frame in _frames(atoms, teacher, settings, rng):
            try:
                frame.calc = teacher.make_calculator()
                forces = frame.get_forces()
                frame.get_potential_energy()
            except Exception as exc:  # noqa: BLE001 - a teacher failure is counted, not fatal
                report.skip(f"{type(exc).__name__}: {str(exc)[:60]}")
                continue
            if not np.all(np.isfinite(forces)) or np.abs(forces).max() > MAX_FORCE:
                report.skip(f"force above {MAX_FORCE:g} eV/Å or not finite")
                continue
            labelled.append(frame)
            groups.append(group)
            report.structures += 1
            report.atoms += len(frame)
            report.elements.update(int(z) for z in frame.numbers)
        on_system(name)
    data = from_atoms(labelled, group=np.asarray(groups, dtype=np.int64), require_labels=True)
    data.splits = split_by_group(data.group, (0.8, 0.1, 0.1), settings.seed)
    data.attrs.update({"teacher": teacher.name, "generator": "deploycc data metals", "kind": "periodic metals"})
    report.seconds = time.perf_counter() - started
    return data, report
