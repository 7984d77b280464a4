"""Datasets: HDF5 schema, structure generation, teachers, import from ASE files."""

from .schema import Structures, read_h5, read_structures, write_h5

__all__ = ["Structures", "read_h5", "read_structures", "write_h5"]
