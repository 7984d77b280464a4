"""The frames of online distillation: conformers of molecules, rattled by a Gaussian whose width is drawn
per frame, labelled by a teacher in one batched call and given their neighbour lists; the split by molecule
and the fixed held-out frames (train/online.py runs the stream)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..data.clusters import is_cluster
from ..data.generate import MAX_FORCE, RATTLE_WIDTHS
from ..data.schema import Structures, split_by_group
from ..errors import MissingDependencyError, UserInputError
from ..runtime.neighbours import HalfList, Structure, half_list
from .batches import Prepared
from .label_pool import LabelPoolError
from .walkers import Walkers

RATTLE = RATTLE_WIDTHS  # Å, as `deploycc data generate`: the rattle width, drawn per frame
HELD_OUT_STRIDE = 20  # teacher-MD steps (10 fs) between the held-out frames of one molecule
MIN_BOX_FRAGMENTS = 8  # clusters of at least this many fragments are also packed as periodic boxes (--box-every)


@dataclass
class Frames:
    """Labelled frames with their neighbour lists (what a worker sends and a split holds)."""

    numbers: list[np.ndarray]
    positions: list[np.ndarray]
    energies: np.ndarray
    forces: list[np.ndarray]
    halves: list[HalfList]
    group: np.ndarray
    teacher_seconds: float = 0.0
    attempted: int = 0  # frames handed to the teacher (those it failed on are dropped)
    cells: np.ndarray | None = None  # [S, 3, 3] and [S, 3] when a frame is periodic (a box); None: all molecules
    pbc: np.ndarray | None = None

    def cells_and_pbc(self) -> tuple[np.ndarray, np.ndarray]:
        """Cells [S, 3, 3] and periodic axes [S, 3] of the frames (zeros and False for molecules)."""
        if self.cells is not None and self.pbc is not None:
            return self.cells, self.pbc
        return np.zeros((len(self.numbers), 3, 3)), np.zeros((len(self.numbers), 3), bool)

    def periodic_count(self) -> int:
        """Frames with a periodic axis."""
        return 0 if self.pbc is None else int(self.pbc.any(axis=1).sum())

    def prepared(self) -> Prepared:
        cells, pbc = self.cells_and_pbc()
        data = Structures(numbers=self.numbers, positions=self.positions, energies=self.energies,
                          forces=self.forces, cells=cells, pbc=pbc, group=self.group)
        structures = [Structure.of(z, r, c, p) for z, r, c, p in zip(self.numbers, self.positions, cells, pbc)]
        return Prepared(data, structures, self.halves)

    def structures(self) -> Structures:
        cells, pbc = self.cells_and_pbc()
        return Structures(numbers=self.numbers, positions=self.positions, energies=self.energies, forces=self.forces,
                          cells=cells, pbc=pbc, group=self.group)


def conformers_of(smiles: Sequence[tuple[int, str]], count: int, seed: int) -> list[tuple[int, Any]]:
    """(molecule id, ase.Atoms) conformers: `count` RDKit embeddings of each molecule that embeds."""
    from ..data.generate import embed

    out = []
    for mol_id, smi in smiles:
        for k in range(count):
            atoms = embed(smi, seed + 1000 * k + mol_id)
            if atoms is not None:
                out.append((mol_id, atoms))
    return out


def packs_as_box(smiles: str) -> bool:
    """A cluster of at least `MIN_BOX_FRAGMENTS` molecules: one `--box-every` packs as a periodic box."""
    return is_cluster(smiles) and smiles.count(".") + 1 >= MIN_BOX_FRAGMENTS


def box_pool(molecules: Sequence[tuple[int, str]], count: int, seed: int) -> list[tuple[int, Any]]:
    """(cluster id, periodic ase.Atoms): `count` packings into a periodic cube at 1 g/cm³ (data/boxes.py) of
    each cluster of at least `MIN_BOX_FRAGMENTS` fragments: the condensed phase without a surface."""
    from ..data.boxes import embed_box

    out = []
    for mol_id, smi in molecules:
        if packs_as_box(smi):
            for k in range(count):
                box = embed_box(smi, seed + 1000 * k + mol_id)
                if box is not None:
                    out.append((mol_id, box))
    return out


def rattled(pool: Sequence[tuple[int, Any]], count: int, rng: np.random.Generator) -> list[tuple[int, Any]]:
    """`count` new frames: random conformers of the pool, each rattled by its own Gaussian width."""
    frames = []
    for k in rng.integers(0, len(pool), size=count):
        mol_id, atoms = pool[int(k)]
        frame = atoms.copy()
        frame.positions = frame.positions + rng.normal(0.0, rng.uniform(*RATTLE), size=frame.positions.shape)
        frames.append((mol_id, frame))
    return frames


def labels_or_nan(teacher: Any, structures: list) -> tuple[list[float], list[np.ndarray]]:
    """The teacher's labels of a batch; when the batch fails (one bad frame, an element it does not know),
    frame by frame, a failed frame getting NaN labels (dropped by the caller, never trained on)."""
    try:
        return teacher.label(structures)
    except (MissingDependencyError, LabelPoolError):
        raise
    except Exception:  # noqa: BLE001 - which frame failed is found below
        energies, forces = [], []
        for atoms in structures:
            try:
                (energy,), (force,) = teacher.label([atoms])
            except MissingDependencyError:
                raise
            except Exception:  # noqa: BLE001 - a teacher failing on a frame: the frame is skipped
                energy, force = float("nan"), np.full((len(atoms), 3), np.nan)
            energies.append(energy)
            forces.append(force)
        return energies, forces


def labelled(teacher: Any, frames: list[tuple[int, Any]], cutoff: float, max_force: float = MAX_FORCE) -> Frames:
    """The frames the teacher labels sensibly (finite, forces below `max_force`), with neighbour lists."""
    started = time.perf_counter()
    energies, forces = labels_or_nan(teacher, [atoms for _, atoms in frames])
    seconds = time.perf_counter() - started
    keep = [(frames[k][0], frames[k][1], float(energies[k]), np.asarray(forces[k], dtype=np.float64))
            for k in range(len(frames)) if np.isfinite(energies[k]) and np.isfinite(forces[k]).all()
            and np.abs(forces[k]).max() <= max_force]
    return of_labels(keep, cutoff, seconds, len(frames))


def of_labels(frames: Sequence[tuple[int, Any, float, np.ndarray]], cutoff: float, seconds: float,
              attempted: int) -> Frames:
    """Frames from (molecule id, ase.Atoms, energy, forces) that are already labelled, with neighbour lists."""
    numbers = [atoms.numbers.astype(np.int64) for _, atoms, _, _ in frames]
    positions = [atoms.positions.astype(np.float64) for _, atoms, _, _ in frames]
    pbc = np.asarray([atoms.pbc for _, atoms, _, _ in frames], dtype=bool).reshape(len(frames), 3)
    cells = np.asarray([np.asarray(atoms.cell.array, dtype=np.float64) * atoms.pbc[:, None]
                        for _, atoms, _, _ in frames]).reshape(len(frames), 3, 3)
    halves = [half_list(Structure.of(z, r, c, p), cutoff) for z, r, c, p in zip(numbers, positions, cells, pbc)]
    periodic = bool(pbc.any())
    return Frames(numbers, positions, np.asarray([e for _, _, e, _ in frames], dtype=np.float64),
                  [np.asarray(f, dtype=np.float64) for _, _, _, f in frames], halves,
                  np.asarray([m for m, _, _, _ in frames], dtype=np.int64), seconds, attempted,
                  cells if periodic else None, pbc if periodic else None)


def joined(parts: Sequence[Frames]) -> Frames:
    """One batch of several sets of frames."""
    periodic = any(p.cells is not None for p in parts)
    return Frames(sum((p.numbers for p in parts), []), sum((p.positions for p in parts), []),
                  np.concatenate([p.energies for p in parts]), sum((p.forces for p in parts), []),
                  sum((p.halves for p in parts), []), np.concatenate([p.group for p in parts]),
                  sum(p.teacher_seconds for p in parts), sum(p.attempted for p in parts),
                  np.concatenate([p.cells_and_pbc()[0] for p in parts]) if periodic else None,
                  np.concatenate([p.cells_and_pbc()[1] for p in parts]) if periodic else None)


def thermal(walkers: Walkers, teacher: Any, count: int, cutoff: float) -> Frames:
    """The next `count` frames of teacher MD (`walkers` advance as far as needed), with neighbour lists."""
    calls, seconds = walkers.calls, [0.0]

    def label(structures: list) -> tuple[list[float], list[np.ndarray]]:
        started = time.perf_counter()
        try:
            return labels_or_nan(teacher, structures)
        finally:
            seconds[0] += time.perf_counter() - started

    live_before = sum(not w.retired for w in walkers.walkers)
    kept = walkers.frames(label, count)
    attempted = (walkers.calls - calls) * max(live_before, 1)  # every live walker is labelled at every call
    return of_labels(kept, cutoff, seconds[0], attempted)


def thermal_split(teacher: Any, molecules: list[tuple[int, str]], frames_per_molecule: int, seed: int, stream: int,
                  cutoff: float) -> Frames:
    """Held-out teacher-MD frames (300-1000 K, `HELD_OUT_STRIDE` steps apart): one walker per molecule."""
    pool = conformers_of(molecules, 1, seed + 7919 * stream)
    if not pool:
        return of_labels([], cutoff, 0.0, 0)
    walkers = Walkers(pool, len(pool), HELD_OUT_STRIDE, frames_per_molecule,
                      np.random.default_rng([seed, 2 * 10**6 + stream]), in_order=True)
    return thermal(walkers, teacher, len(pool) * frames_per_molecule, cutoff)


def nms_split(teacher: Any, molecules: list[tuple[int, str]], frames_per_molecule: int, seed: int, stream: int,
              cutoff: float) -> Frames:
    """Held-out normal-mode frames (300-1000 K) of `frames_per_molecule` per molecule (clusters: rattled)."""
    from ..data.normal_modes import NormalModeSampler

    pool = conformers_of(molecules, 1, seed + 7919 * stream)
    rng = np.random.default_rng([seed, 3 * 10**6 + stream])
    smiles = dict(molecules)
    frames = [f for item in pool for f in NormalModeSampler([item], smiles).frames(frames_per_molecule, rng)]
    return labelled(teacher, frames, cutoff)


def split_molecules(smiles: Sequence[tuple[str, str]], seed: int, fractions=(0.8, 0.1, 0.1)
                    ) -> dict[str, list[tuple[int, str]]]:
    """(molecule id, SMILES) per split, by molecule (for a list without clusters, the split `deploycc data
    generate` makes).  Clusters (dotted SMILES) are split among themselves, so that clusters appended after the
    molecules leave the molecules' split as it was."""
    out: dict[str, list[tuple[int, str]]] = {}
    for clusters in (False, True):
        ids = np.asarray([k for k, (smi, _) in enumerate(smiles) if is_cluster(smi) == clusters], dtype=np.int64)
        if len(ids) == 0:
            continue
        for name, idx in split_by_group(ids, fractions, seed).items():
            out.setdefault(name, []).extend((int(ids[k]), smiles[int(ids[k])][0]) for k in idx)
    return {name: sorted(pairs) for name, pairs in out.items()}


