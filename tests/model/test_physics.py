"""Physical invariants of the student model: symmetry, conservative forces, cutoff smoothness, locality,
batching and padding slots.  Every model here is randomly initialised (seeded) and then perturbed so that its
outputs are O(1) eV and eV/A: a fresh model's tiny output scale would let broken invariants slip under
tolerances.  Structures are written as [B, N] numbers (0 = padding at the end of a row) and [B, N, 3]
positions and go through the neighbour layout (`ef`), so one test can hold several structures."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from deploycc.model import PRESET_CONFIGS, StudentModel, energy_forces_virials
from deploycc.runtime.neighbours import Structure, neighbour_batch
from deploycc.targets.base import GraphInputs

torch.set_num_threads(1)

CUTOFF = 5.0

# --- fixtures: small molecules typed in (Angstrom) -------------------------------------------------------

WATER = (
    [8, 1, 1],
    [[0.0, 0.0, 0.1173], [0.0, 0.7572, -0.4692], [0.0, -0.7572, -0.4692]],
)
METHANE = (
    [6, 1, 1, 1, 1],
    [
        [0.0, 0.0, 0.0],
        [0.6291, 0.6291, 0.6291],
        [-0.6291, -0.6291, 0.6291],
        [-0.6291, 0.6291, -0.6291],
        [0.6291, -0.6291, -0.6291],
    ],
)
ETHANOL = (
    [6, 6, 8, 1, 1, 1, 1, 1, 1],
    [
        [1.168181, -0.400382, 0.0],
        [0.0, 0.559462, 0.0],
        [-1.190083, -0.227669, 0.0],
        [-1.946623, 0.381525, 0.0],
        [0.042557, 1.207508, 0.886933],
        [0.042557, 1.207508, -0.886933],
        [2.115891, 0.144800, 0.0],
        [1.128599, -1.037234, 0.885881],
        [1.128599, -1.037234, -0.885881],
    ],
)


def random_molecule(n: int, seed: int, min_dist: float = 0.9, box: float = 3.0) -> tuple[list[int], np.ndarray]:
    """n atoms (H, C, N, O) at random positions in a box, no two closer than `min_dist`."""
    rng = np.random.default_rng(seed)
    positions: list[np.ndarray] = []
    while len(positions) < n:
        candidate = rng.uniform(0.0, box, size=3)
        if all(np.linalg.norm(candidate - p) >= min_dist for p in positions):
            positions.append(candidate)
    numbers = rng.choice([1, 6, 7, 8], size=n).tolist()
    return numbers, np.asarray(positions)


def as_batch(molecule, dtype=torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    numbers, positions = molecule
    z = torch.tensor([numbers], dtype=torch.int64)
    r = torch.tensor(np.asarray(positions, dtype=np.float64), dtype=dtype).unsqueeze(0)
    return z, r


def make_model(preset: str = "tiny", seed: int = 0, dtype=torch.float64) -> StudentModel:
    """A seeded model with perturbed weights and random normalisation, so outputs are O(1)."""
    torch.manual_seed(seed)
    model = StudentModel(PRESET_CONFIGS[preset])
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(torch.empty_like(p).uniform_(0.5, 2.0)).add_(0.05 * torch.randn(p.shape))
        model.scale.fill_(5.0)
        model.shift.fill_(-0.3)
        model.element_ref.copy_(torch.randn(model.element_ref.shape))
    model.eval()
    return model.to(dtype)


def random_rotation(seed: int, proper: bool = True) -> np.ndarray:
    """Haar-random orthogonal matrix from the QR of a Gaussian matrix; det +1 when `proper`, else -1."""
    rng = np.random.default_rng(seed)
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if (np.linalg.det(q) > 0) != proper:
        q[:, 0] = -q[:, 0]
    return q


def ef(model, z, r):
    """Energies [B] and forces [B, N, 3] (zero on padding) of the structures in the rows of z, r."""
    structures = [Structure.of(z[b][z[b] > 0].numpy(), r[b][z[b] > 0].detach().double().numpy())
                  for b in range(z.shape[0])]
    batch = neighbour_batch(structures, model.cutoff)
    energies, forces, _virials = energy_forces_virials(model, *GraphInputs.from_batch(batch, r.dtype).tensors())
    totals = torch.tensor(batch.per_structure(energies.double().numpy()), dtype=r.dtype)
    out = torch.zeros(r.shape, dtype=r.dtype)
    for b in range(z.shape[0]):
        out[b, : int((z[b] > 0).sum())] = forces[batch.offsets[b] : batch.offsets[b + 1]]
    return totals, out


def test_fixtures_are_sane_molecules():
    for molecule in (WATER, METHANE, ETHANOL, random_molecule(7, 1), random_molecule(10, 2)):
        pos = np.asarray(molecule[1])
        d = np.linalg.norm(pos[:, None] - pos[None], axis=-1)[np.triu_indices(len(pos), 1)]
        assert d.min() >= 0.9
        assert d.max() < CUTOFF  # each molecule is one connected neighbourhood


def test_model_is_sensitive_to_geometry():
    """Guard for all tests below: energies and forces are O(1) and change under a non-rigid distortion."""
    model = make_model()
    z, r = as_batch(ETHANOL)
    e, f = ef(model, z, r)
    assert f.abs().max() > 0.1
    distorted = r.clone()
    distorted[0, 2] += torch.tensor([0.1, -0.05, 0.07], dtype=r.dtype)
    e2, _ = ef(model, z, distorted)
    assert abs(float(e2 - e)) > 1e-3


# --- rotation, reflection, translation, permutation ------------------------------------------------------


@pytest.mark.parametrize("preset", list(PRESET_CONFIGS))
def test_rotation_invariance_and_force_covariance_float64(preset):
    model = make_model(preset, seed=1)
    z, r = as_batch(ETHANOL)
    e, f = ef(model, z, r)
    for seed in range(3):
        rot = torch.tensor(random_rotation(seed))
        assert torch.allclose(rot @ rot.T, torch.eye(3, dtype=rot.dtype), atol=1e-12)
        assert abs(float(torch.linalg.det(rot)) - 1.0) < 1e-12
        r_rot = r @ rot.T  # x_i -> R x_i
        e_rot, f_rot = ef(model, z, r_rot)
        torch.testing.assert_close(e_rot, e, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(f_rot, f @ rot.T, rtol=1e-9, atol=1e-10)
        # and forces really changed direction (the check is not vacuous)
        assert (f_rot - f).abs().max() > 1e-2


def test_rotation_invariance_float32():
    model = make_model("tiny", seed=2, dtype=torch.float32)
    z, r = as_batch(random_molecule(10, 3), dtype=torch.float32)
    e, f = ef(model, z, r)
    rot = torch.tensor(random_rotation(7), dtype=torch.float32)
    e_rot, f_rot = ef(model, z, r @ rot.T)
    scale = float(f.abs().max())
    assert abs(float(e_rot - e)) < 1e-5 * (1.0 + abs(float(e)))
    assert (f_rot - f @ rot.T).abs().max() < 1e-4 * scale


def test_reflection_invariance():
    """PaiNN uses only inner products and norms of vectors, so it is O(3)-invariant (no chirality)."""
    model = make_model("tiny", seed=3)
    z, r = as_batch(random_molecule(8, 4))
    e, f = ef(model, z, r)
    mirror = torch.tensor(random_rotation(5, proper=False))
    assert float(torch.linalg.det(mirror)) < 0
    e_m, f_m = ef(model, z, r @ mirror.T)
    torch.testing.assert_close(e_m, e, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(f_m, f @ mirror.T, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("shift", [[0.3, -1.7, 2.2], [100.0, 100.0, 100.0], [-100.0, 37.0, 100.0]])
def test_translation_invariance_float64(shift):
    model = make_model("tiny", seed=4)
    z, r = as_batch(ETHANOL)
    e, f = ef(model, z, r)
    e_t, f_t = ef(model, z, r + torch.tensor(shift, dtype=r.dtype))
    torch.testing.assert_close(e_t, e, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(f_t, f, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("shift", [[0.3, -1.7, 2.2], [100.0, 100.0, 100.0], [-100.0, 37.0, 100.0]])
def test_translation_invariance_float32(shift):
    """In float32, coordinates near 100 A carry ~1e-5 A of rounding (ulp(100) = 7.6e-6), so the energy may
    move by about |F| * 1e-5 per atom: tolerances scale with that, not with float32 epsilon alone."""
    model = make_model("tiny", seed=4, dtype=torch.float32)
    z, r = as_batch(ETHANOL, dtype=torch.float32)
    e, f = ef(model, z, r)
    shift_t = torch.tensor(shift, dtype=torch.float32)
    e_t, f_t = ef(model, z, r + shift_t)
    magnitude = float(shift_t.abs().max())
    position_rounding = 2.0 * magnitude * float(torch.finfo(torch.float32).eps)  # per coordinate
    f_max = float(f.abs().max())
    e_tol = 3 * z.shape[1] * position_rounding * f_max + 1e-5 * (1.0 + abs(float(e)))
    assert abs(float(e_t - e)) < e_tol
    assert (f_t - f).abs().max() < 2e-3 * f_max  # force rounding from ~1e-5 A geometry error
    assert torch.isfinite(f_t).all()


def test_permutation_invariance_and_force_permutation():
    model = make_model("tiny", seed=5)
    for molecule in (ETHANOL, random_molecule(9, 6)):
        z, r = as_batch(molecule)
        e, f = ef(model, z, r)
        g = torch.Generator().manual_seed(11)
        for _ in range(3):
            perm = torch.randperm(z.shape[1], generator=g)
            e_p, f_p = ef(model, z[:, perm], r[:, perm])
            torch.testing.assert_close(e_p, e, rtol=1e-10, atol=1e-10)
            torch.testing.assert_close(f_p, f[:, perm], rtol=1e-9, atol=1e-10)


def test_elements_matter():
    """Swapping two different elements is not a symmetry: guards against the permutation test passing on a
    model that ignores atomic numbers."""
    model = make_model("tiny", seed=5)
    z, r = as_batch(WATER)
    e, _ = ef(model, z, r)
    z_swapped = z.clone()
    z_swapped[0, [0, 1]] = z[0, [1, 0]]
    e_s, _ = ef(model, z_swapped, r)
    assert abs(float(e_s - e)) > 1e-3


# --- conservative forces ---------------------------------------------------------------------------------


@pytest.mark.parametrize("preset,molecule_seed", [("tiny", 0), ("ultra-tiny", 1), ("original", 2)])
def test_forces_match_central_finite_differences(preset, molecule_seed):
    model = make_model(preset, seed=6)
    z, r = as_batch(random_molecule(6, 100 + molecule_seed))
    _, f = ef(model, z, r)
    h = 1e-4
    rng = np.random.default_rng(molecule_seed)
    f_max = float(f.abs().max())
    checked = 0
    for atom in rng.choice(z.shape[1], size=4, replace=False):
        for comp in range(3):
            plus, minus = r.clone(), r.clone()
            plus[0, atom, comp] += h
            minus[0, atom, comp] -= h
            fd = -(ef(model, z, plus)[0] - ef(model, z, minus)[0]).item() / (2 * h)
            analytic = f[0, atom, comp].item()
            rel = abs(fd - analytic) / max(abs(analytic), 1e-2 * f_max)
            assert rel < 1e-5, (atom, comp, fd, analytic)
            checked += 1
    assert checked == 12


def test_forces_sum_to_zero():
    """Translation invariance implies Newton's third law: the net force on an isolated structure is zero."""
    model = make_model("tiny", seed=7)
    z, r = as_batch(ETHANOL)
    _, f = ef(model, z, r)
    assert f.sum(1).abs().max() < 1e-10 * f.abs().max() * z.shape[1] + 1e-12


