"""Periodic metal structures (bulk, alloys, strain, vacancies, slabs, clusters, MD) labelled by a teacher.

Every "system" (a group: one starting structure) yields rattled frames and frames of a short Langevin run
of the teacher itself at 300-1500 K, so splits by group never share a trajectory.  Sizes are 32-200 atoms,
or 32 to `max_atoms` for a costly teacher (SevenNet-0's cost grows with atoms: more, smaller systems per
teacher-second).  Each system's frames are seeded by (seed, system) alone, so a dataset is the same however
its systems are shared among worker processes (`--workers`) or Dask workers (`--cluster`).
"""

from __future__ import annotations

import time
from functools import partial
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import numpy as np

from ..errors import UserInputError
from .generate import LabelReport, label_frame, merge_report, thermalize
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
    max_atoms: int | None = None  # None: the standard 32-200 atom cells; else small cells of 32 to max_atoms
    alloy_fraction: tuple[float, float] = (0.1, 0.5)  # share of an alloy's second element, drawn uniformly


def parse_fraction_range(text: str) -> tuple[float, float]:
    """`MIN:MAX` of `--alloy-fraction` as two floats with 0 < MIN <= MAX <= 0.5; else one line."""
    try:
        low, high = map(float, text.split(":"))
    except ValueError:  # not two numbers
        low = high = float("nan")
    if not (0.0 < low <= high <= 0.5):
        raise UserInputError(f"--alloy-fraction must be MIN:MAX with 0 < MIN <= MAX <= 0.5, got {text!r}")
    return low, high


def _lattice_constant(symbol: str) -> float:
    from ase.data import atomic_numbers, reference_states

    return float(reference_states[atomic_numbers[symbol]]["a"])


# Supercell repetitions of the cubic fcc (4 atoms), cubic bcc (2) and hcp (2) cells: the standard sizes, and the
# small ones that `max_atoms` picks from (32-72 atoms).
_REPS = {"fcc": [(2, 2, 2), (3, 3, 3), (3, 3, 4), (2, 3, 4)], "bcc": [(3, 3, 3), (4, 4, 4), (3, 4, 4)],
         "hcp": [(4, 4, 3), (4, 4, 4), (3, 4, 5)]}
_SMALL_REPS = {"fcc": [(2, 2, 2), (2, 2, 3), (2, 3, 3)], "bcc": [(2, 3, 3), (3, 3, 3), (2, 3, 4), (2, 4, 4)],
               "hcp": [(3, 3, 2), (3, 3, 3), (4, 4, 2), (3, 4, 3)]}
_SLAB_SIZES = [(4, 4, 4), (3, 3, 5), (4, 4, 5), (3, 4, 6)]
_SMALL_SLAB_SIZES = [(3, 3, 4), (3, 3, 5), (3, 4, 4), (4, 4, 4)]
_ATOMS_PER_CELL = {"fcc": 4, "bcc": 2, "hcp": 2, "slab": 1}


def _pick(kind: str, rng: np.random.Generator, max_atoms: int | None) -> tuple[int, int, int]:
    """Repetitions (or slab size) of `kind`: a standard one, or a small one of at most `max_atoms` atoms."""
    if max_atoms is None:
        table = _SLAB_SIZES if kind == "slab" else _REPS[kind]
    else:
        small = _SMALL_SLAB_SIZES if kind == "slab" else _SMALL_REPS[kind]
        table = [r for r in small if _ATOMS_PER_CELL[kind] * int(np.prod(r)) <= max_atoms] or small[:1]
    return table[rng.integers(len(table))]


