"""MD validation runs through ASE: settings and results, the run itself, the energy plot."""

from .results import MAX_TEMPERATURE, Check, Divergence, MdResult, MdSettings, Series, Stats
from .outputs import check_outputs, output_files
from .run import (check_structure, degrees_of_freedom, divergence, eager_reference, fit_drift, read_structure, relax,
                  run_md, stats_of, write_outputs, zero_rotation)

__all__ = ["MAX_TEMPERATURE", "Check", "Divergence", "MdResult", "MdSettings", "Series", "Stats", "check_outputs",
           "check_structure", "degrees_of_freedom", "divergence", "eager_reference", "fit_drift", "output_files",
           "read_structure", "relax", "run_md", "stats_of", "write_outputs", "zero_rotation"]
