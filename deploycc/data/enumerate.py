"""A deterministic enumerator of small drug-like molecules of H C N O F P S Cl, assembled with RDKit.

Parts are declared below (no downloads): ring scaffolds and chains, two-ended linkers and substituents,
plus ASE's g2 collection and the hand-picked molecules of smiles.txt. Recipes join parts by single bonds
at symmetry-unique hydrogen-bearing atoms; every product is sanitized, checked (elements, net charge 0,
no radicals, 3-60 atoms with hydrogens, no peroxide / N-halogen / hydrazine-like bonds) and deduplicated
by canonical SMILES. `ranking` orders the pool so that every prefix is balanced by element group
(HCNO-only, F, Cl, S, P) and by size; `enumerate_molecules` is a prefix of it, and `build` keeps the
first molecules of the ranking that RDKit embeds (`generate.embed`), which is what molecules.txt ships.

    deploycc data molecules --count 1200 --seed 0 --out deploycc/data/molecules.txt
"""

from __future__ import annotations

import random
import time
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Iterator

from .fragments import CHAINS, FORBIDDEN, FUSED, LINKERS, RINGS, SUBSTITUENTS

MOLECULES_FILE = Path(__file__).with_name("molecules.txt")
ALLOWED = frozenset({1, 6, 7, 8, 9, 15, 16, 17})  # H C N O F P S Cl
HCNO = frozenset({1, 6, 7, 8})
SYMBOLS = {1: "H", 6: "C", 7: "N", 8: "O", 9: "F", 15: "P", 16: "S", 17: "Cl"}
MIN_ATOMS, MAX_ATOMS = 3, 60  # atoms with hydrogens; the curated molecules of smiles.txt are kept whatever their size
# element groups: a molecule belongs to the rarest of P > S > Cl > F it contains, else to HCNO
GROUP_ORDER = ("P", "S", "Cl", "F")
GROUP_SHARE = {"HCNO": 0.55, "F": 0.1125, "Cl": 0.1125, "S": 0.1125, "P": 0.1125}
SIZE_BINS = ((3, 10), (11, 20), (21, 30), (31, 40), (41, 60))
SIZE_SHARE = (1.0, 2.0, 2.0, 2.0, 1.0)  # mostly 11-40 atoms with hydrogens, fewer tiny and large ones


def _chem():
    try:
        from rdkit import Chem, RDLogger
    except ImportError:
        from ..errors import MissingDependencyError

        raise MissingDependencyError("the molecule enumerator needs RDKit: pip install 'deploycc[data]'") from None
    RDLogger.DisableLog("rdApp.*")
    return Chem


@lru_cache(maxsize=None)
def _mol(smiles: str):
    mol = _chem().MolFromSmiles(smiles)
    if mol is None:
        raise ValueError(f"bad part SMILES {smiles!r}")
    return mol


@lru_cache(maxsize=None)
def _forbidden():
    Chem = _chem()
    return tuple(Chem.MolFromSmarts(s) for s in FORBIDDEN)


def _sites(mol, among: Iterable[int] | None = None) -> list[int]:
    """One atom per symmetry class among `among` (default all) that bears at least one hydrogen."""
    Chem = _chem()
    ranks = list(Chem.CanonicalRankAtoms(mol, breakTies=False))
    seen, out = set(), []
    for i in range(mol.GetNumAtoms()) if among is None else among:
        atom = mol.GetAtomWithIdx(i)
        if atom.GetTotalNumHs() > 0 and ranks[i] not in seen:
            seen.add(ranks[i])
            out.append(i)
    return out


def join(a, ia: int, b, ib: int):
    """Molecule `a` bonded (single bond) from its atom `ia` to atom `ib` of `b`, each losing an H; None if invalid."""
    Chem = _chem()
    if a.GetAtomWithIdx(ia).GetTotalNumHs() < 1 or b.GetAtomWithIdx(ib).GetTotalNumHs() < 1:
        return None
    rw = Chem.RWMol(Chem.CombineMols(a, b))
    j = a.GetNumAtoms() + ib
    for k in (ia, j):
        atom = rw.GetAtomWithIdx(k)
        explicit = atom.GetNumExplicitHs()
        if explicit > 0:
            atom.SetNumExplicitHs(explicit - 1)
        elif atom.GetNoImplicit():
            return None
    rw.AddBond(ia, j, Chem.BondType.SINGLE)
    mol = rw.GetMol()
    try:
        Chem.SanitizeMol(mol)
    except Exception:  # valence or aromaticity failure: not a molecule
        return None
    return mol