# --- smoothness at the cutoff ----------------------------------------------------------------------------


def _single_energy(model, number: int) -> float:
    e, _ = ef(model, torch.tensor([[number]]), torch.zeros(1, 1, 3, dtype=torch.float64))
    return float(e)


def _dimer(model, d: float, numbers=(6, 8)):
    z = torch.tensor([list(numbers)])
    r = torch.tensor([[[0.0, 0.0, 0.0], [d, 0.0, 0.0]]], dtype=torch.float64)
    e, f = ef(model, z, r)
    return float(e), f[0]


def test_dimer_energy_and_force_vanish_smoothly_at_cutoff():
    model = make_model("tiny", seed=8)
    e_apart = _single_energy(model, 6) + _single_energy(model, 8)

    # the pair interacts inside the cutoff (otherwise everything below is vacuous)
    e_in, f_in = _dimer(model, 4.0)
    assert abs(e_in - e_apart) > 1e-4
    assert f_in.abs().max() > 1e-4

    # at and beyond the cutoff: exactly the isolated atoms, zero force
    for d in (CUTOFF, CUTOFF + 1e-6, CUTOFF + 1e-3, CUTOFF + 0.5, 9.0):
        e, f = _dimer(model, d)
        assert e == pytest.approx(e_apart, rel=1e-12, abs=1e-12), d
        assert f.abs().max() < 1e-12, d

    # just inside: energy difference ~ (rc - d)^2 and force ~ (rc - d), both -> 0
    gaps, forces = [], []
    for h in (1e-2, 1e-3, 1e-4):
        e, f = _dimer(model, CUTOFF - h)
        gaps.append(abs(e - e_apart))
        forces.append(float(f.abs().max()))
        # Newton's third law on the pair, along the bond
        torch.testing.assert_close(f[0], -f[1], rtol=1e-9, atol=1e-14)
    assert gaps[-1] < 1e-8
    assert forces[-1] < 1e-4
    for k in range(len(gaps) - 1):
        assert gaps[k + 1] <= gaps[k] / 20 + 1e-15  # quadratic decay: factor ~100 per decade
        assert forces[k + 1] <= forces[k] / 5 + 1e-15  # linear decay: factor ~10 per decade


