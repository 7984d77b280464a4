"""cuda-graph and cuda-graph-fused targets.

On CPU: atom and slot bucket arithmetic, availability, the padding layout (template, remapped reverse indices,
inert padding atoms and slots through the very step that is captured), the stale-input reset of a bucket's
static buffers, and the profile-maxima refusal.  On a GPU: capture, replay and parity of both targets
(through one parametrized fixture)."""

from __future__ import annotations

import copy
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from deploycc.errors import UserInputError
from deploycc.model import StudentModel
from deploycc.parity import check_parity
from deploycc.runtime.neighbours import PADDING_DISTANCE, Structure, neighbour_batch
from deploycc.targets.base import GraphInputs
from deploycc.targets.cuda_graph import (CudaGraphRunner, CudaGraphTarget, _Captured, atom_bucket, eager_step,
                                         pad_inputs, padding_template, remap_reverse, slot_bucket)
from deploycc.targets.cuda_graph_fused import FusedCudaGraphTarget
from deploycc.targets.eager import eager_runner
from deploycc.targets.settings import Profile

from helpers import molecules, periodic_structures
from helpers import tiny_model as shared_tiny_model


def tiny_model(seed: int = 0) -> StudentModel:
    return shared_tiny_model(seed, ref_scale=100.0)


def inputs_of(structures, model: StudentModel | None = None) -> GraphInputs:
    return GraphInputs.from_batch(neighbour_batch(list(structures), (model or tiny_model()).cutoff))


def assert_reverse_consistent(inputs: GraphInputs) -> None:
    """The layout's invariants: slot reverse[i, m] = j * M + m' holds i among j's slots, and reverse is an
    involution (the reverse of the reverse slot is the slot itself)."""
    a, m = inputs.atoms, inputs.slots
    flat_neighbours = inputs.neighbours.reshape(-1)
    flat_reverse = inputs.reverse.reshape(-1)
    assert bool((inputs.reverse >= 0).all()) and bool((inputs.reverse < a * m).all())
    assert torch.equal(flat_neighbours[inputs.reverse], torch.arange(a)[:, None].expand(a, m))
    assert torch.equal(flat_reverse[inputs.reverse], torch.arange(a * m).reshape(a, m))


needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


# --- buckets -------------------------------------------------------------------------------------------------

def test_atom_buckets() -> None:
    # Multiples of 32 up to 512 atoms, then of 1/16 of the next power of two; capped at the maximum.
    assert [atom_bucket(n, 1 << 17) for n in (1, 31, 32, 33, 100, 511, 512)] == [32, 32, 32, 64, 128, 512, 512]
    assert [atom_bucket(n, 1 << 17) for n in (513, 576, 577, 1000, 1025, 5000)] == [576, 576, 640, 1024, 1152, 5120]
    assert [atom_bucket(n, 1000, 8) for n in (1, 8, 9, 130, 300)] == [8, 8, 16, 144, 320]
    assert atom_bucket(100, 90) == 90 and atom_bucket(7, 5, 8) == 5


def test_atom_bucket_padding_is_bounded_and_buckets_are_few() -> None:
    n_max = 1 << 17
    buckets = [atom_bucket(n, n_max) for n in range(1, n_max + 1)]
    for n, b in zip(range(1, n_max + 1), buckets):
        assert b >= n
        assert b - n < (32 if n <= 512 else n / 8), (n, b)  # the grain is < n / 8 above 512 atoms
    assert all(x <= y for x, y in zip(buckets, buckets[1:]))  # monotone
    # 16 buckets up to 512, then 8 per doubling (8 doublings to 2^17): 80 graphs cover every request size.
    assert len(set(buckets)) == 16 + 8 * 8


def test_slot_buckets() -> None:
    assert [slot_bucket(m, 256) for m in (1, 8, 9, 42, 48, 49, 255)] == [8, 8, 16, 48, 48, 56, 256]
    assert [slot_bucket(m, 100, 16) for m in (1, 17, 90)] == [16, 32, 96] and slot_bucket(300, 256) == 256


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present")
@pytest.mark.parametrize("target", [CudaGraphTarget, FusedCudaGraphTarget], ids=["cuda-graph", "cuda-graph-fused"])
def test_unavailable_without_gpu(target) -> None:
    assert target().availability(target().settings()) == "needs a CUDA GPU"


def test_settings_are_their_own() -> None:
    for target in (CudaGraphTarget(), FusedCudaGraphTarget()):
        settings = target.settings()
        assert settings.target == target.name and settings.device == "cuda" and settings.precision == "fp32"
        assert settings.extra["atom_multiple"] == 32 and settings.extra["slot_multiple"] == 8
        assert settings.atoms.max >= 1 << 16 and settings.neighbours.max >= 128


# --- padding layout (CPU) -----------------------------------------------------------------------------------

