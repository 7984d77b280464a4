"""The ANI-1x ensemble as a labelling server, run by any interpreter that has torch and torchani 2.2.4.

torchani 2.2.4 is the release whose wheel ships the 8-network ANI-1x ensemble (`resources/ani-1x_8x`); it
imports `pkg_resources` (setuptools < 70), which deploycc's own environment does not have, so the teacher
runs in its own process: `python ani_worker.py` reads requests on stdin and answers on stdout.  This file
imports nothing from deploycc.  `torchani.models.ANI1x()` would try to download its files (the wheel's
`ani-1x_8x.info` is empty), so the ensemble is built from the shipped files with `torchani.neurochem`;
nothing is written into site-packages.

Protocol: each message is an 8-byte little-endian length and an `.npz` payload.  A request holds `numbers`
(all atoms, int64), `positions` ([atoms, 3], Å, float64) and `counts` (atoms per structure); the answer holds
`energies` (eV, [S]) and `forces` (eV/Å, [atoms, 3]), or `error` (a message).  An empty request ends the server.
"""

from __future__ import annotations

import io
import struct
import sys
from pathlib import Path

HARTREE_EV = 27.211386024367243  # CODATA 2018, as ASE's units.Hartree
ELEMENTS = (1, 6, 7, 8)
BATCH_ATOMS = 4096  # padded atoms per ensemble call (memory stays small; throughput is flat beyond)


def ani1x():
    """The ANI-1x ensemble from the files shipped in the torchani 2.2.4 wheel (periodic-table indices in)."""
    import setuptools  # noqa: F401  (Python 3.12 has no distutils; setuptools installs the shim torchani imports)
    import torchani
    from torchani import neurochem
    from torchani.aev import AEVComputer
    from torchani.models import BuiltinEnsemble
    from torchani.nn import SpeciesConverter

    root = Path(torchani.__file__).resolve().parent / "resources" / "ani-1x_8x"
    consts = neurochem.Constants(str(root / "rHCNO-5.2R_16-3.5A_a4-8.params"))
    shifter, sae = neurochem.load_sae(str(root / "sae_linfit.dat"), return_dict=True)
    networks = neurochem.load_model_ensemble(consts.species, str(root / "train"), 8)
    return BuiltinEnsemble(SpeciesConverter(consts.species), AEVComputer(**consts), networks, shifter,
                           consts.species_to_tensor, consts, sae, True).eval()


def label(model, numbers, positions, counts):
    """Energies (eV) and forces (eV/Å) of molecules, batched by size with padding (species -1)."""
    import numpy as np
    import torch

    offsets = np.concatenate([[0], np.cumsum(counts)])
    energies = np.zeros(len(counts))
    forces = np.zeros((len(numbers), 3))
    order = np.argsort(counts, kind="stable")
    start = 0
    while start < len(order):
        width = int(counts[order[start]])
        stop = start
        while stop < len(order) and (stop - start + 1) * int(counts[order[stop]]) <= max(BATCH_ATOMS, width):
            stop += 1
        chosen = order[start:stop]
        width = int(counts[chosen].max())
        species = torch.full((len(chosen), width), -1, dtype=torch.long)
        coordinates = torch.zeros((len(chosen), width, 3), dtype=torch.float32)
        for row, k in enumerate(chosen):
            a, b = offsets[k], offsets[k + 1]
            species[row, : b - a] = torch.from_numpy(numbers[a:b])
            coordinates[row, : b - a] = torch.from_numpy(positions[a:b])
        coordinates.requires_grad_(True)
        energy = model((species, coordinates)).energies
        (grad,) = torch.autograd.grad(energy.sum(), coordinates)
        energy = energy.detach()
        for row, k in enumerate(chosen):
            a, b = offsets[k], offsets[k + 1]
            energies[k] = float(energy[row]) * HARTREE_EV
            forces[a:b] = -grad[row, : b - a].double().numpy() * HARTREE_EV
        start = stop
    return energies, forces


def read_message(stream):
    header = stream.read(8)
    if len(header) < 8:
        return None
    (size,) = struct.unpack("<Q", header)
    return stream.read(size) if size else b""


def write_message(stream, payload: bytes) -> None:
    stream.write(struct.pack("<Q", len(payload)) + payload)
    stream.flush()


def pack(**arrays) -> bytes:
    import numpy as np

    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def serve() -> None:
    import warnings

    import numpy as np
    import torch

    warnings.filterwarnings("ignore")  # torchani's "cuaev not installed" and friends: stdout stays protocol-only
    torch.set_num_threads(int(sys.argv[1]) if len(sys.argv) > 1 else 1)
    model = ani1x()
    inp, out = sys.stdin.buffer, sys.stdout.buffer
    write_message(out, pack(ready=np.array(ELEMENTS)))
    while True:
        payload = read_message(inp)
        if not payload:
            return
        try:
            request = np.load(io.BytesIO(payload))
            numbers, positions, counts = request["numbers"], request["positions"], request["counts"]
            outside = sorted(set(int(z) for z in numbers) - set(ELEMENTS))
            if outside:
                raise ValueError(f"ANI-1x knows H C N O only, got atomic numbers {outside}")
            energies, forces = label(model, numbers.astype(np.int64), positions.astype(np.float32), counts)
            write_message(out, pack(energies=energies, forces=forces))
        except Exception as exc:  # noqa: BLE001 - any failure is the client's to report, the server goes on
            write_message(out, pack(error=np.array(f"{type(exc).__name__}: {exc}")))


if __name__ == "__main__":
    serve()