def test_energy_scan_across_cutoff_is_lipschitz_and_forces_are_continuous():
    """Scan the bond length across r = cutoff: each energy step is bounded by max|F| * step (no jump), and
    the largest force step shrinks with the scan step (no force jump)."""
    model = make_model("tiny", seed=9)
    max_force_jump = []
    for step in (1e-3, 1e-4):
        ds = np.arange(CUTOFF - 0.05, CUTOFF + 0.05, step)
        z = torch.tensor([[6, 8]]).repeat(len(ds), 1)  # the whole scan as one batch
        r = torch.zeros(len(ds), 2, 3, dtype=torch.float64)
        r[:, 1, 0] = torch.tensor(ds)
        e, f = ef(model, z, r)
        energies = e.numpy()
        fx = f[:, 1, 0].numpy()  # force on the moving atom along the bond
        f_bound = np.abs(fx).max()
        assert f_bound > 0  # the scan starts inside the cutoff
        assert np.abs(np.diff(energies)).max() <= 1.01 * step * f_bound + 1e-13
        max_force_jump.append(np.abs(np.diff(fx)).max())
        # force from the scan matches -dE/dr by differences of the scanned energies: the central difference
        # is the mean force over [d - step, d + step], so it lies within one force step of F(d)
        central = -(energies[2:] - energies[:-2]) / (2 * step)
        assert np.abs(central - fx[1:-1]).max() <= 1.5 * max_force_jump[-1] + 1e-12
    assert max_force_jump[1] < max_force_jump[0] / 5


