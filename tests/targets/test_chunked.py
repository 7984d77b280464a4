"""Chunked runners give exactly the unchunked results, and only chunk on CPU when asked to."""

from __future__ import annotations

import torch

from deploycc.batching import pad
from deploycc.data.schema import read_h5
from deploycc.targets.base import ChunkedRunner, open_runner
from deploycc.targets.eager import EagerRunner, EagerTarget
from deploycc.targets.settings import TargetSettings

from conftest import make_model


def test_chunks_reproduce_the_whole_batch(calib_file):
    data = read_h5(calib_file)
    numbers, positions = pad(data.numbers, data.positions)
    runner = EagerRunner(make_model(), "cpu")
    energy, forces = runner.predict(numbers, positions)
    chunked_energy, chunked_forces = ChunkedRunner(runner, 5).predict(numbers, positions)
    assert chunked_energy.shape == energy.shape and chunked_forces.shape == forces.shape
    torch.testing.assert_close(chunked_energy, energy, rtol=0, atol=2e-3)
    torch.testing.assert_close(chunked_forces, forces, rtol=0, atol=1e-4)


def test_open_runner_chunks_only_when_configured(tiny_checkpoint):
    target = EagerTarget()
    plain = open_runner(target, tiny_checkpoint, TargetSettings(target="eager"))
    chunked = open_runner(target, tiny_checkpoint, TargetSettings(target="eager", extra={"chunk_cpu": 8}))
    assert not isinstance(plain, ChunkedRunner)
    assert isinstance(chunked, ChunkedRunner) and chunked.chunk == 8
