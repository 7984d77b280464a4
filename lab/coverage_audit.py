"""Which atom environments of the held-out molecules no training molecule has, and which a training-only list
adds: how deploycc/data/coverage.txt was chosen (from structures only, no labels).

    python lab/coverage_audit.py [--molecules deploycc/data/molecules.txt] [--train-only deploycc/data/coverage.txt]

An environment is an atom's element, its neighbours' elements (hydrogens included) and its formal charge, as
RDKit reads the SMILES.  The split is distil's (split seed 0, the shipped clusters appended).  Each val/test
molecule with an environment missing from training is printed, then whether the training-only list covers it.
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path


def environments(smiles: str) -> set[str]:
    """'element[sorted neighbour elements]q<charge>' of every atom, hydrogens included."""
    from rdkit import Chem

    mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
    return {f"{a.GetSymbol()}[{''.join(sorted(n.GetSymbol() for n in a.GetNeighbors()))}]q{a.GetFormalCharge()}"
            for a in mol.GetAtoms()}


def main() -> None:
    from deploycc.data.clusters import read_clusters
    from deploycc.data.generate import read_smiles
    from deploycc.train.frames import split_molecules

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--molecules", type=Path, default=Path("deploycc/data/molecules.txt"))
    parser.add_argument("--train-only", type=Path, default=Path("deploycc/data/coverage.txt"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    pairs = read_smiles(args.molecules)
    names = dict(enumerate(name for _, name in pairs))
    split = split_molecules(pairs + list(read_clusters()), args.seed)
    train = Counter(e for _, smi in split["train"] for e in environments(smi))
    train_only = read_smiles(args.train_only)
    extra = Counter(e for smi, _ in train_only for e in environments(smi))
    gaps = covered = 0
    for name in ("val", "test"):
        for mol_id, smi in split[name]:
            missing = sorted(e for e in environments(smi) if train[e] == 0)
            if not missing:
                continue
            gaps += 1
            now = [e for e in missing if extra[e] == 0]
            covered += not now
            print(f"{name:4s} {mol_id:5d} {names.get(mol_id, smi):40s} missing {' '.join(missing)}"
                  f"  -> {'covered' if not now else 'still missing ' + ' '.join(now)}")
    print(f"{gaps} held-out molecules with an environment no training molecule has; {covered} covered by "
          f"{args.train_only} ({len(train_only)} molecules)")


if __name__ == "__main__":
    main()
