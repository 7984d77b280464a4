"""verify(): parity of a built artifact against eager on any structure file, plus error vs labels."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np

from .api import artifact_elements, check_structures, check_unseen_policy
from .batching import pad
from .data.schema import Structures
from .parity import check_parity
from .paths import default_calib_file
from .periodic import periodic_batch
from .pipeline import calibration_structures, open_artifact, reference_checkpoint
from .targets.base import Runner
from .targets.eager import EagerRunner


def label_errors(runner: Runner, data: Structures, max_atoms: int, batch_size: int = 32) -> dict[str, float]:
    """Energy MAE per atom and force MAE/RMSE of a runner against the file's reference labels."""
    keep = [k for k, z in enumerate(data.numbers) if len(z) <= max_atoms]
    e_err, f_err = [], []
    for start in range(0, len(keep), batch_size):
        idx = keep[start : start + batch_size]
        z, r = pad([data.numbers[k] for k in idx], [data.positions[k] for k in idx])
        periodic = periodic_batch(data, idx)
        energy, forces = (t.detach().float().cpu().numpy() for t in runner.predict(z, r, *periodic))
        for row, k in enumerate(idx):
            n = len(data.numbers[k])
            e_err.append(abs(energy[row] - data.energies[k]) / n)
            f_err.append((forces[row, :n] - data.forces[k]).ravel())
    diff = np.concatenate(f_err)
    return {"energy_mae_per_atom": float(np.mean(e_err)), "force_mae": float(np.mean(np.abs(diff))),
            "force_rmse": float(np.sqrt(np.mean(diff**2))), "structures": len(keep)}


def verify(folder: Path, data_path: Path | None = None, device: str | None = None,
           unseen_elements: str = "warn") -> dict[str, Any]:
    """Check hashes, rerun parity against the manifest's checkpoint, and compare with labels if present.

    The structures are checked first (bad ones are refused with UserInputError, as `deploycc.api` does);
    `unseen_elements` (warn, refuse, allow) handles elements absent from the model's training data."""
    check_unseen_policy(unseen_elements)
    runner, manifest, settings = open_artifact(folder, device)
    folder = Path(folder).parent if Path(folder).is_file() else Path(folder)
    checkpoint = reference_checkpoint(folder, manifest)
    data = calibration_structures(data_path or default_calib_file(bool(manifest["model_config"].get("periodic"))))
    check_structures(data.numbers, data.positions, checkpoint.config.max_z, f"{manifest['model']}/{manifest['target']}",
                     artifact_elements(folder, manifest), unseen_elements, source=str(data_path or "calib"))
    eager = EagerRunner(copy.deepcopy(checkpoint.model), "cpu")
    report = check_parity(eager.evaluate, runner.evaluate, data.numbers, data.positions, settings.tolerances,
                          batch_size=min(16, settings.batch.max), max_atoms=settings.atoms.max,
                          cells=data.cells, pbc=data.pbc)
    out: dict[str, Any] = {"artifact": str(folder), "target": manifest["target"], "device": settings.device,
                           "data": str(data_path or "calib"), "parity": report.to_dict()}
    if data.has_labels:
        out["vs_labels"] = {manifest["target"]: label_errors(runner, data, settings.atoms.max),
                            "eager": label_errors(eager, data, settings.atoms.max)}
    return out
