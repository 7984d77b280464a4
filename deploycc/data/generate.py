"""Molecular structures from SMILES (RDKit), sampled off equilibrium and labelled by a teacher."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from ..errors import MissingDependencyError, UserInputError
from .clusters import embed_cluster, is_cluster
from .schema import Structures, split_by_group
from .teachers import Teacher

SMILES_FILE = Path(__file__).with_name("smiles.txt")
MAX_FORCE = 50.0  # eV/Angstrom: a label above this is treated as a teacher failure
RATTLE_WIDTHS = (0.01, 0.12)  # Å: the width of a frame's Gaussian rattle is drawn in this range


@dataclass
class LabelReport:
    """What labelling did: counts and time, for the summary table."""

    molecules: int = 0
    structures: int = 0
    atoms: int = 0
    skipped: int = 0
    skipped_reasons: dict[str, int] = field(default_factory=dict)
    elements: set[int] = field(default_factory=set)
    seconds: float = 0.0

    def skip(self, reason: str) -> None:
        self.skipped += 1
        self.skipped_reasons[reason] = self.skipped_reasons.get(reason, 0) + 1


def read_smiles(path: Path = SMILES_FILE) -> list[tuple[str, str]]:
    """(smiles, name) pairs from a file with one SMILES per line, optional name, '#' comments."""
    if not Path(path).is_file():
        raise UserInputError(f"SMILES file {path} does not exist")
    pairs = []
    for line in Path(path).read_text().splitlines():
        parts = line.split()
        if parts and not parts[0].startswith("#"):
            pairs.append((parts[0], parts[1] if len(parts) > 1 else parts[0]))
    if not pairs:
        raise UserInputError(f"SMILES file {path} lists no molecules")
    return pairs


def embed(smiles: str, seed: int):
    """A 3-D conformer with explicit hydrogens (ETKDG, then MMFF), as ase.Atoms; None if RDKit fails.  A dotted
    SMILES is a cluster: its fragments are embedded alone and packed (data/clusters.py)."""
    if is_cluster(smiles):
        return embed_cluster(smiles, seed)
    try:
        from rdkit import Chem
        from rdkit.Chem import AllChem
    except ImportError:
        raise MissingDependencyError("structure generation needs RDKit: pip install 'deploycc[data]'") from None
    from ase import Atoms

    mol = Chem.MolFromSmiles(smiles)
    if mol is None:
        return None
    mol = Chem.AddHs(mol)
    params = AllChem.ETKDGv3()
    params.randomSeed = seed
    if AllChem.EmbedMolecule(mol, params) != 0:
        return None
    if AllChem.MMFFHasAllMoleculeParams(mol):
        AllChem.MMFFOptimizeMolecule(mol, maxIters=500)
    positions = mol.GetConformer().GetPositions()
    return Atoms(numbers=[a.GetAtomicNum() for a in mol.GetAtoms()], positions=positions)


def label_frame(atoms, teacher: Teacher, report: LabelReport) -> tuple[float, np.ndarray] | None:
    """Energy and forces from the teacher, or None (counted) if it fails or returns nonsense."""
    try:
        atoms.calc = teacher.make_calculator()
        energy = float(atoms.get_potential_energy())
        forces = np.asarray(atoms.get_forces(), dtype=np.float64)
    except MissingDependencyError:
        raise
    except Exception as exc:  # any teacher failure (SCF, NaN, crash) is a skip, never a stored label
        report.skip(type(exc).__name__)
        return None
    if not np.isfinite(energy) or not np.all(np.isfinite(forces)):
        report.skip("non-finite label")
        return None
    if np.abs(forces).max() > MAX_FORCE:
        report.skip("force above 50 eV/A")
        return None
    return energy, forces


def _label_batch(frames: list, teacher: Teacher, report: LabelReport) -> list[tuple]:
    """(frame, energy, forces) of the frames a batched teacher labelled sensibly (the others counted)."""
    try:
        energies, forces = teacher.label(frames)
    except MissingDependencyError:
        raise
    except Exception as exc:  # noqa: BLE001 - a failing batch is skipped whole, never stored
        for _ in frames:
            report.skip(type(exc).__name__)
        return []
    kept = []
    for frame, energy, f in zip(frames, energies, forces):
        if not (np.isfinite(energy) and np.all(np.isfinite(f))):
            report.skip("non-finite label")
        elif np.abs(f).max() > MAX_FORCE:
            report.skip("force above 50 eV/A")
        else:
            kept.append((frame, float(energy), np.asarray(f, dtype=np.float64)))
    return kept


def molecule_elements(smiles: str) -> set[int] | None:
    """Atomic numbers of a SMILES with its hydrogens (None when RDKit cannot parse it)."""
    from rdkit import Chem

    mol = Chem.MolFromSmiles(smiles)
    if mol is None:
        return None
    return {a.GetAtomicNum() for a in Chem.AddHs(mol).GetAtoms()}


def molecules_for(smiles: list[tuple[str, str]], teacher: Teacher) -> tuple[list[tuple[str, str]], int]:
    """The molecules whose elements the teacher knows (all, for a teacher without a list), and how many not."""
    if teacher.elements is None:
        return smiles, 0
    kept = [(smi, name) for smi, name in smiles if (molecule_elements(smi) or {0}) <= teacher.elements]
    return kept, len(smiles) - len(kept)


def thermalize(atoms, temperature: float, rng: np.random.Generator) -> None:
    """Maxwell-Boltzmann momenta at `temperature` K: ASE's thermalize_momenta (>= 3.29, which deprecates
    MaxwellBoltzmannDistribution, a wrapper drawing the same numbers), else MaxwellBoltzmannDistribution."""
    from ase.md import velocitydistribution as vd

    if hasattr(vd, "thermalize_momenta"):
        vd.thermalize_momenta(atoms, temperature, rng=rng)
    else:
        vd.MaxwellBoltzmannDistribution(atoms, temperature_K=temperature, rng=rng)


def _md_frames(atoms, teacher: Teacher, rng: np.random.Generator, frames: int, stride: int) -> Iterator:
    """Short Langevin MD with the teacher at 300-800 K; yields (atoms copy, energy, forces)."""
    from ase import units
    from ase.md.langevin import Langevin

    temperature = float(rng.uniform(300.0, 800.0))
    md_atoms = atoms.copy()
    md_atoms.calc = teacher.make_calculator()
    thermalize(md_atoms, temperature, rng)
    dyn = Langevin(md_atoms, 0.5 * units.fs, temperature_K=temperature, friction=0.02, fixcm=False, rng=rng)
    for _ in range(frames):
        dyn.run(stride)
        yield md_atoms.copy(), float(md_atoms.get_potential_energy()), np.array(md_atoms.get_forces())


def molecule_frames(
    atoms, teacher: Teacher, rng: np.random.Generator, rattles: int, md_frames: int, report: LabelReport,
    normal_modes: int = 0, smiles: str = "",
) -> list[tuple]:
    """Off-equilibrium frames of one molecule: Gaussian rattles (0.01-0.12 A), normal-mode samples at
    300-1000 K (data/normal_modes.py; of `smiles`, rattles where it has no modes) and teacher-MD snapshots."""
    out = []
    rattled = []
    for _ in range(rattles):
        frame = atoms.copy()
        frame.positions += rng.normal(0.0, rng.uniform(*RATTLE_WIDTHS), size=frame.positions.shape)
        rattled.append(frame)
    if normal_modes:  # drawn after the rattles, so that a seed's rattles are the same with or without them
        if not smiles:
            raise ValueError("normal-mode frames need the molecule's SMILES")
        from .normal_modes import NormalModeSampler

        sampler = NormalModeSampler([(0, atoms)], {0: smiles})
        rattled.extend(frame for _, frame in sampler.frames(normal_modes, rng))
    if teacher.label_batch is not None and rattled:
        out.extend(_label_batch(rattled, teacher, report))
    else:
        for frame in rattled:
            labels = label_frame(frame, teacher, report)
            if labels is not None:
                out.append((frame, *labels))
    if md_frames:
        try:
            for frame, energy, forces in _md_frames(atoms, teacher, rng, md_frames, stride=10):
                if np.all(np.isfinite(forces)) and np.abs(forces).max() <= MAX_FORCE and np.isfinite(energy):
                    out.append((frame, energy, forces))
                else:
                    report.skip("non-finite MD label")
        except MissingDependencyError:
            raise
        except Exception as exc:  # a teacher failing mid-MD ends that trajectory only
            report.skip(f"MD {type(exc).__name__}")
    return out


def label_molecule(item: tuple[int, str], teacher: Teacher, rattles: int, md_frames: int, seed: int,
                   normal_modes: int = 0) -> tuple[list[tuple], LabelReport]:
    """Frames of molecule `mol_id` (its conformer and sampling seeded by (seed, mol_id) alone, so a dataset
    is the same however its molecules are shared among workers) and what labelling them did."""
    mol_id, smi = item
    report = LabelReport()
    atoms = embed(smi, seed + mol_id)
    if atoms is None:
        report.skip("RDKit embedding failed")
        return [], report
    rng = np.random.default_rng([seed, mol_id])
    frames = molecule_frames(atoms, teacher, rng, rattles, md_frames, report, normal_modes, smi)
    for frame, _energy, _forces in frames:
        frame.calc = None  # the labels are kept; a teacher's calculator may not pickle back from a worker
    report.molecules = 1 if frames else 0
    return frames, report


def labelled_molecules(smiles: list[tuple[str, str]], teacher: Teacher, rattles: int, md_frames: int, seed: int,
                       cluster: Any = None, normal_modes: int = 0
                       ) -> Iterator[tuple[int, str, list[tuple], LabelReport]]:
    """(mol_id, name, frames, report) of every molecule in input order, labelled here or on a Dask cluster
    (a ClusterSpec or a connected distributed.Client, runtime/cluster.py)."""
    items = [(mol_id, smi) for mol_id, (smi, _name) in enumerate(smiles)]
    if cluster is None:
        for mol_id, smi in items:
            yield (mol_id, smiles[mol_id][1], *label_molecule((mol_id, smi), teacher, rattles, md_frames, seed,
                                                              normal_modes))
        return
    from ..runtime.cluster import connected, ordered_map

    with connected(cluster) as client:
        for (mol_id, _smi), (frames, report) in ordered_map(client, label_molecule, items, teacher, rattles,
                                                            md_frames, seed, normal_modes):
            yield mol_id, smiles[mol_id][1], frames, report


def merge_report(total: LabelReport, part: LabelReport) -> None:
    total.molecules += part.molecules
    total.skipped += part.skipped
    for reason, count in part.skipped_reasons.items():
        total.skipped_reasons[reason] = total.skipped_reasons.get(reason, 0) + count


def generate_molecules(
    smiles: list[tuple[str, str]],
    teacher: Teacher,
    rattles: int = 16,
    md_frames: int = 4,
    seed: int = 0,
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
    on_molecule: Callable[[str], None] | None = None,
    cluster: Any = None,
    normal_modes: int = 0,
) -> tuple[Structures, LabelReport]:
    """Label frames of every molecule (here, or on `cluster`); split train/val/test by molecule."""
    report = LabelReport()
    start = time.perf_counter()
    numbers, positions, energies, forces, group = [], [], [], [], []
    for mol_id, name, frames, part in labelled_molecules(smiles, teacher, rattles, md_frames, seed, cluster,
                                                         normal_modes):
        merge_report(report, part)
        for frame, energy, f in frames:
            numbers.append(frame.get_atomic_numbers().astype(np.int64))
            positions.append(frame.get_positions())
            energies.append(energy)
            forces.append(f)
            group.append(mol_id)
            report.elements.update(int(z) for z in frame.get_atomic_numbers())
        if on_molecule is not None:
            on_molecule(name)
    if not numbers:
        raise UserInputError("the teacher labelled no structure; nothing to write")
    report.structures = len(numbers)
    report.atoms = int(sum(len(z) for z in numbers))
    report.seconds = time.perf_counter() - start
    group_arr = np.asarray(group, dtype=np.int64)
    data = Structures(
        numbers=numbers,
        positions=positions,
        energies=np.asarray(energies),
        forces=forces,
        cells=np.zeros((len(numbers), 3, 3)),
        pbc=np.zeros((len(numbers), 3), dtype=bool),
        group=group_arr,
        splits=split_by_group(group_arr, fractions, seed),
        attrs={"teacher": teacher.name, "source": "smiles", "generator": "deploycc data generate",
               "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
    )
    return data, report