def add_train_only(split: dict[str, list[tuple[int, str]]], extra: Sequence[tuple[str, str]], first_id: int) -> None:
    """Append molecules that only ever train, numbered from `first_id` so that the split's ids stay as they were.
    One that is also a validation or test molecule (same canonical SMILES) would leak it: refused."""
    held = {_canonical(smi): smi for name in ("val", "test") for _, smi in split.get(name, [])}
    for smi, name in extra:
        same = held.get(_canonical(smi))
        if same is not None:
            raise UserInputError(f"--train-only molecule {name} ({smi}) is also the held-out molecule "
                                 f"{same}: training on it would leak the split; leave it out")
    split.setdefault("train", []).extend((first_id + k, smi) for k, (smi, _) in enumerate(extra))


def _canonical(smiles: str) -> str:
    from rdkit import Chem

    mol = Chem.MolFromSmiles(smiles)
    if mol is None:
        raise UserInputError(f"RDKit cannot parse the SMILES {smiles}")
    return Chem.MolToSmiles(mol)


def fixed_split(teacher: Any, molecules: list[tuple[int, str]], frames_per_molecule: int, seed: int, stream: int,
                cutoff: float) -> Frames:
    """Labelled frames of held-out molecules, made once by the online sampler with their own seed stream."""
    pool = conformers_of(molecules, 1, seed + 7919 * stream)
    rng = np.random.default_rng([seed, 10**6 + stream])
    frames = [f for mol_id, atoms in pool
              for f in rattled([(mol_id, atoms)], frames_per_molecule, rng)]
    return labelled(teacher, frames, cutoff)


