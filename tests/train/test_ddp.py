"""Data-parallel training under torchrun (docs/distributed-training.md): two CPU ranks (gloo) reproduce one
process with the doubled batch, write the same checkpoint format, write from rank 0 only, and resume."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import deploycc.train.distributed as distributed
from deploycc.checkpoint import load_checkpoint
from deploycc.data.schema import read_h5
from deploycc.model import PRESET_CONFIGS, StudentModel
from deploycc.train.batches import Prepared, distillation_loss
from deploycc.train.loop import TrainSettings, evaluate, train

from train_data import write_labelled

ULTRA = PRESET_CONFIGS["ultra-tiny"]
LAUNCHER = """\
import os, sys, torch
log = open(os.path.join(os.environ["DDP_LOG"], f"rank{os.environ['RANK']}.log"), "a")
real_save = torch.save
def logged_save(obj, f, *args, **kwargs):
    log.write(f"{f}\\n"); log.flush()
    return real_save(obj, f, *args, **kwargs)
torch.save = logged_save  # every file the run writes goes through torch.save
from deploycc.cli import main
sys.argv = ["deploycc", *sys.argv[1:]]
main()
"""


def torchrun(tmp: Path, data: Path, out: Path, *options: str) -> subprocess.CompletedProcess:
    """`torchrun --standalone --nproc-per-node 2 deploycc train ...` (through a launcher logging saves)."""
    launcher = tmp / "launch.py"
    launcher.write_text(LAUNCHER)
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR",
                                                             "MASTER_PORT")}
    env.update(DDP_LOG=str(tmp), OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", str(launcher),
           "train", "--data", str(data), "--model", "ultra-tiny", "--out", str(out), "--lr", "1.0", *options]
    done = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A: 2 ranks x batch 14, one epoch = one optimiser step.  B: A resumed to 3 epochs with batch 4 (four
    steps an epoch).  The references do the same in one process with batches of 28 and 8."""
    root = tmp_path_factory.mktemp("ddp")
    data = write_labelled(root / "d.h5")
    work, out = root / "work", root / "out" / "m.pt"
    work.mkdir()
    out.parent.mkdir()
    first = torchrun(work, data, out, "--epochs", "1", "--batch-size", "14")
    state_1 = torch.load(out.with_name("m.pt.state"), weights_only=True)
    second = torchrun(work, data, out, "--epochs", "3", "--batch-size", "4", "--resume")
    ref = root / "ref" / "m.pt"
    ref.parent.mkdir()
    train(data, ULTRA, ref, TrainSettings(epochs=1, batch_size=28, lr=1.0))
    ref_state_1 = torch.load(ref.with_name("m.pt.state"), weights_only=True)
    train(data, ULTRA, ref, TrainSettings(epochs=3, batch_size=8, lr=1.0), resume=True)
    return dict(data=data, work=work, out=out, first=first, second=second, state_1=state_1,
                state_3=torch.load(out.with_name("m.pt.state"), weights_only=True), ref=ref, ref_state_1=ref_state_1,
                ref_state_3=torch.load(ref.with_name("m.pt.state"), weights_only=True))


def close(a: dict, b: dict, atol: float) -> float:
    assert a.keys() == b.keys()
    worst = max(float((a[k].double() - b[k].double()).abs().max()) for k in a)
    assert worst <= atol, worst
    return worst


def test_one_step_on_two_ranks_equals_one_process_with_the_doubled_batch(runs, tmp_path):
    state, ref = runs["state_1"], runs["ref_state_1"]
    assert state["step"] == ref["step"] == 1
    assert state["history"][0]["loss"] == pytest.approx(ref["history"][0]["loss"], rel=1e-6)
    close(state["model"], ref["model"], atol=1e-6)  # the raw (not EMA) weights after the step
    for k, moments in ref["optimiser"]["state"].items():  # Adam's first moment is 0.1 x the gradient
        scale = float(moments["exp_avg"].abs().max())
        assert float((state["optimiser"]["state"][k]["exp_avg"] - moments["exp_avg"]).abs().max()) <= 1e-5 * scale
    untrained = train(runs["data"], ULTRA, tmp_path / "m.pt", TrainSettings(epochs=1, batch_size=28, lr=1e-30))
    moved = torch.load(tmp_path / "m.pt.state", weights_only=True)["model"]
    assert untrained.epochs_run == 1
    assert max(float((moved[k] - ref["model"][k]).abs().max()) for k in moved) > 1e-3  # the step was real


