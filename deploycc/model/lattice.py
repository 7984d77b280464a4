"""Tensor helpers for periodic cells, written with elementwise ops only so every exporter takes them."""

from __future__ import annotations

import torch


def cross(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Cross product over the last axis (size 3)."""
    ux, uy, uz = u[..., 0], u[..., 1], u[..., 2]
    vx, vy, vz = v[..., 0], v[..., 1], v[..., 2]
    return torch.stack([uy * vz - uz * vy, uz * vx - ux * vz, ux * vy - uy * vx], dim=-1)


def inverse_cell(cell: torch.Tensor) -> torch.Tensor:
    """Inverse of cells [B, 3, 3] whose rows are lattice vectors: frac = r @ inverse_cell(cell)."""
    a, b, c = cell[:, 0], cell[:, 1], cell[:, 2]
    bc, ca, ab = cross(b, c), cross(c, a), cross(a, b)
    volume = (a * bc).sum(-1)
    return torch.stack([bc, ca, ab], dim=-1) / volume.reshape(-1, 1, 1)


def minimum_image(vec: torch.Tensor, cell: torch.Tensor, pbc: torch.Tensor) -> torch.Tensor:
    """Pair displacements [B, P, 3] wrapped to fractional coordinates in [-1/2, 1/2] on periodic axes.

    The wrap is a lattice vector chosen by rounding (piecewise constant), so it carries no gradient."""
    frac = torch.bmm(vec.detach(), inverse_cell(cell.detach()))
    offset = torch.round(frac) * pbc.unsqueeze(1)
    return vec - torch.bmm(offset, cell)


def allowed_shifts(shifts: torch.Tensor, pbc: torch.Tensor) -> torch.Tensor:
    """[B, S] 1.0 where shift s moves only along structure b's periodic axes, else 0.0."""
    off_axis = (shifts.abs().unsqueeze(0) * (1.0 - pbc).unsqueeze(1)).sum(-1)
    return (off_axis < 0.5).to(pbc.dtype)
