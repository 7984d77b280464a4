"""Python API: `load()` any artifact, checkpoint or preset into a Predictor for ASE structures."""

from .runtime.load import load, reference_predictor
from .runtime.predictor import Predictor

__all__ = ["load", "reference_predictor", "Predictor"]
