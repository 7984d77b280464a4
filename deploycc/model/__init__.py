"""The student model: layers, presets and energy+forces. Knows nothing about export."""

from .config import PRESET_CONFIGS, ModelConfig, preset_config
from .stress import EnergyForcesVirial, energy_forces_virial, stress_from_virial
from .student import EnergyForces, StudentModel, energy_and_forces

__all__ = ["ModelConfig", "PRESET_CONFIGS", "preset_config", "StudentModel", "EnergyForces", "energy_and_forces",
           "EnergyForcesVirial", "energy_forces_virial", "stress_from_virial"]