def profile(mol) -> tuple[frozenset[int], int, int, int]:
    """(elements including H, atoms with hydrogens, net formal charge, radical electrons) in one pass."""
    zs, atoms, charge, radicals, hydrogens = set(), 0, 0, 0, 0
    for a in mol.GetAtoms():
        zs.add(a.GetAtomicNum())
        hydrogens += a.GetTotalNumHs()
        charge += a.GetFormalCharge()
        radicals += a.GetNumRadicalElectrons()
        atoms += 1
    if hydrogens:
        zs.add(1)
    return frozenset(zs), atoms + hydrogens, charge, radicals


def atom_count(mol) -> int:
    """Atoms including hydrogens (as after Chem.AddHs)."""
    return profile(mol)[1]


def elements_of(mol) -> frozenset[int]:
    return profile(mol)[0]


def acceptable(mol, size: bool = True) -> bool:
    """Elements H C N O F P S Cl only, net charge 0, closed shell, and (if `size`) 3-60 atoms with H."""
    if mol is None:
        return False
    zs, n, charge, radicals = profile(mol)
    return zs <= ALLOWED and charge == 0 and radicals == 0 and (not size or MIN_ATOMS <= n <= MAX_ATOMS)


def group_of(zs: Iterable[int]) -> str:
    zs = {SYMBOLS.get(z, "?") for z in zs}
    for g in GROUP_ORDER:
        if g in zs:
            return g
    return "HCNO"


def size_bin(n: int) -> int:
    for k, (lo, hi) in enumerate(SIZE_BINS):
        if lo <= n <= hi:
            return k
    return len(SIZE_BINS) - 1 if n > SIZE_BINS[-1][1] else 0


# --------------------------------------------------------------------------------------------- sources


def curated() -> list[tuple[str, str]]:
    """The hand-picked molecules of smiles.txt."""
    from .generate import read_smiles

    return read_smiles()


def g2_smiles() -> list[tuple[str, str]]:
    """Neutral closed-shell molecules of ASE's g2 collection made of H C N O F P S Cl, as (SMILES, name);
    bonds from RDKit's rdDetermineBonds, molecules it cannot assign skipped."""
    Chem = _chem()
    from ase.collections import g2
    from rdkit.Chem import rdDetermineBonds

    out = []
    for name in sorted(g2.names):
        atoms = g2[name]
        zs = [int(z) for z in atoms.numbers]
        if not set(zs) <= ALLOWED or sum(zs) % 2 or len(zs) < MIN_ATOMS:
            continue
        if abs(atoms.get_initial_magnetic_moments()).sum() > 1e-6:
            continue
        xyz = f"{len(atoms)}\n\n" + "\n".join(f"{SYMBOLS[z]} {p[0]:.6f} {p[1]:.6f} {p[2]:.6f}"
                                               for z, p in zip(zs, atoms.positions))
        try:
            mol = Chem.MolFromXYZBlock(xyz)
            rdDetermineBonds.DetermineBonds(mol, charge=0)
            mol = Chem.RemoveHs(mol)
            smiles = Chem.MolToSmiles(mol)
        except Exception:  # bond assignment fails for some small molecules: skip them
            continue
        check = Chem.MolFromSmiles(smiles)
        if check is not None and acceptable(check):
            out.append((smiles, "g2_" + name.replace("-", "_")))
    return out


def _decorate(rng: random.Random, mol, name: str, among, n_subs: int):
    """`mol` with `n_subs` random substituents at random sites among `among` (None when one fails)."""
    for _ in range(n_subs):
        sites = _sites(mol, among)
        if not sites:
            return None, name
        site = rng.choice(sites)
        sname, ssmi = rng.choice(SUBSTITUENTS)
        mol = join(mol, site, _mol(ssmi), 0)
        if mol is None:
            return None, name
        name = f"{name}_{sname}@{site}"
    return mol, name


def _linked(rng: random.Random, kind: str, rings) -> tuple[object, str] | None:
    """One part - linker - part molecule, each part a ring or chain with 0-1 substituents (None: no product)."""
    left = rng.choice(CHAINS if kind != "ring-ring" else rings)
    right = rng.choice(CHAINS if kind == "chain-chain" else rings)
    lname, lsmi, head, tail = rng.choice(LINKERS)
    if rng.random() < 0.5:
        head, tail = tail, head
    a = _mol(left[1])
    b = _mol(right[1])
    a_sites, b_sites = _sites(a), _sites(b)
    if not a_sites or not b_sites:
        return None
    ia, ib = rng.choice(a_sites), rng.choice(b_sites)
    if lsmi:
        mol = join(a, ia, _mol(lsmi), head)
        if mol is None:
            return None
        mol = join(mol, a.GetNumAtoms() + tail, b, ib)
    else:
        mol = join(a, ia, b, ib)
    if mol is None:
        return None
    name = f"{left[0]}@{ia}-{lname}-{right[0]}@{ib}"
    b_start = mol.GetNumAtoms() - b.GetNumAtoms()  # decoration appends atoms: part ranges stay valid
    for among in (range(a.GetNumAtoms()), range(b_start, b_start + b.GetNumAtoms())):
        if mol is not None and rng.random() < 0.45:
            mol, name = _decorate(rng, mol, name, among, 1)
    return mol, name


