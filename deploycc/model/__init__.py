"""The student model: layers, presets, energies, forces and virials. Knows nothing about export."""

from .config import PRESET_CONFIGS, ModelConfig, preset_config
from .forces import EnergyForcesVirials, energy_forces_virials, forces_and_virials, stress_from_virial
from .student import StudentModel

__all__ = ["ModelConfig", "PRESET_CONFIGS", "preset_config", "StudentModel", "EnergyForcesVirials",
           "energy_forces_virials", "forces_and_virials", "stress_from_virial"]
