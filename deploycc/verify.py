"""verify(): re-measure a built artifact (the CI gate): hashes, parity against its reference checkpoint on any
structure file with the tolerances this installation defines for the target, and errors against labels.

Nothing recorded in the manifest is trusted for the verdict: parity is recomputed, and tolerances come from
the installed target (`Target.settings()`), not from the manifest; a manifest whose recorded tolerances
differ is reported.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np

from .artifact.open import open_artifact, reference_checkpoint
from .build import calibration_structures, run_parity
from .data.schema import Structures, read_structures
from .errors import UserInputError
from .paths import default_calib_file
from .runtime.predictor import Predictor
from .runtime.validate import Rules, check_unseen_policy
from .targets.base import Runner
from .targets.eager import eager_runner


def check_labels(data: Structures, where: str) -> None:
    """Refuse NaN or infinite reference labels (by structure index, prefixed with `where`, the file)."""
    for k in range(len(data)):
        if not np.isfinite(data.energies[k]) or not np.isfinite(data.forces[k]).all():
            what = "energy" if not np.isfinite(data.energies[k]) else "forces"
            raise UserInputError(f"{where}: structure {k} has NaN or infinite reference labels ({what})")


def check_fits(data: Structures, where: str, max_atoms: int) -> None:
    """Refuse a file none of whose structures the artifact's atoms profile takes: parity would compare nothing."""
    if not any(len(z) <= max_atoms for z in data.numbers):
        raise UserInputError(f"{where}: none of the {len(data)} structures fits the artifact's atoms profile "
                             f"(at most {max_atoms} atom{'' if max_atoms == 1 else 's'})")


def label_errors(runner: Runner, rules: Rules, settings, data: Structures) -> dict[str, float]:
    """Energy MAE per atom and force MAE/RMSE of a runner against the file's reference labels, over the
    structures the artifact's atoms profile takes (parity skips the others too)."""
    check_labels(data, "the data file")  # verify() has checked them already, naming the file
    fitting = [k for k, z in enumerate(data.numbers) if len(z) <= settings.atoms.max]
    skipped = len(data) - len(fitting)
    data = data.subset(fitting)
    if not len(data):  # nothing to compare: the errors are unknown (null in JSON), not zero
        return {"energy_mae_per_atom": float("nan"), "force_mae": float("nan"), "force_rmse": float("nan"),
                "structures": 0, "skipped_too_large": skipped}
    predictor = Predictor(runner, settings, rules)
    energies, forces, _stresses = predictor.evaluate(data.to_atoms(), check=False)
    sizes = np.array([len(z) for z in data.numbers], dtype=np.float64)
    diff = np.concatenate([(f - ref).ravel() for f, ref in zip(forces, data.forces)])
    return {"energy_mae_per_atom": float(np.mean(np.abs(energies - data.energies) / sizes)),
            "force_mae": float(np.mean(np.abs(diff))), "force_rmse": float(np.sqrt(np.mean(diff**2))),
            "structures": len(data), "skipped_too_large": skipped}


def tolerance_disagreements(recorded: dict[str, Any], installed: dict[str, Any]) -> dict[str, Any]:
    """Tolerances whose recorded value differs from the installed target's ({name: [recorded, installed]})."""
    return {k: [recorded.get(k), v] for k, v in installed.items() if recorded.get(k) != v}


def verify(folder: Path, data_path: Path | None = None, device: str | None = None,
           unseen_elements: str = "warn") -> dict[str, Any]:
    """Check hashes, rerun parity against the manifest's checkpoint, and compare with labels if present.

    The structures are checked first (bad ones are refused with UserInputError naming the file, as
    `deploycc.api` does), and so are the reference labels (NaN or infinite ones are refused) and the sizes (a
    file none of whose structures fits the artifact's atoms profile is refused: parity would compare nothing),
    all before parity runs; `unseen_elements` (warn, refuse, allow) handles elements absent from the model's
    training data."""
    check_unseen_policy(unseen_elements)
    opened = open_artifact(folder, device)
    checkpoint = reference_checkpoint(opened.folder, opened.manifest)
    path = Path(data_path) if data_path else default_calib_file(bool(opened.manifest.model_config.get("periodic")))
    rules = Rules.make(opened.label, checkpoint.config.max_z, checkpoint.config.cutoff, opened.manifest.elements,
                       unseen_elements, opened.settings.neighbours.max)
    data = read_structures(path)
    if data.has_labels:
        check_labels(data, str(path))
    check_fits(data, str(path), opened.settings.atoms.max)
    structures = calibration_structures(path, checkpoint.config.cutoff, rules, data)  # every structure checked
    installed = opened.target.settings(device).tolerances
    settings = replace(opened.settings, tolerances=installed)
    report = run_parity(checkpoint, opened.runner, settings, structures)
    out: dict[str, Any] = {"artifact": str(opened.folder), "target": opened.manifest.target,
                           "device": settings.device, "data": str(path), "parity": report.to_dict(),
                           "tolerances": asdict(installed)}
    disagree = tolerance_disagreements(opened.manifest.settings.get("tolerances") or {}, asdict(installed))
    if disagree:
        out["manifest_disagrees"] = disagree
    labels_by = str(data.attrs.get("teacher", "")) if data.attrs else ""
    distilled_from = str(checkpoint.metadata.get("teacher", ""))
    from .data.teachers import TEACHERS

    if data.has_labels and {labels_by, distilled_from} <= set(TEACHERS) and labels_by != distilled_from:
        # Another teacher's labels (another energy zero, another method): errors against them mean nothing.
        out["labels_not_compared"] = f"the labels are {labels_by}'s; the checkpoint was distilled from {distilled_from}"
    elif data.has_labels:
        eager = eager_runner(copy.deepcopy(checkpoint.model), "cpu")
        out["vs_labels"] = {opened.manifest.target: label_errors(opened.runner, rules, settings, data),
                            "eager": label_errors(eager, rules, settings, data)}
    return out