def test_trimer_third_atom_crossing_cutoff():
    """A bonded pair plus a third atom leaving the pair's neighbourhood: energy tends continuously to
    E(pair) + E(atom), forces on all atoms are continuous and the third atom's force goes to zero."""
    model = make_model("tiny", seed=10)
    pair_z = torch.tensor([[6, 8]])
    pair_r = torch.tensor([[[0.0, 0.0, 0.0], [1.2, 0.0, 0.0]]], dtype=torch.float64)
    e_pair, f_pair = ef(model, pair_z, pair_r)
    e_far = float(e_pair) + _single_energy(model, 1)

    def trimer(x: float):
        z = torch.tensor([[6, 8, 1]])
        r = torch.cat([pair_r, torch.tensor([[[x, 0.3, 0.0]]], dtype=torch.float64)], dim=1)
        e, f = ef(model, z, r)
        return float(e), f[0]

    # third atom leaves the O's cutoff when |(x, 0.3) - (1.2, 0)| = rc
    x_c = 1.2 + math.sqrt(CUTOFF**2 - 0.3**2)
    e_near, _ = trimer(x_c - 1.0)
    assert abs(e_near - e_far) > 1e-4
    for dx in (1e-6, 1e-2, 1.0):
        e, f = trimer(x_c + dx)
        assert e == pytest.approx(e_far, rel=1e-12, abs=1e-12)
        torch.testing.assert_close(f[:2], f_pair[0], rtol=1e-10, atol=1e-12)
        assert f[2].abs().max() < 1e-12
    previous = None
    for h in (1e-2, 1e-3, 1e-4):
        e, f = trimer(x_c - h)
        gap = abs(e - e_far)
        f_gap = float((f[:2] - f_pair[0]).abs().max())
        f3 = float(f[2].abs().max())
        if previous is not None:
            assert gap <= previous[0] / 20 + 1e-15
            assert f_gap <= previous[1] / 5 + 1e-15
            assert f3 <= previous[2] / 5 + 1e-15
        previous = (gap, f_gap, f3)
    assert previous[0] < 1e-8 and previous[1] < 1e-4 and previous[2] < 1e-4


