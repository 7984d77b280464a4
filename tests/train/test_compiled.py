"""--compile: the compiled energy-and-gradient step gives the eager loss and parameter gradients, on batches of
different sizes (dynamic shapes), and a training run with it trains."""

import numpy as np
import pytest
import torch

from deploycc.data.teachers import get_teacher
from deploycc.model import preset_config
from deploycc.train.batches import distillation_loss
from deploycc.train.compiled import CompiledEnergyGrad
from deploycc.train.frames import conformers_of, labelled, rattled
from deploycc.train.loop import initial_model

pytest.importorskip("rdkit")


@pytest.fixture(scope="module")
def setup():
    pool = conformers_of([(0, "CCO"), (1, "CC(=O)NC"), (2, "c1ccccc1O")], 1, seed=0)
    frames = labelled(get_teacher("emt"), rattled(pool, 9, np.random.default_rng(0)), cutoff=5.0)
    prepared = frames.prepared()
    model = initial_model(preset_config("ultra-tiny"), frames.structures(), "cpu")
    return model, prepared


def test_compiled_loss_and_gradients_equal_eager_ones_on_batches_of_other_sizes(setup):
    model, prepared = setup
    compiled = CompiledEnergyGrad(model)
    for idx in (np.arange(0, 4), np.arange(4, 9), np.arange(2, 3)):
        batch = prepared.batch(idx, "cpu")
        eager = distillation_loss(model, batch, len(idx), 10.0, 1.0)
        reference = torch.autograd.grad(eager, list(model.parameters()))
        fast = distillation_loss(model, batch, len(idx), 10.0, 1.0, compiled=compiled)
        grads = torch.autograd.grad(fast, list(model.parameters()))
        assert float(fast) == pytest.approx(float(eager), rel=1e-5)
        for g, r in zip(grads, reference):
            assert torch.allclose(g, r, rtol=1e-3, atol=1e-5 * float(r.abs().max()) + 1e-12)  # fp32 sums reordered


def test_the_compiled_step_sees_optimiser_updates(setup):
    model, prepared = setup
    compiled = CompiledEnergyGrad(model)
    batch = prepared.batch(np.arange(4), "cpu")
    before = float(distillation_loss(model, batch, 4, 10.0, 1.0, compiled=compiled))
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(1.1)
    after_eager = float(distillation_loss(model, batch, 4, 10.0, 1.0))
    after = float(distillation_loss(model, batch, 4, 10.0, 1.0, compiled=compiled))
    assert after == pytest.approx(after_eager, rel=1e-5) and after != pytest.approx(before, rel=1e-6)


def _count_calls(monkeypatch) -> list:
    calls = []
    original = CompiledEnergyGrad.__call__

    def counted(self, *args):
        calls.append(len(args[0]))
        return original(self, *args)

    monkeypatch.setattr(CompiledEnergyGrad, "__call__", counted)
    return calls


def test_an_online_run_with_compile_trains_with_it_and_records_it(tmp_path, monkeypatch):
    from deploycc.checkpoint import load_checkpoint
    from deploycc.train.online import OnlineSettings, distil_online

    calls = _count_calls(monkeypatch)
    smiles = [(s, s) for s in ("C", "CC", "CCC", "CO", "CCO", "CN", "CCN", "C=O", "CC=O", "OCO", "NCO", "COC")]
    settings = OnlineSettings(steps=3, batch_size=4, eval_every=3, eval_frames=1, warmup_steps=1, conformers=1,
                              compile=True)
    result = distil_online("emt", smiles, preset_config("ultra-tiny"), tmp_path / "c.pt", settings)
    assert result.steps == 3 and np.isfinite(result.test.force_rmse)
    assert len(calls) == 3  # every optimiser step went through the compiled function
    assert load_checkpoint(tmp_path / "c.pt").metadata["online_settings"]["compile"] is True


def test_offline_training_with_compile_uses_it_every_step(tmp_path, monkeypatch):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from train_data import write_labelled

    from deploycc.checkpoint import load_checkpoint
    from deploycc.train.loop import TrainSettings, train

    calls = _count_calls(monkeypatch)
    data = write_labelled(tmp_path / "d.h5")
    settings = TrainSettings(epochs=2, batch_size=7, warmup_steps=1, patience=10, compile=True)
    result = train(data, preset_config("ultra-tiny"), tmp_path / "m.pt", settings)
    assert result.epochs_run == 2 and len(calls) == 2 * 4  # 28 training structures in batches of 7
    assert load_checkpoint(tmp_path / "m.pt").metadata["train_settings"]["compile"] is True


def test_compile_is_refused_under_a_launcher(monkeypatch):
    from deploycc.errors import UserInputError
    from deploycc.train import loop

    class Active:
        active = True

    with pytest.raises(UserInputError, match="--compile trains in one process"):
        loop._compiled(torch.nn.Linear(1, 1), loop.TrainSettings(compile=True), Active())


def test_a_step_torch_compile_cannot_build_is_one_line(setup, monkeypatch):
    from deploycc.errors import MissingDependencyError

    model, prepared = setup

    def broken(fn, **kwargs):
        def run(*args):
            raise RuntimeError("InductorError: CppCompileError: C++ compile error\n  no compiler found")
        return run

    monkeypatch.setattr(torch, "compile", broken)
    compiled = CompiledEnergyGrad(model)
    with pytest.raises(MissingDependencyError, match=r"--compile: torch.compile \(inductor\) failed on the training "
                                                     r"step: RuntimeError: InductorError: CppCompileError: C\+\+ "
                                                     r"compile error no compiler found; train without --compile"):
        distillation_loss(model, prepared.batch(np.arange(2), "cpu"), 2, 10.0, 1.0, compiled=compiled)