def box_split(teacher: Any, molecules: list[tuple[int, str]], frames_per_box: int, seed: int, stream: int,
              cutoff: float) -> Frames:
    """Held-out rattled frames of the held-out clusters packed as periodic boxes (`box_pool`)."""
    pool = box_pool(molecules, 1, seed + 7919 * stream)
    rng = np.random.default_rng([seed, 4 * 10**6 + stream])
    return labelled(teacher, [f for item in pool for f in rattled([item], frames_per_box, rng)], cutoff)


def check_boxes(teacher: Any, train: Sequence[tuple[int, str]], box_every: int) -> None:
    """--box-every needs a teacher of periodic cells and training clusters large enough to pack as boxes."""
    if not box_every:
        return
    if not teacher.periodic:
        raise UserInputError(f"--box-every: teacher '{teacher.name}' labels molecules only, not periodic boxes")
    if not any(packs_as_box(smi) for _, smi in train):
        raise UserInputError(f"--box-every packs training clusters of at least {MIN_BOX_FRAGMENTS} molecules as "
                             "periodic boxes, and there are none: add --clusters")


def write_splits(val: Frames, test: Frames, path: Path, teacher: str, test_md: Frames | None = None) -> None:
    """The held-out frames as one labelled HDF5 (splits val, test and, when given, test_md), to score other
    students on."""
    from ..data.schema import write_h5

    parts = [("val", val), ("test", test)] + ([("test_md", test_md)] if test_md is not None else [])
    both = joined([frames for _, frames in parts])
    splits, start = {}, 0
    for name, frames in parts:
        splits[name] = np.arange(start, start + len(frames.numbers))
        start += len(frames.numbers)
    data = both.structures()
    data.splits = splits
    data.attrs = {"teacher": teacher, "source": "online distillation held-out molecules"}
    write_h5(data, path)
