"""metatomic: the student saved as a metatomic AtomisticModel (TorchScript), the format LAMMPS
(`pair_style metatomic`), i-PI, ASE (metatomic-ase), torch-sim and others load.

The artifact takes systems and the engine's own neighbour list, not deploycc's slot layout, so its runner
(runner.py) calls it the way an engine does: metatomic `System`s from the request's structures, the
requested lists from vesin, energies from the model, forces and virials by autograd through positions and
a strain.  metatomic-torch is an optional extra (`pip install deploycc[metatomic]`), imported only here.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from ...checkpoint import Checkpoint
from ...model import StudentModel
from ..base import Exported, Runner, Target, register
from ..settings import MemoryModel, TargetSettings

PACKAGES = ("metatomic.torch", "metatensor.torch", "vesin.metatomic")


@register
class MetatomicTarget(Target):
    name = "metatomic"
    artifact_file = "model.pt"
    description = "metatomic AtomisticModel (TorchScript) for LAMMPS pair_style metatomic, i-PI, ASE, torch-sim"
    devices = ("cpu", "cuda")
    # Plain autograd through the slot scatter keeps the gathered features for the backward pass, like
    # the TorchScript target; the engine's pair list adds [P, 3] per pair on top.
    defaults = TargetSettings(target="metatomic", memory=MemoryModel(base=0.5e9, per_slot=5.0e3),
                              extra={"chunk_atoms": 512})

    def availability(self, settings: TargetSettings) -> str | None:
        missing = [name for name in PACKAGES if not _importable(name)]
        if missing:
            return f"needs {', '.join(missing)} (pip install deploycc[metatomic])"
        return super().availability(settings)

    def export(self, model: StudentModel, settings: TargetSettings, out_dir: Path) -> Exported:
        from .save import save_atomistic_model

        return save_atomistic_model(model, settings, out_dir / self.artifact_file, elements=None, name="custom")

    def export_checkpoint(self, checkpoint: Checkpoint, settings: TargetSettings, out_dir: Path) -> Exported:
        from .save import save_atomistic_model

        return save_atomistic_model(checkpoint.model, settings, out_dir / self.artifact_file,
                                    elements=checkpoint.elements, name=checkpoint.name)

    def runner(self, artifact: Path, settings: TargetSettings) -> Runner:
        from .runner import MetatomicRunner

        return MetatomicRunner(artifact, settings.device)


def _importable(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False