# --- locality / size extensivity -------------------------------------------------------------------------


@pytest.mark.parametrize("dtype,rtol", [(torch.float64, 1e-10), (torch.float32, 2e-5)])
def test_size_extensivity_two_molecules_far_apart(dtype, rtol):
    model = make_model("tiny", seed=11, dtype=dtype)
    za, ra = as_batch(WATER, dtype)
    zb, rb = as_batch(ETHANOL, dtype)
    far = torch.tensor([20.0, 0.0, 0.0], dtype=dtype)
    z = torch.cat([za, zb], dim=1)
    r = torch.cat([ra, rb + far], dim=1)
    e, f = ef(model, z, r)
    e_a, f_a = ef(model, za, ra)
    e_b, f_b = ef(model, zb, rb)
    torch.testing.assert_close(e, e_a + e_b, rtol=rtol, atol=rtol)
    f_tol = rtol * float(f.abs().max()) * 10
    torch.testing.assert_close(f[:, :3], f_a, rtol=0, atol=f_tol)
    torch.testing.assert_close(f[:, 3:], f_b, rtol=0, atol=f_tol)


def test_two_molecules_within_cutoff_interact():
    """Counterpart of the extensivity test: at 3 A apart the same molecules are not additive."""
    model = make_model("tiny", seed=11)
    za, ra = as_batch(WATER)
    zb, rb = as_batch(ETHANOL)
    z = torch.cat([za, zb], dim=1)
    r = torch.cat([ra, rb + torch.tensor([3.5, 0.0, 0.0], dtype=torch.float64)], dim=1)
    e, _ = ef(model, z, r)
    e_a, _ = ef(model, za, ra)
    e_b, _ = ef(model, zb, rb)
    assert abs(float(e - e_a - e_b)) > 1e-4


# --- batching and padding slots -----------------------------------------------------------------------------


MOLECULES = [WATER, METHANE, ETHANOL, random_molecule(7, 21), random_molecule(4, 22)]


