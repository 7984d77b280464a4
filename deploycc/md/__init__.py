"""MD validation runs through ASE: settings and results, the run itself, the energy plot."""

from .results import Check, Divergence, MdResult, MdSettings, Series, Stats
from .run import (degrees_of_freedom, divergence, eager_reference, fit_drift, read_structure, relax, run_md,
                  stats_of, write_outputs)

__all__ = ["Check", "Divergence", "MdResult", "MdSettings", "Series", "Stats", "degrees_of_freedom", "divergence",
           "eager_reference", "fit_drift", "read_structure", "relax", "run_md", "stats_of", "write_outputs"]
