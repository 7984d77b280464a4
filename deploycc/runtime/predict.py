"""`deploycc predict`: energies, forces (and stress, for periodic structures) for every structure of a file,
written back as extended XYZ in input order: the high-throughput screening run.

Structures are streamed from the file (ASE's `iread` for any format it reads; a deploycc HDF5 file is read
whole, it is compact), so memory stays at one chunk however long the file is: a first pass validates every
structure (a bad one is refused by the file's path and its index before any work), a second evaluates chunk
by chunk (calls sized by the Predictor's memory budget) and appends to a temporary file that is renamed over
`out` at the end, so an interrupted run never leaves a half-written file.  The destination is checked first: it must
name an extended-XYZ file (.extxyz, .xyz) in a writable folder and must not be the input.  With a cluster
(runtime/cluster.py) the chunks are evaluated on Dask workers and written in the same order, so the file is
the same as the serial run's.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from ..errors import StorageError, UserInputError
from .predictor import Predictor

CHUNK = 512  # structures per evaluate call (progress granularity; batching inside is by the profile)


@dataclass
class PredictReport:
    """What one run did; `seconds` is the wall time of evaluating and writing (not of pass 1's validation)."""

    structures: int
    atoms: int
    seconds: float
    out: Path
    stress: bool

    @property
    def structures_per_second(self) -> float:
        return self.structures / self.seconds if self.seconds > 0 else float("inf")


def iter_atoms(path: Path) -> Iterator:
    """Every structure of `path` as ase.Atoms, streamed (deploycc HDF5 or any ASE-readable file); one-line
    errors for a missing, unreadable or empty file."""
    from ase import Atoms

    from ..data.schema import existing_structure_file, read_h5, unreadable

    path = existing_structure_file(path)
    if path.suffix in (".h5", ".hdf5"):
        data = read_h5(path)
        cells = data.cells if data.cells is not None else np.zeros((len(data), 3, 3))
        pbc = data.pbc if data.pbc is not None else np.zeros((len(data), 3), dtype=bool)
        for z, r, c, p in zip(data.numbers, data.positions, cells, pbc):
            yield Atoms(numbers=z, positions=r, cell=c, pbc=p)
        return
    import ase.io

    count = 0
    try:
        for atoms in ase.io.iread(str(path), index=":"):
            count += 1
            yield atoms
    except Exception as exc:  # ASE raises many types for unreadable files
        raise unreadable(path, exc) from None
    if count == 0:
        raise UserInputError(f"{path} holds no structures")


def chunks(path: Path, size: int | None = None) -> Iterator[list]:
    """Lists of at most `size` (default CHUNK) structures from `path`, in file order."""
    size = size or CHUNK
    chunk: list = []
    for atoms in iter_atoms(path):
        chunk.append(atoms)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def labelled(atoms, energy: float, forces: np.ndarray, stress: np.ndarray | None):
    """A copy of `atoms` carrying the predictions as a single-point calculator (extxyz writes them)."""
    from ase.calculators.singlepoint import SinglePointCalculator

    from .ase import calculator_results

    out = atoms.copy()
    out.calc = SinglePointCalculator(out, **calculator_results(energy, forces, stress))
    return out


OUTPUT_SUFFIXES = (".extxyz", ".xyz")


def check_destination(out: Path, source: Path) -> Path:
    """`out` if it can be written as extended XYZ without touching `source`; else a one-line error."""
    out = Path(out)
    if out.suffix.lower() not in OUTPUT_SUFFIXES:
        raise UserInputError(f"--out {out}: predictions are written as extended XYZ; name the file "
                             f"{out.with_suffix('.extxyz').name} ({' or '.join(OUTPUT_SUFFIXES)})")
    if out.is_dir():
        raise UserInputError(f"--out {out} is a folder; give a file name ending in .extxyz")
    if out.exists() and Path(source).exists() and os.path.samefile(out, source):
        raise UserInputError(f"--out {out} is the input file: write the predictions to another file")
    parent = out.parent if str(out.parent) else Path(".")
    if parent.exists() and not parent.is_dir():
        raise UserInputError(f"--out {out}: {parent} is not a folder")
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageError(f"cannot create {parent} for --out ({exc.strerror})") from None
    if not os.access(parent, os.W_OK):
        raise StorageError(f"cannot write {out}: {parent} is not writable")
    return out


@dataclass
class Distributed:
    """Where the chunks of a run are evaluated instead of in this process: a cluster (a ClusterSpec, or a
    connected distributed.Client) whose workers each open `source` once (a path they can read)."""

    cluster: Any
    source: str
    device: str | None = None
    unseen_elements: str = "warn"


def evaluated_chunks(predictor: Predictor, structures: Path, chunk_size: int, distributed: Distributed | None
                     ) -> Iterator[tuple[list, tuple]]:
    """(chunk, (energies, forces, stresses)) for every chunk of the file, in file order."""
    if distributed is None:
        for chunk in chunks(structures, chunk_size):
            yield chunk, predictor.evaluate(chunk, check=False)  # validated in pass 1
        return
    from .cluster import connected, evaluate_chunk, ordered_map

    d = distributed
    with connected(d.cluster) as client:
        yield from ordered_map(client, evaluate_chunk, chunks(structures, chunk_size), d.source, d.device,
                               d.unseen_elements)


def predict_file(predictor: Predictor, structures: Path, out: Path,
                 on_progress: Callable[[int, int], None] | None = None, chunk_size: int | None = None,
                 distributed: Distributed | None = None) -> PredictReport:
    """Evaluate every structure of `structures` with `predictor` (or on a cluster) and write them, labelled,
    to `out` (extxyz) in file order; the file is the same whichever way the chunks were evaluated."""
    import ase.io

    out = check_destination(out, structures)
    chunk_size = CHUNK if chunk_size is None else chunk_size  # read at call time (tests shrink CHUNK)
    if not (isinstance(chunk_size, int) and chunk_size >= 1):
        raise UserInputError(f"--chunk-size must be a positive number of structures, got {chunk_size!r}")
    total = 0
    for chunk in chunks(structures, chunk_size):  # pass 1: every bad structure is refused, by file and index
        try:
            predictor.validate(chunk, first_index=total)
        except UserInputError as exc:  # "structure 1 has no atoms" -> "in.h5: structure 1 has no atoms"
            raise UserInputError(f"{structures}: {exc}") from None
        total += len(chunk)
    temporary = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    done, atoms_count, with_stress = 0, 0, False
    begin = time.perf_counter()
    try:
        with open(temporary, "w") as handle:
            for chunk, (energies, forces, stresses) in evaluated_chunks(predictor, structures, chunk_size, distributed):
                results = [labelled(atoms, float(energies[k]), forces[k], stresses[k]) for k, atoms in enumerate(chunk)]
                with_stress |= any("stress" in a.calc.results for a in results)
                ase.io.write(handle, results, format="extxyz")
                done += len(chunk)
                atoms_count += sum(len(a) for a in chunk)
                if on_progress is not None:
                    on_progress(done, total)
        seconds = time.perf_counter() - begin
        os.replace(temporary, out)
    finally:
        temporary.unlink(missing_ok=True)
    return PredictReport(done, atoms_count, seconds, out, with_stress)
