"""Periodic boundary conditions: cells, lattice-shift sets and the checks that refuse bad cells.

Method (see docs/periodic.md): inside the graph every pair displacement r_j - r_i is wrapped to the
minimum image along the periodic axes (fractional coordinates rounded), then the pair is repeated over a
small set of integer lattice shifts `shifts` [S, 3] shared by the batch.  With the wrapped fractional
coordinate |f_a| <= 1/2, an image within the cutoff rc needs |k_a| < rc / w_a + 1/2, where w_a is the
cell's perpendicular width along axis a; so cells at least 2 rc wide need only the zero shift (S = 1),
and smaller cells (down to a 4-atom fcc cell) get the 27 or more shifts they need.  Non-periodic axes
are never wrapped or shifted.  The host computes the shift set from the cells (this module); the graph
stays static and export-friendly (no neighbour list, dynamic S axis).
"""

from __future__ import annotations

import itertools
from typing import Sequence

import numpy as np
import torch

from .errors import UserInputError

# Largest shift index per axis: 4 covers cells down to rc / 3.5 wide (e.g. 1.4 Angstrom at rc = 5).
MAX_SHIFT_INDEX = 4
# Smallest cell volume (Angstrom^3) accepted along periodic axes.
MIN_VOLUME = 1e-3


def perpendicular_widths(cell: np.ndarray) -> np.ndarray:
    """Distances between opposite faces of cells [..., 3, 3] (rows are lattice vectors): V / |b x c| etc."""
    cell = np.asarray(cell, dtype=np.float64)
    volume = np.abs(np.linalg.det(cell))[..., None]
    areas = np.stack([np.linalg.norm(np.cross(cell[..., (a + 1) % 3, :], cell[..., (a + 2) % 3, :]), axis=-1)
                      for a in range(3)], axis=-1)
    return volume / np.maximum(areas, 1e-300)


def shift_range(cell: np.ndarray, pbc: np.ndarray, cutoff: float) -> np.ndarray:
    """Largest integer shift per axis [..., 3] needed to see every image within `cutoff` (0 on open axes)."""
    with np.errstate(divide="ignore", invalid="ignore"):  # degenerate cells only ever sit on open axes here
        needed = np.floor(cutoff / perpendicular_widths(cell) + 0.5 + 1e-6)
    return np.where(np.asarray(pbc, dtype=bool), np.nan_to_num(needed, posinf=0.0), 0).astype(np.int64)


def check_cell(cell: np.ndarray, pbc: np.ndarray, cutoff: float, where: str) -> np.ndarray:
    """A usable, invertible cell for one structure (open axes completed), or a one-line UserInputError."""
    cell = np.asarray(cell, dtype=np.float64).reshape(3, 3)
    pbc = np.asarray(pbc, dtype=bool).reshape(3)
    if not pbc.any():
        return np.eye(3)
    if not np.all(np.isfinite(cell)):
        raise UserInputError(f"{where} is periodic but its cell has NaN or infinite entries")
    from ase.geometry import complete_cell

    completed = complete_cell(np.where(pbc[:, None], cell, 0.0))  # open axes: unit vectors, orthogonal
    if abs(np.linalg.det(completed)) < MIN_VOLUME or np.any(np.linalg.norm(cell[pbc], axis=1) < 1e-6):
        raise UserInputError(f"{where} is periodic but its cell has zero volume (degenerate lattice vectors)")
    reach = shift_range(completed, pbc, cutoff) if cutoff > 0 else np.zeros(3)
    if reach.max() > MAX_SHIFT_INDEX:
        widths = perpendicular_widths(completed)[pbc]
        raise UserInputError(f"{where}: cell too small ({widths.min():.2f} Å wide) for the {cutoff:g} Å cutoff; "
                             f"use a supercell at least {cutoff / (MAX_SHIFT_INDEX - 0.5):.2f} Å wide")
    return completed


def pad_cells(cells: Sequence[np.ndarray] | None, pbc: Sequence[np.ndarray] | None, count: int,
              cutoff: float = 0.0, names: Sequence[str] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Checked cells float32 [B, 3, 3] and pbc flags float32 [B, 3] (identity and zeros for molecules);
    with a `cutoff`, cells too small for it are refused here, naming the structure."""
    out_cells = np.tile(np.eye(3), (count, 1, 1))
    out_pbc = np.zeros((count, 3))
    for k in range(count):
        flags = np.zeros(3, dtype=bool) if pbc is None else np.asarray(pbc[k], dtype=bool).reshape(3)
        if flags.any():
            where = names[k] if names is not None else f"structure {k}"
            out_cells[k] = check_cell(cells[k], flags, cutoff, where)
            out_pbc[k] = flags
    return torch.from_numpy(out_cells.astype(np.float32)), torch.from_numpy(out_pbc.astype(np.float32))


def lattice_shifts(cell: torch.Tensor, pbc: torch.Tensor, cutoff: float) -> torch.Tensor:
    """Integer lattice shifts [S, 3] (float, on the cell's device) covering every image within `cutoff`.

    S = prod(2 n_a + 1) over the batch's largest n_a per axis; (0, 0, 0) comes first."""
    cells = cell.detach().double().cpu().numpy().reshape(-1, 3, 3)
    flags = pbc.detach().cpu().numpy().reshape(-1, 3) > 0.5
    reach = shift_range(cells, flags, cutoff).max(axis=0)  # one vectorised pass over the batch
    if reach.max() > MAX_SHIFT_INDEX:
        raise UserInputError(f"a periodic cell is too small for the {cutoff:g} Å cutoff "
                             f"(needs {int(reach.max())} images per axis, at most {MAX_SHIFT_INDEX})")
    ranges = [sorted(range(-int(n), int(n) + 1), key=abs) for n in reach]
    shifts = np.array(list(itertools.product(*ranges)), dtype=np.float32).reshape(-1, 3)
    return torch.from_numpy(shifts).to(cell.device)


def periodic_inputs(numbers: torch.Tensor, positions: torch.Tensor, cell: torch.Tensor | None,
                    pbc: torch.Tensor | None, cutoff: float) -> tuple[torch.Tensor, ...]:
    """(numbers, positions, cell, pbc, shifts) for a periodic graph; molecules get an identity cell."""
    b = numbers.shape[0]
    if cell is None:
        cell = torch.eye(3, dtype=positions.dtype, device=positions.device).expand(b, 3, 3).contiguous()
    if pbc is None:
        pbc = torch.zeros(b, 3, dtype=positions.dtype, device=positions.device)
    cell = cell.to(positions.device, positions.dtype)
    pbc = pbc.to(positions.device, positions.dtype)
    return numbers, positions, cell, pbc, lattice_shifts(cell, pbc, cutoff)


def has_periodic(pbc: torch.Tensor | np.ndarray | None) -> bool:
    """Whether any structure in a batch is periodic along any axis."""
    if pbc is None:
        return False
    return bool(torch.as_tensor(pbc).bool().any())


def periodic_batch(data, indices: Sequence[int]) -> tuple[torch.Tensor, ...]:
    """(cell, pbc) of some of a Structures' entries when any of them is periodic, else ()."""
    if data.pbc is None or not np.any(data.pbc[list(indices)]):
        return ()
    return pad_cells([data.cells[k] for k in indices], [data.pbc[k] for k in indices], len(indices),
                     names=[f"structure {k}" for k in indices])