def _assembled(seed: int) -> Iterator[tuple[object, str]]:
    """(mol, name) from the recipes; random choices come from random.Random(seed) alone."""
    rng = random.Random(seed)
    rings = RINGS + FUSED
    # 1. every scaffold bare and with one substituent at every symmetry-unique site
    for sc_name, sc in RINGS + FUSED + CHAINS:
        base = _mol(sc)
        yield base, sc_name
        for site in _sites(base):
            for sname, ssmi in SUBSTITUENTS:
                yield join(base, site, _mol(ssmi), 0), f"{sc_name}_{sname}@{site}"
    # 2. rings with two or three substituents (random sites and substituents)
    for n_subs, tries in ((2, 3000), (3, 1000)):
        for _ in range(tries):
            sc_name, sc = rng.choice(rings)
            base = _mol(sc)
            yield _decorate(rng, base, sc_name, range(base.GetNumAtoms()), n_subs)
    # 3. part - linker - part
    for kind, tries in (("ring-ring", 3000), ("chain-ring", 2500), ("chain-chain", 800)):
        for _ in range(tries):
            product = _linked(rng, kind, rings)
            if product is not None:
                yield product


@lru_cache(maxsize=4)
def candidates(seed: int = 0) -> tuple[tuple[str, str, frozenset[int], int, str], ...]:
    """The pool: (canonical SMILES, name, elements, atoms with H, source) in a fixed order, curated first,
    then g2, then assembled; deduplicated by canonical SMILES (cached per seed: about 5 s to build)."""
    Chem = _chem()
    pool: dict[str, tuple[str, str, frozenset[int], int, str]] = {}

    def add(mol, name, source, size=True):
        if mol is None:
            return
        smiles = Chem.MolToSmiles(mol)
        if smiles in pool:
            return
        zs, n, charge, radicals = profile(mol)
        if zs <= ALLOWED and charge == 0 and radicals == 0 and (not size or MIN_ATOMS <= n <= MAX_ATOMS):
            pool[smiles] = (smiles, name, zs, n, source)

    for smiles, name in curated():
        add(Chem.MolFromSmiles(smiles), name, "curated", size=False)
    for smiles, name in g2_smiles():
        add(Chem.MolFromSmiles(smiles), name, "g2")
    forbidden = _forbidden()
    for mol, name in _assembled(seed):
        if mol is not None and mol.GetNumAtoms() <= MAX_ATOMS and not any(mol.HasSubstructMatch(p) for p in forbidden):
            add(mol, name, "assembled")
    return tuple(pool.values())


def ranking(seed: int = 0, elements: set[int] | None = None) -> list[tuple[str, str]]:
    """All candidates allowed by `elements` (atomic numbers; default H C N O F P S Cl), ordered so that every
    prefix is balanced: curated first, then greedily the element group and size bin furthest below its share."""
    allowed = ALLOWED if elements is None else frozenset(elements) & ALLOWED
    pool = [c for c in candidates(seed) if c[2] <= allowed]
    rng = random.Random(f"rank-{seed}")
    head = [c for c in pool if c[4] == "curated"]
    buckets: dict[str, list[list]] = {g: [[] for _ in SIZE_BINS] for g in GROUP_SHARE}
    for c in sorted((c for c in pool if c[4] != "curated"), key=lambda c: c[0]):
        buckets[group_of(c[2])][size_bin(c[3])].append(c)
    for bins in buckets.values():
        for b in bins:
            rng.shuffle(b)
    group_n = {g: 0 for g in GROUP_SHARE}
    bin_n = {g: [0] * len(SIZE_BINS) for g in GROUP_SHARE}
    for c in head:
        group_n[group_of(c[2])] += 1
        bin_n[group_of(c[2])][size_bin(c[3])] += 1
    order = list(GROUP_SHARE)
    out = [(c[0], c[1]) for c in head]
    total = len(out)
    while True:
        live = [g for g in GROUP_SHARE if any(buckets[g])]
        if not live:
            break
        share = sum(GROUP_SHARE[g] for g in live)
        g = max(live, key=lambda g: (GROUP_SHARE[g] / share * (total + 1) - group_n[g], -order.index(g)))
        bins = [k for k, b in enumerate(buckets[g]) if b]
        bshare = sum(SIZE_SHARE[k] for k in bins)
        k = max(bins, key=lambda k: (SIZE_SHARE[k] / bshare * (group_n[g] + 1) - bin_n[g][k], -k))
        c = buckets[g][k].pop()
        out.append((c[0], c[1]))
        group_n[g] += 1
        bin_n[g][k] += 1
        total += 1
    return out