def _padded(dtype, n_atoms=None):
    """The molecules as rows of [B, N] numbers and positions (zeros after each molecule)."""
    width = n_atoms or max(len(m[0]) for m in MOLECULES)
    z = torch.zeros(len(MOLECULES), width, dtype=torch.long)
    r = torch.zeros(len(MOLECULES), width, 3, dtype=dtype)
    for k, (numbers, positions) in enumerate(MOLECULES):
        z[k, : len(numbers)] = torch.tensor(numbers)
        r[k, : len(numbers)] = torch.tensor(np.asarray(positions), dtype=dtype)
    return z, r


@pytest.mark.parametrize("dtype,rtol", [(torch.float64, 1e-10), (torch.float32, 2e-5)])
def test_batch_equals_per_structure(dtype, rtol):
    """One call holding molecules with different neighbour counts (so most atoms have padding slots) gives
    each molecule's own energy and forces."""
    model = make_model("tiny", seed=12, dtype=dtype)
    z, r = _padded(dtype)
    e, f = ef(model, z, r)
    assert e.shape == (len(MOLECULES),) and f.shape == r.shape
    for k, molecule in enumerate(MOLECULES):
        n = len(molecule[0])
        zk, rk = as_batch(molecule, dtype)
        ek, fk = ef(model, zk, rk)
        torch.testing.assert_close(e[k : k + 1], ek, rtol=rtol, atol=rtol)
        torch.testing.assert_close(f[k : k + 1, :n], fk, rtol=0, atol=10 * rtol * float(fk.abs().max()))


def _inputs(molecule, extra_slots: int, dtype=torch.float64, far=None):
    batch = neighbour_batch([Structure.of(*molecule)], CUTOFF)
    inputs = GraphInputs.from_batch(batch, dtype)
    if extra_slots == 0:
        return inputs
    from deploycc.targets.cuda_graph import pad_inputs

    padded = pad_inputs(inputs, inputs.atoms, inputs.slots + extra_slots)
    if far is not None:  # padding slots with other vectors beyond the cutoff
        padded.vectors[:, inputs.slots :] = far
    return padded


@pytest.mark.parametrize("far", [None, [0.0, 0.0, 5.0 + 1e-6], [-30.0, 40.0, 2.0]])
def test_padding_slots_change_nothing(far):
    """Extra padding slots (pointing at the atom itself, with any vector beyond the cutoff) leave energies,
    forces and virials exactly unchanged."""
    model = make_model("tiny", seed=13)
    outputs = [energy_forces_virials(model, *_inputs(ETHANOL, extra, far=None if extra == 0 else
                                                     (None if far is None else torch.tensor(far, dtype=torch.float64))).tensors())
               for extra in (0, 5)]
    for plain, padded in zip(*outputs):
        assert torch.isfinite(padded).all()
        torch.testing.assert_close(padded, plain, rtol=1e-14, atol=1e-13)


def test_zero_length_slot_vector_stays_finite_twice_differentiable():
    """A degenerate slot vector of zero length (e.g. two atoms on top of each other, which the runtime
    refuses, or an engine's list) keeps energies and first and second derivatives finite (training)."""
    model = make_model("tiny", seed=14)
    inputs = _inputs(WATER, 0)
    vectors = inputs.vectors.clone()
    vectors[0, 0] = 0.0
    leaf = vectors.requires_grad_(True)
    energy = model(inputs.numbers, leaf, inputs.neighbours, inputs.reverse).sum()
    (grad,) = torch.autograd.grad(energy, leaf, create_graph=True)
    (grad2,) = torch.autograd.grad((grad * grad).sum(), leaf)
    assert torch.isfinite(energy) and torch.isfinite(grad).all() and torch.isfinite(grad2).all()