def _bulk(symbol: str, kind: str, rng: np.random.Generator, a: float | None = None, max_atoms: int | None = None):
    """A supercell of an fcc, bcc or hcp crystal at the fcc atomic volume (bcc/hcp strained)."""
    from ase.build import bulk

    a_fcc = a or _lattice_constant(symbol)
    if kind == "fcc":
        cell = bulk(symbol, "fcc", a=a_fcc, cubic=True)
    elif kind == "bcc":
        cell = bulk(symbol, "bcc", a=a_fcc * 0.5 ** (1 / 3), cubic=True)  # 2 atoms per a^3 instead of 4
    else:
        nn = a_fcc / np.sqrt(2)
        cell = bulk(symbol, "hcp", a=nn, c=nn * np.sqrt(8 / 3))
    return cell.repeat(_pick(kind, rng, max_atoms))


def _strain(atoms, rng: np.random.Generator, scale: float = 0.04):
    """Random symmetric strain up to `scale` (volume and shear), atoms moved with the cell."""
    eps = rng.uniform(-scale, scale, (3, 3))
    eps = 0.5 * (eps + eps.T)
    atoms.set_cell(atoms.cell.array @ (np.eye(3) + eps), scale_atoms=True)
    return atoms


def _alloy(rng: np.random.Generator, max_atoms: int | None = None, fraction_range: tuple[float, float] = (0.1, 0.5)):
    """A random binary fcc alloy at the Vegard lattice constant, `fraction_range` of it the second element."""
    first, second = rng.choice(METALS, size=2, replace=False)
    fraction = rng.uniform(*fraction_range)
    a = (1 - fraction) * _lattice_constant(first) + fraction * _lattice_constant(second)
    atoms = _bulk(first, "fcc", rng, a=a, max_atoms=max_atoms)
    swap = rng.random(len(atoms)) < fraction
    symbols = np.array(atoms.get_chemical_symbols())
    symbols[swap] = second
    atoms.set_chemical_symbols(list(symbols))
    return atoms


def _vacancy(rng: np.random.Generator, max_atoms: int | None = None):
    atoms = _bulk(str(rng.choice(METALS)), "fcc", rng, max_atoms=max_atoms)
    for _ in range(int(rng.integers(1, 4))):
        del atoms[int(rng.integers(len(atoms)))]
    return atoms


def _slab(rng: np.random.Generator, max_atoms: int | None = None):
    """An fcc(111), (100) or (110) slab with 6-8 Angstrom of vacuum on each side, periodic in-plane only."""
    from ase.build import fcc100, fcc110, fcc111

    symbol = str(rng.choice(METALS))
    build = [fcc111, fcc100, fcc110][rng.integers(3)]
    size = _pick("slab", rng, max_atoms)
    atoms = build(symbol, size=size, a=_lattice_constant(symbol), vacuum=float(rng.uniform(6, 8)))
    atoms.pbc = (True, True, False)
    return atoms


def _cluster(rng: np.random.Generator, max_atoms: int | None = None):
    """A non-periodic nanoparticle (octahedron, icosahedron or decahedron) of 38-147 atoms (38-55 small)."""
    from ase.cluster import Decahedron, Icosahedron, Octahedron

    symbol = str(rng.choice(METALS))
    a = _lattice_constant(symbol)
    kind = int(rng.integers(3))
    big = 1 if max_atoms is None else 0  # the small ones: 38/44-atom octahedra, the 55-atom icosahedron, 39 decahedron
    if kind == 0:
        atoms = Octahedron(symbol, length=int(rng.integers(4, 5 + big)), cutoff=int(rng.integers(0, 2)),
                           latticeconstant=a)
    elif kind == 1:
        atoms = Icosahedron(symbol, noshells=int(rng.integers(3, 4 + big)), latticeconstant=a)
    else:
        atoms = Decahedron(symbol, p=int(rng.integers(3, 4 + big)), q=2, r=int(rng.integers(0, 1 + big)),
                           latticeconstant=a)
    atoms.center(vacuum=5.0)
    atoms.pbc = False
    return atoms