def enumerate_molecules(count: int = 1200, seed: int = 0, elements: set[int] | None = None) -> list[tuple[str, str]]:
    """`count` (SMILES, name) pairs (fewer if the pool is smaller), balanced by element group and size, made
    only of `elements` (atomic numbers, e.g. {1, 6, 7, 8} for an H C N O teacher; default all eight)."""
    return ranking(seed, elements)[:count]


def molecule_stats(pairs: Iterable[tuple[str, str]]) -> dict:
    """count, molecules containing each element, histogram of atoms with H (bins of 10), and HCNO-only count."""
    Chem = _chem()
    per_element = {s: 0 for s in SYMBOLS.values()}
    sizes: dict[str, int] = {}
    count = hcno = 0
    for smiles, _name in pairs:
        mol = Chem.MolFromSmiles(smiles)
        zs = elements_of(mol)
        for z in zs:
            per_element[SYMBOLS.get(z, str(z))] = per_element.get(SYMBOLS.get(z, str(z)), 0) + 1
        n = atom_count(mol)
        lo = max(1, (n - 1) // 10 * 10 + 1)
        key = f"{lo}-{lo + 9}"
        sizes[key] = sizes.get(key, 0) + 1
        hcno += zs <= HCNO
        count += 1
    sizes = dict(sorted(sizes.items(), key=lambda kv: int(kv[0].split("-")[0])))
    return {"count": count, "elements": per_element, "sizes": sizes, "hcno_only": hcno}


def build(count: int = 1200, seed: int = 0, elements: set[int] | None = None, embed_seed: int = 0,
          log=None) -> tuple[list[tuple[str, str]], list[tuple[str, str]], float]:
    """The first `count` molecules of the ranking that `generate.embed(smiles, embed_seed)` embeds, those that
    failed before the last one kept, and the seconds embedding took."""
    from .generate import embed

    kept, dropped = [], []
    ranked = ranking(seed, elements)
    start = time.perf_counter()
    for smiles, name in ranked:
        if len(kept) >= count:
            break
        if embed(smiles, embed_seed) is None:
            dropped.append((smiles, name))
        else:
            kept.append((smiles, name))
        if log is not None and (len(kept) + len(dropped)) % 100 == 0:
            log(f"{len(kept)} embedded, {len(dropped)} failed, {time.perf_counter() - start:.0f} s")
    return kept, dropped, time.perf_counter() - start


def read_dropped(path: Path = MOLECULES_FILE) -> list[tuple[str, str]]:
    """The molecules a shipped file's header lists as failing to embed ('# dropped: SMILES name')."""
    out = []
    for line in Path(path).read_text().splitlines():
        if line.startswith("# dropped: "):
            parts = line[len("# dropped: "):].split()
            out.append((parts[0], parts[1] if len(parts) > 1 else parts[0]))
    return out


def write(path: Path, kept, dropped, count: int, seed: int, embed_seed: int, seconds: float,
          elements: str = "") -> None:
    """The SMILES file with its header (how to regenerate it, counts, the molecules that did not embed),
    written to a temporary name and renamed."""
    from rdkit import rdBase

    stats = molecule_stats(kept)
    lines = [
        "# Small drug-like molecules of H C N O F P S Cl, one SMILES per line, name after a space.",
        "# Generated by deploycc/data/enumerate.py (curated smiles.txt + ASE g2 + scaffolds/chains joined with",
        "# linkers and substituents, balanced by element group and size, only those RDKit embeds):",
        f"#   deploycc data molecules --count {count} --seed {seed} --embed-seed {embed_seed}"
        + (f" --elements {elements}" if elements else "") + f" --out {path}",
        f"# RDKit {rdBase.rdkitVersion}; embedding took {seconds:.0f} s. Do not edit by hand.",
        f"# count {stats['count']}, H C N O only {stats['hcno_only']}",
        "# molecules per element: " + " ".join(f"{k}={v}" for k, v in stats["elements"].items()),
        "# atoms with H: " + " ".join(f"{k}:{v}" for k, v in stats["sizes"].items()),
    ]
    lines += [f"# dropped: {s} {n}" for s, n in dropped]
    lines += [f"{s} {n}" for s, n in kept]
    from ..artifact.layout import write_text_atomic

    write_text_atomic(Path(path), "\n".join(lines) + "\n")