def test_checkpoint_has_the_single_process_format_and_reduced_metrics(runs):
    mine, ref = load_checkpoint(runs["out"]), load_checkpoint(runs["ref"])
    assert mine.metadata.keys() == ref.metadata.keys()
    assert mine.metadata["train_settings"].keys() == ref.metadata["train_settings"].keys()
    assert mine.config == ref.config and mine.model.state_dict().keys() == ref.model.state_dict().keys()
    assert mine.metadata["epochs"] == 3 and mine.metadata["train_settings"]["batch_size"] == 4
    assert mine.metadata["val_metrics"]["structures"] == mine.metadata["test_metrics"]["structures"] == 6
    data = read_h5(runs["data"])
    for split in ("val", "test"):  # metrics reduced across ranks = those of the whole split in one process
        again = evaluate(mine.model, data.split(split)).as_dict()
        for name, value in mine.metadata[f"{split}_metrics"].items():
            assert value == pytest.approx(again[name], rel=1e-5, abs=1e-9), (split, name)


def test_only_rank_0_writes_and_each_epoch_is_reported_once(runs):
    assert (runs["work"] / "rank1.log").read_text() == ""
    written = (runs["work"] / "rank0.log").read_text().split()
    states = [p for p in written if p.endswith("m.pt.state")]
    assert len(states) == 1 + 2 and len(written) == len(states) + 2  # a state per epoch, a checkpoint per run
    assert sorted(p.name for p in runs["out"].parent.iterdir()) == ["m.pt", "m.pt.state"]
    assert sorted(p.name for p in runs["work"].iterdir()) == ["launch.py", "rank0.log", "rank1.log"]
    assert runs["first"].stdout.count("epoch    1 ") == 1
    assert [runs["second"].stdout.count(f"epoch    {e} ") for e in (1, 2, 3)] == [0, 1, 1]


def test_resume_under_torchrun_continues_like_one_process(runs):
    state, ref = runs["state_3"], runs["ref_state_3"]
    assert [h["epoch"] for h in state["history"]] == [1, 2, 3] and state["step"] == ref["step"] == 1 + 2 * 4
    assert state["history"][0] == runs["state_1"]["history"][0]  # the saved epoch, not rerun
    for mine, theirs in zip(state["history"], ref["history"]):
        assert mine["loss"] == pytest.approx(theirs["loss"], rel=1e-5)
        assert mine["val_force_rmse"] == pytest.approx(theirs["val_force_rmse"], rel=1e-5)
    close(state["model"], ref["model"], atol=1e-4)  # nine Adam steps amplify rounding where |g| ~ eps
    for k, moments in ref["optimiser"]["state"].items():
        scale = float(moments["exp_avg"].abs().max())
        assert float((state["optimiser"]["state"][k]["exp_avg"] - moments["exp_avg"]).abs().max()) <= 5e-5 * scale


def test_partial_losses_normalised_by_the_whole_batch_add_up_to_its_loss_and_gradient(tmp_path):
    data = read_h5(write_labelled(tmp_path / "d.h5")).split("train")
    torch.manual_seed(0)
    model = StudentModel(ULTRA)
    prepared = Prepared.of(data, model.cutoff)
    idx = np.arange(11)
    atoms = int(sum(prepared.sizes()[i] for i in idx))

    def loss_and_grad(part: np.ndarray, **totals: int) -> tuple[float, list[torch.Tensor]]:
        model.zero_grad(set_to_none=True)
        loss = distillation_loss(model, prepared.batch(part, "cpu"), len(part), 10.0, 1.0, 0.5, **totals)
        loss.backward()
        return loss.item(), [p.grad.clone() for p in model.parameters()]

    whole, whole_grad = loss_and_grad(idx)
    parts = [loss_and_grad(part, structures=len(idx), atoms=atoms) for part in np.array_split(idx, 2)]
    assert parts[0][0] + parts[1][0] == pytest.approx(whole, rel=1e-6)
    for g, a, b in zip(whole_grad, parts[0][1], parts[1][1]):
        assert float((a + b - g).abs().max()) <= 1e-5 * float(g.abs().max())
    means = [loss_and_grad(part)[0] for part in np.array_split(idx, 2)]
    assert abs(np.mean(means) - whole) > 1e-3 * whole  # averaging the parts' own means would not match


def test_session_joins_under_a_launcher_and_always_destroys_the_group(monkeypatch):
    calls = []
    monkeypatch.setattr(distributed.dist, "is_initialized", lambda: bool(calls) and calls[-1] == "init")
    monkeypatch.setattr(distributed.dist, "init_process_group", lambda **kw: calls.append("init"))
    monkeypatch.setattr(distributed.dist, "destroy_process_group", lambda: calls.append("destroy"))
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    with distributed.session("cpu") as ctx:
        assert not ctx.active and ctx.device == "cpu" and calls == []
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    with pytest.raises(RuntimeError, match="boom"):
        with distributed.session("cpu") as ctx:
            assert ctx.active and ctx.rank == 1 and ctx.world == 2 and not ctx.is_main
            raise RuntimeError("boom")
    assert calls == ["init", "destroy"]
    assert not distributed.is_main_process()