def test_batch_of_one_and_batch_of_many_agree():
    model = make_model("ultra-tiny", seed=15)
    molecules = [random_molecule(6, 40 + k) for k in range(5)]
    z = torch.tensor([m[0] for m in molecules])
    r = torch.tensor(np.stack([m[1] for m in molecules]))
    e, f = ef(model, z, r)
    for k in range(len(molecules)):
        e1, f1 = ef(model, z[k : k + 1], r[k : k + 1])
        torch.testing.assert_close(e[k : k + 1], e1, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(f[k : k + 1], f1, rtol=1e-10, atol=1e-12)
    # the same structure repeated gives identical rows
    e_rep, f_rep = ef(model, z[:1].repeat(4, 1), r[:1].repeat(4, 1, 1))
    torch.testing.assert_close(e_rep, e[:1].repeat(4), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(f_rep, f[:1].repeat(4, 1, 1), rtol=1e-10, atol=1e-12)
    # the structures really differ (rows are not trivially equal)
    assert (e[1:] - e[0]).abs().min() > 1e-6


def test_atomic_energies_sum_to_the_total_and_are_local():
    """Per-atom energies sum to the total; an atom farther than two cutoffs (two interactions) from a
    change keeps its energy exactly."""
    model = make_model("tiny", seed=16)
    chain = ([6] * 6, [[4.0 * k, 0.0, 0.0] for k in range(6)])  # each atom sees only its neighbours
    inputs = _inputs(chain, 0)
    atomic = model(*inputs.tensors())
    e, _ = ef(model, *as_batch(chain))
    assert float(atomic.sum()) == pytest.approx(float(e), rel=1e-12)
    moved = (chain[0], [p[:] for p in chain[1]])
    moved[1][0][1] = 0.3  # atom 0 moves: atoms 0, 1 (1 hop) and 2 (2 hops) may change, 3..5 may not
    after = model(*_inputs(moved, 0).tensors())
    assert torch.equal(after[3:], atomic[3:])
    assert (after[:3] - atomic[:3]).abs().max() > 1e-6


# --- single atom and element references ---------------------------------------------------------------------


@pytest.mark.parametrize("number", [1, 6, 8, 26])
def test_single_atom_zero_force_position_independent_energy(number):
    model = make_model("tiny", seed=17)
    energies = []
    for position in ([0.0, 0.0, 0.0], [3.0, -7.0, 100.0], [0.5, 0.5, 0.5]):
        z = torch.tensor([[number]])
        r = torch.tensor([[position]], dtype=torch.float64)
        e, f = ef(model, z, r)
        assert torch.equal(f, torch.zeros_like(f))
        energies.append(float(e))
    assert max(energies) - min(energies) < 1e-12


def test_element_reference_adds_exactly_per_atom():
    """E depends on element_ref only through sum_i ref[Z_i]: for a single atom E = ref[Z] + c(Z), and for a
    molecule changing the references shifts E by the sum over its atoms, leaving forces unchanged."""
    model = make_model("tiny", seed=18)
    z_atom = torch.tensor([[8]])
    r_atom = torch.zeros(1, 1, 3, dtype=torch.float64)
    zm, rm = as_batch(ETHANOL)
    e0_atom, _ = ef(model, z_atom, r_atom)
    e0_mol, f0_mol = ef(model, zm, rm)
    old_ref = model.element_ref.clone()
    torch.manual_seed(99)
    new_ref = torch.randn(old_ref.shape, dtype=old_ref.dtype) * 10
    with torch.no_grad():
        model.element_ref.copy_(new_ref)
    e1_atom, f1_atom = ef(model, z_atom, r_atom)
    e1_mol, f1_mol = ef(model, zm, rm)
    delta = new_ref - old_ref
    assert float(e1_atom - e0_atom) == pytest.approx(float(delta[8]), rel=1e-12, abs=1e-12)
    assert float(e1_mol - e0_mol) == pytest.approx(float(delta[zm[0]].sum()), rel=1e-12, abs=1e-10)
    torch.testing.assert_close(f1_mol, f0_mol, rtol=0, atol=1e-12)
    assert torch.equal(f1_atom, torch.zeros_like(f1_atom))
    # with scale and shift zeroed the single atom's energy is its reference alone
    with torch.no_grad():
        model.scale.zero_()
        model.shift.zero_()
    e_ref_only, _ = ef(model, z_atom, r_atom)
    assert float(e_ref_only) == float(new_ref[8])
