"""`from deploycc.ase import DeployccCalculator`: the ASE calculator (deploycc/runtime/ase.py)."""

from .runtime.ase import DeployccCalculator, calculator_results

__all__ = ["DeployccCalculator", "calculator_results"]
