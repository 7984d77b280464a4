"""Periodic boxes of liquid water, with or without a solute: the condensed phase that a molecule list and its
clusters lack.  Fragments are embedded alone (RDKit, as `generate.embed`) and packed at random orientations into
a cube holding their mass at 1 g/cm³, no two atoms of different fragments closer than the clusters' contact
distances under the minimum image (the cube grows by 1 % when a fragment does not fit).  The frames are
rattles of the packed box, labelled by a teacher that takes periodic cells (GFN2-xTB, SevenNet-0, EMT as a toy).
"""

from __future__ import annotations

import time
from typing import Any, Callable

import numpy as np

from .clusters import AMU_PER_A3, DENSITY, MIN_CONTACT, MIN_HEAVY_CONTACT, SOLUTES, embed_fragments, random_rotation

TRIES = 5000  # placements tried per fragment (a few ms each try-batch) before the cube grows
GROWTH = 1.01  # the cube's edge grows by this when a fragment finds no place in TRIES tries
MAX_GROWTHS = 25


def _apart(placed: np.ndarray, placed_heavy: np.ndarray, trial: np.ndarray, heavy: np.ndarray, edge: float) -> bool:
    """No contact closer than the limits between `trial` and the placed atoms, under the minimum image."""
    d = placed[:, None, :] - trial[None, :, :]
    d -= edge * np.round(d / edge)
    r = np.linalg.norm(d, axis=-1)  # a box of a few hundred atoms: one fragment against the placed ones
    if r.min() < MIN_CONTACT:
        return False
    both = placed_heavy[:, None] & heavy[None, :]
    return not both.any() or r[both].min() >= MIN_HEAVY_CONTACT


def _placed(fragments: list, edge: float, rng: np.random.Generator) -> np.ndarray | None:
    """Positions of the fragments in a cube of `edge` (the first at the centre); None when one finds no place."""
    positions = [fragments[0].positions - fragments[0].positions.mean(0) + edge / 2]
    heavy = [fragments[0].numbers > 1]
    for fragment in fragments[1:]:
        local = fragment.positions - fragment.positions.mean(0)
        for _ in range(TRIES):
            trial = local @ random_rotation(rng).T + rng.uniform(0.0, edge, size=3)
            if _apart(np.concatenate(positions), np.concatenate(heavy), trial, fragment.numbers > 1, edge):
                positions.append(trial)
                heavy.append(fragment.numbers > 1)
                break
        else:
            return None
    return np.concatenate(positions)


def pack_box(fragments: list, seed: int):
    """A periodic cubic ase.Atoms of the fragments (ase.Atoms each; the first, the solute, at the centre) at
    `DENSITY` (less when the largest fragment's span and a contact distance exceed that cube's edge); None when they
    do not fit even after the cube has grown `MAX_GROWTHS` times."""
    from ase import Atoms

    rng = np.random.default_rng(seed)
    mass = sum(float(f.get_masses().sum()) for f in fragments)
    edge = (mass / (DENSITY * AMU_PER_A3)) ** (1.0 / 3.0)
    # a fragment must not touch its own periodic image: a few waters around a solute make a cube too small
    span = max(float(np.ptp(f.positions, axis=0).max()) for f in fragments)
    edge = max(edge, span + MIN_HEAVY_CONTACT)
    for _ in range(MAX_GROWTHS):
        positions = _placed(fragments, edge, rng)
        if positions is not None:
            return Atoms(numbers=np.concatenate([f.numbers for f in fragments]), positions=positions,
                         cell=np.eye(3) * edge, pbc=True)
        edge *= GROWTH
    return None


def embed_box(smiles: str, seed: int):
    """A periodic box of a dotted SMILES' fragments, as ase.Atoms; None if RDKit or the packing fails."""
    fragments = embed_fragments(smiles, seed)
    return None if fragments is None else pack_box(fragments, seed)


def box_list(waters: int = 32) -> list[tuple[str, str]]:
    """Pure water and each of the clusters' solutes, each in `waters` waters."""
    pairs = [(".".join(["O"] * waters), f"water-box{waters}")]
    pairs += [(".".join([smiles] + ["O"] * waters), f"{name}+water-box{waters}") for smiles, name in SOLUTES]
    return pairs


def _labelled(frame, teacher: Any) -> tuple[float, np.ndarray] | str:
    """(energy, forces), or why the frame is skipped."""
    from .generate import MAX_FORCE

    try:
        frame.calc = teacher.make_calculator()
        forces = np.asarray(frame.get_forces(), dtype=np.float64)
        energy = float(frame.get_potential_energy())
    except Exception as exc:  # noqa: BLE001 - a teacher failure (SCF) is counted, not fatal
        return type(exc).__name__
    if not (np.isfinite(energy) and np.isfinite(forces).all()) or np.abs(forces).max() > MAX_FORCE:
        return f"force above {MAX_FORCE:g} eV/Å or not finite"
    return energy, forces


def generate_boxes(teacher: Any, pairs: list[tuple[str, str]], rattles: int, seed: int,
                   on_box: Callable[[str], None] = lambda name: None) -> tuple[Any, Any]:
    """`rattles` rattled frames of each box, labelled by `teacher`; split train/val/test by box (all test when
    fewer than three boxes are labelled)."""
    from ase.calculators.singlepoint import SinglePointCalculator

    from ..errors import UserInputError
    from .generate import RATTLE_WIDTHS, LabelReport
    from .schema import from_atoms, split_by_group

    report, started = LabelReport(), time.perf_counter()
    frames, groups = [], []
    for group, (smiles, name) in enumerate(pairs):
        box = embed_box(smiles, seed + 1009 * group)
        if box is None:
            report.skip("RDKit embedding or packing failed")
            on_box(name)
            continue
        rng = np.random.default_rng([seed, group])
        report.molecules += 1
        for _ in range(rattles):
            frame = box.copy()
            frame.positions = frame.positions + rng.normal(0.0, rng.uniform(*RATTLE_WIDTHS), frame.positions.shape)
            labels = _labelled(frame, teacher)
            if isinstance(labels, str):
                report.skip(labels)
                continue
            frame.calc = SinglePointCalculator(frame, energy=labels[0], forces=labels[1])
            frames.append(frame)
            groups.append(group)
            report.elements.update(int(z) for z in frame.numbers)
        on_box(name)
    if not frames:
        raise UserInputError(f"teacher '{teacher.name}' labelled no box frame; nothing to write")
    data = from_atoms(frames, group=np.asarray(groups, dtype=np.int64), require_labels=True)
    # fewer than three boxes cannot be split three ways: all are test frames (a held-out condensed-phase set)
    data.splits = (split_by_group(data.group, (0.8, 0.1, 0.1), seed) if len(set(groups)) >= 3
                   else {"test": np.arange(len(frames))})
    data.attrs.update({"teacher": teacher.name, "generator": "deploycc data boxes", "kind": "periodic water boxes"})
    report.structures, report.atoms = len(frames), int(sum(len(f) for f in frames))
    report.seconds = time.perf_counter() - started
    return data, report