def test_padding_template_is_self_pointing_and_far() -> None:
    template = padding_template(5, 4, "cpu")
    assert torch.equal(template.numbers, torch.zeros(5, dtype=torch.long))
    assert torch.equal(template.neighbours, torch.arange(5)[:, None].expand(5, 4))
    assert torch.equal(template.reverse, torch.arange(20).reshape(5, 4))
    assert torch.allclose(template.vectors.norm(dim=-1), torch.full((5, 4), PADDING_DISTANCE))
    assert PADDING_DISTANCE > 2 * tiny_model().cutoff
    assert_reverse_consistent(template)


def test_remap_reverse_keeps_every_pair() -> None:
    inputs = inputs_of(molecules([5, 9, 3], seed=2))
    m = inputs.slots
    assert remap_reverse(inputs.reverse, m) is inputs.reverse
    wide = remap_reverse(inputs.reverse, m + 3)
    assert torch.equal(wide // (m + 3), inputs.reverse // m) and torch.equal(wide % (m + 3), inputs.reverse % m)


def test_pad_inputs_grows_a_consistent_layout() -> None:
    structures = molecules([4, 7], seed=3) + [Structure.from_atoms(periodic_structures()[2])]
    inputs = inputs_of(structures)
    assert_reverse_consistent(inputs)
    assert pad_inputs(inputs, inputs.atoms, inputs.slots) is inputs
    a, m = inputs.atoms, inputs.slots
    padded = pad_inputs(inputs, a + 6, m + 5)
    assert (padded.atoms, padded.slots) == (a + 6, m + 5)
    assert_reverse_consistent(padded)
    assert torch.equal(padded.numbers[:a], inputs.numbers) and (padded.numbers[a:] == 0).all()
    assert torch.equal(padded.vectors[:a, :m], inputs.vectors)
    assert torch.equal(padded.neighbours[:a, :m], inputs.neighbours)
    assert (padded.vectors[:, m:].norm(dim=-1) > 2 * tiny_model().cutoff).all()
    assert (padded.vectors[a:].norm(dim=-1) > 2 * tiny_model().cutoff).all()
    # pad_inputs never writes the request's own tensors
    assert padded.reverse.data_ptr() != inputs.reverse.data_ptr()


def test_captured_step_on_padded_inputs_equals_the_request() -> None:
    """What a bucket's graph computes: the eager step on the padded layout.  Real atoms get the request's
    results; padding atoms exactly zero force and virial."""
    model = tiny_model()
    step = eager_step(copy.deepcopy(model), "cpu")
    inputs = inputs_of(molecules([6, 3, 9], seed=4) + [Structure.from_atoms(periodic_structures()[0])])
    a = inputs.atoms
    energies, forces, virials = step(*inputs.tensors())
    padded = pad_inputs(inputs, atom_bucket(a, 1024, 32), slot_bucket(inputs.slots, 256))
    assert padded.atoms > a and padded.slots > inputs.slots
    p_energies, p_forces, p_virials = step(*padded.tensors())
    assert (p_forces[a:] == 0).all() and (p_virials[a:] == 0).all()
    torch.testing.assert_close(p_energies[:a], energies, atol=1e-5, rtol=2**-22)
    torch.testing.assert_close(p_forces[:a], forces, atol=1e-5, rtol=0)
    torch.testing.assert_close(p_virials[:a], virials, atol=1e-5, rtol=0)


def test_bucket_buffers_never_keep_stale_inputs() -> None:
    """A bucket's static inputs after each request of different shapes (and repeats of one shape, which skip
    the reset) equal the request padded from a fresh template: no atom or slot of an earlier request
    survives in the padding.  (The same `_fill` the GPU runner calls before every replay.)"""
    settings = replace(CudaGraphTarget().settings("cpu"), atoms=Profile(1, 16, 64), neighbours=Profile(1, 8, 64))
    runner = CudaGraphRunner(eager_step(tiny_model(), "cpu"), settings)
    a, m = 32, 48
    template = padding_template(a, m, "cpu")
    captured = _Captured(graph=None, inputs=GraphInputs(*(t.clone() for t in template.tensors())),
                         template=template, outputs=())
    # ([], 0): a periodic alloy (16 atoms, ~44 slots each), between molecules with few slots
    requests = [([12, 11, 9], 1), ([10, 7, 10, 3], 2), ([10, 7, 10, 3], 3), ([4, 2], 4), ([4, 2], 4), ([30], 5),
                ([], 0), ([5, 3], 6)]
    for k, (sizes, seed) in enumerate(requests):
        structures = molecules(sizes, seed=seed) if sizes else [Structure.from_atoms(periodic_structures()[3])]
        request = inputs_of(structures)
        assert request.atoms <= a and request.slots <= m
        runner._fill(captured, request)
        expected = pad_inputs(request, a, m)
        for name, got, want in zip(("numbers", "vectors", "neighbours", "reverse"), captured.inputs.tensors(),
                                   expected.tensors()):
            assert torch.equal(got, want), (k, name)
        assert template.numbers.abs().sum() == 0  # the template itself is never written


def test_requests_beyond_the_profile_maxima_are_refused() -> None:
    settings = replace(CudaGraphTarget().settings("cpu"), atoms=Profile(1, 16, 40), neighbours=Profile(1, 8, 20))
    runner = CudaGraphRunner(eager_step(tiny_model(), "cpu"), settings)
    with pytest.raises(UserInputError, match="41 atoms") as info:
        runner.infer_impl(inputs_of(molecules([41])))
    assert "\n" not in str(info.value)
    few_atoms_many_slots = inputs_of([Structure.from_atoms(periodic_structures()[0])])  # 4 atoms, 42 slots
    with pytest.raises(UserInputError, match="42 neighbour slots"):
        runner.infer_impl(few_atoms_many_slots)
    assert runner.graphs == {}  # refused before anything was captured


# --- GPU ---------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module", params=[CudaGraphTarget, FusedCudaGraphTarget], ids=["eager-step", "fused-step"])
def setup(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """cuda-graph and cuda-graph-fused share the runner (buckets, capture, replay): one set of GPU tests."""
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    target = request.param()
    settings = replace(target.settings("cuda"), atoms=Profile(1, 16, 40), neighbours=Profile(1, 16, 64),
                       extra={**target.settings().extra, "atom_multiple": 8, "slot_multiple": 8})
    reason = target.availability(settings)
    if reason is not None:
        pytest.skip(f"{target.name} unavailable here: {reason}")
    exported = target.export(tiny_model(), settings, Path(tmp_path_factory.mktemp(target.name)))
    return target.runner(exported.path, settings), settings


def reference(structures) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    prediction = eager_runner(tiny_model(), "cpu").infer(neighbour_batch(structures, tiny_model().cutoff))
    return prediction.energies, prediction.forces, prediction.virials


def assert_matches_eager(runner, structures) -> None:
    batch = neighbour_batch(structures, tiny_model().cutoff)
    out = runner.infer(batch)
    e_ref, f_ref, w_ref = reference(structures)
    n = np.diff(batch.offsets)
    assert out.forces.shape == f_ref.shape and np.isfinite(out.forces).all()
    np.testing.assert_allclose(out.energies / n, e_ref / n, atol=1e-5, rtol=1e-6)
    np.testing.assert_allclose(out.forces, f_ref, atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(out.virials / n[:, None, None], w_ref / n[:, None, None], atol=1e-4, rtol=1e-4)


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("kind", ["molecules", "periodic"])
def test_parity_with_eager_cpu(setup, kind: str) -> None:
    runner, settings = setup
    model = tiny_model()
    structures = (molecules([1, 2, 5, 7, 9, 16, 17, 30, 40, 3, 11]) if kind == "molecules"
                  else [Structure.from_atoms(a) for a in periodic_structures()])
    report = check_parity(eager_runner(copy.deepcopy(model), "cpu"), runner, structures, settings.tolerances,
                          model.cutoff, batch_size=4, max_atoms=settings.atoms.max)
    assert report.passed, report.to_dict()
    assert report.batches >= 4


@pytest.mark.gpu
@needs_gpu
def test_replays_new_inputs_without_recapturing(setup) -> None:
    runner, settings = setup
    counts = []
    for seed in (2, 3):  # the same buckets twice, with different data
        for sizes in ([6, 3, 9, 5], [2], [12, 11, 9]):
            structures = molecules(sizes, seed=seed)
            batch = neighbour_batch(structures, tiny_model().cutoff)
            assert_matches_eager(runner, structures)
            key = (atom_bucket(batch.atoms, settings.atoms.max, 8),
                   slot_bucket(batch.slots, settings.neighbours.max, 8))
            assert key in runner.graphs
        counts.append(len(runner.graphs))
    assert counts[0] == counts[1]  # replayed, not recaptured


@pytest.mark.gpu
@needs_gpu
def test_too_many_atoms_or_slots_are_refused(setup) -> None:
    runner, _settings = setup
    with pytest.raises(UserInputError, match="41 atoms"):
        runner.infer(neighbour_batch(molecules([41]), tiny_model().cutoff))
    crowded = Structure.from_atoms(periodic_structures()[0].repeat(2))  # 42 slots per atom: fine
    runner.infer(neighbour_batch([crowded], tiny_model().cutoff))
    with pytest.raises(UserInputError, match="neighbour slots"):
        runner.infer(neighbour_batch([crowded], 7.5))  # ~140 slots per atom > 64


@pytest.mark.gpu
@needs_gpu
def test_stale_inputs_never_leak_between_requests_of_one_bucket(setup) -> None:
    """Requests of different shapes in one bucket, and repeats of one shape (which skip the reset): every
    result equals the eager model's, so no atom or slot of an earlier request survives in the padding."""
    runner, _settings = setup
    for k, sizes in enumerate([[12, 11, 9], [10, 7, 10, 3], [10, 7, 10, 3], [9, 10, 8, 2], [30], [3, 4], [3, 4]]):
        assert_matches_eager(runner, molecules(sizes, seed=10 + k))
    assert_matches_eager(runner, [Structure.from_atoms(a) for a in periodic_structures()[:3]])
    assert_matches_eager(runner, molecules([5, 2], seed=30))