def systems(settings: MetalsSettings) -> Iterator[tuple[str, object]]:
    """(name, atoms) of every starting structure."""
    rng = np.random.default_rng(settings.seed)
    for symbol in METALS:
        for k in range(settings.bulk):
            kind = ("fcc", "bcc", "hcp")[k % 3]
            yield f"{symbol}-{kind}-{k}", _strain(_bulk(symbol, kind, rng, max_atoms=settings.max_atoms), rng)
    alloy = partial(_alloy, fraction_range=settings.alloy_fraction)
    makers: list[tuple[str, int, Callable]] = [("alloy", settings.alloys, alloy),
                                               ("vacancy", settings.vacancies, _vacancy),
                                               ("slab", settings.slabs, _slab), ("cluster", settings.clusters, _cluster)]
    for name, count, make in makers:
        for k in range(count):
            atoms = make(rng, settings.max_atoms)
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


def label_system(item: tuple[int, Any], teacher: Teacher, settings: MetalsSettings) -> tuple[list[tuple], LabelReport]:
    """(frame, energy, forces) of every frame of system `group` that the teacher labels, seeded by (seed, group)
    alone; failures are counted in the report."""
    group, atoms = item
    rng = np.random.default_rng([settings.seed + 1, group])
    report, out = LabelReport(), []
    for frame in _frames(atoms, teacher, settings, rng):
        labels = label_frame(frame, teacher, report)
        frame.calc = None  # the labels are kept; a teacher's calculator may not pickle back from a worker
        if labels is not None:
            out.append((frame, *labels))
    report.molecules = 1
    return out, report


def _single_threaded() -> None:
    """A labelling process: one thread (set before the teacher loads torch), Ctrl-C left to the parent."""
    import os
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)


def _labelled_systems(items: list[tuple[int, Any]], teacher: Teacher, settings: MetalsSettings,
                      cluster: Any, workers: int) -> Iterator[tuple[list[tuple], LabelReport]]:
    """label_system of every item in order: here, in `workers` local processes, or on a Dask cluster (a
    ClusterSpec or a Client).  Local processes are plain spawned ones, one thread each: a torch teacher
    (SevenNet-0) runs faster per core in them than in Dask workers on a small machine (docs/students.md)."""
    if cluster is None and workers <= 1:
        for item in items:
            yield label_system(item, teacher, settings)
        return
    if cluster is None:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"), initializer=_single_threaded) as pool:
            yield from pool.map(label_system, items, [teacher] * len(items), [settings] * len(items))
        return
    from ..runtime.cluster import connected, ordered_map

    with connected(cluster) as client:
        for _item, result in ordered_map(client, label_system, items, teacher, settings):
            yield result


def generate_metals(teacher: Teacher, settings: MetalsSettings, on_system: Callable[[str], None] = lambda name: None,
                    cluster: Any = None, workers: int = 1) -> tuple[Structures, LabelReport]:
    """Label every frame of every system (here, in `workers` processes, or on `cluster`); failures are skipped
    and counted."""
    from ase.calculators.singlepoint import SinglePointCalculator

    report = LabelReport()
    started = time.perf_counter()
    made = list(systems(settings))
    items = [(group, atoms) for group, (_name, atoms) in enumerate(made)]
    labelled, groups = [], []
    results = _labelled_systems(items, teacher, settings, cluster, workers)
    for group, ((name, _atoms), (frames, part)) in enumerate(zip(made, results)):
        merge_report(report, part)
        for frame, energy, forces in frames:
            frame.calc = SinglePointCalculator(frame, energy=energy, forces=forces)
            labelled.append(frame)
            groups.append(group)
            report.structures += 1
            report.atoms += len(frame)
            report.elements.update(int(z) for z in frame.numbers)
        on_system(name)
    if not labelled:
        raise UserInputError("the teacher labelled no structure; nothing to write")
    data = from_atoms(labelled, group=np.asarray(groups, dtype=np.int64), require_labels=True)
    data.splits = split_by_group(data.group, (0.8, 0.1, 0.1), settings.seed)
    data.attrs.update({"teacher": teacher.name, "generator": "deploycc data metals", "kind": "periodic metals"})
    report.seconds = time.perf_counter() - started
    return data, report
