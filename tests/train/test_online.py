"""Online distillation: fresh frames every step, split by molecule, reproducible for a seed, the best EMA
weights saved with their teacher cost.  The teacher here is ASE's EMT (real, fast, H C N O as a toy)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from deploycc.checkpoint import load_checkpoint
from deploycc.data.teachers import get_teacher
from deploycc.errors import UserInputError
from deploycc.model import preset_config
from deploycc.train.online import OnlineSettings, conformers_of, distil_online, labelled, rattled, split_molecules

SMILES = [(s, s) for s in ("C", "CC", "CCC", "CO", "CCO", "CN", "CCN", "C=O", "CC=O", "OCO", "NCO", "COC",
                           "CCCO", "CC(C)O", "CC(N)O", "C#N", "CC#N", "N#CO", "CNC", "OCCO")]


def test_molecules_are_split_by_molecule_and_the_sampler_never_repeats_a_frame():
    splits = split_molecules(SMILES, seed=0)
    ids = {name: {k for k, _ in pairs} for name, pairs in splits.items()}
    assert ids["train"] and ids["val"] and ids["test"]
    assert not (ids["train"] & ids["val"]) and not (ids["train"] & ids["test"]) and not (ids["val"] & ids["test"])
    pool = conformers_of(splits["train"][:4], 2, seed=0)
    first = rattled(pool, 8, np.random.default_rng([0, 0, 0]))
    second = rattled(pool, 8, np.random.default_rng([0, 0, 1]))
    again = rattled(pool, 8, np.random.default_rng([0, 0, 0]))
    positions = [a.positions for _, a in first + second]
    assert all(not np.allclose(p, q) for k, p in enumerate(positions) for q in positions[k + 1:] if p.shape == q.shape)
    assert all(np.array_equal(a.positions, b.positions) for (_, a), (_, b) in zip(first, again))


def test_labelled_frames_carry_the_teachers_labels_and_neighbour_lists():
    pool = conformers_of([(0, "CCO"), (1, "CN")], 1, seed=0)
    frames = labelled(get_teacher("emt"), rattled(pool, 5, np.random.default_rng(3)), cutoff=5.0)
    assert len(frames.energies) == 5 and frames.teacher_seconds > 0
    assert np.isfinite(frames.energies).all() and all(f.shape == (len(z), 3) for f, z in zip(frames.forces, frames.numbers))
    assert all(len(h.i) > 0 for h in frames.halves)  # every molecule has pairs within the cutoff
    assert set(frames.group.tolist()) <= {0, 1}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("online")
    settings = OnlineSettings(steps=6, batch_size=4, eval_every=3, eval_frames=2, warmup_steps=2, conformers=1, seed=5)
    records = []
    result = distil_online("emt", SMILES, preset_config("ultra-tiny"), folder / "a.pt", settings,
                           on_eval=records.append, splits_out=folder / "held.h5")
    return folder, settings, result, records


def test_an_online_run_trains_on_fresh_frames_and_records_its_teacher_cost(run):
    folder, settings, result, records = run
    assert result.steps == 6 and result.frames_seen <= 6 * settings.batch_size
    assert result.teacher_frames >= result.frames_seen and result.teacher_seconds > 0
    assert [r["step"] for r in records] == [3, 6]
    assert records[0]["frames_seen"] < records[1]["frames_seen"]
    checkpoint = load_checkpoint(folder / "a.pt")
    meta = checkpoint.metadata
    assert meta["online"] is True and meta["teacher"] == "emt" and meta["frames_seen"] == result.frames_seen
    assert meta["online_settings"]["steps"] == 6 and len(meta["history"]) == 2
    assert np.isfinite(result.test.force_rmse) and result.test.structures > 0
    from deploycc.data.schema import read_h5

    held = read_h5(folder / "held.h5")
    assert len(held.splits["val"]) + len(held.splits["test"]) + len(held.splits["test_md"]) == len(held)
    assert held.has_labels and len(held.splits["test_md"]) == result.test_md.structures > 0
    assert meta["test_md_metrics"]["force_rmse"] == pytest.approx(result.test_md.force_rmse)


def test_the_same_seed_gives_the_same_student(run, tmp_path):
    folder, settings, result, _ = run
    again = distil_online("emt", SMILES, preset_config("ultra-tiny"), tmp_path / "b.pt", settings)
    first = load_checkpoint(folder / "a.pt").model.state_dict()
    second = load_checkpoint(tmp_path / "b.pt").model.state_dict()
    assert again.frames_seen == result.frames_seen
    for key in first:
        assert np.array_equal(first[key].numpy(), second[key].numpy()), key


def test_thermal_frames_are_teacher_md_snapshots_with_the_teacher_s_labels():
    from deploycc.train.frames import thermal
    from deploycc.train.walkers import Walkers

    teacher = get_teacher("emt")
    pool = conformers_of([(0, "CCO"), (1, "CN")], 1, seed=0)
    walkers = Walkers(pool, count=4, stride=2, lifetime=5, rng=np.random.default_rng(0))
    frames = thermal(walkers, teacher, 6, cutoff=5.0)
    assert len(frames.energies) == 6 and frames.attempted >= 6 * 2 and frames.teacher_seconds > 0
    for z, r, e, f in zip(frames.numbers, frames.positions, frames.energies, frames.forces):
        (e_ref,), (f_ref,) = teacher.label([_atoms(z, r)])
        assert e == pytest.approx(e_ref, abs=1e-9) and np.allclose(f, f_ref, atol=1e-9)
    start = {len(a): a.positions for _, a in pool}
    assert all(np.abs(r - start[len(r)]).max() > 1e-3 for r in frames.positions)


def _atoms(numbers, positions):
    from ase import Atoms

    return Atoms(numbers=numbers, positions=positions)


def test_a_run_with_teacher_md_frames_mixes_them_into_every_batch(tmp_path):
    settings = OnlineSettings(steps=3, batch_size=4, eval_every=3, eval_frames=1, warmup_steps=1, conformers=1,
                              seed=1, md_fraction=0.5, md_stride=2, md_walkers=4)
    result = distil_online("emt", SMILES, preset_config("ultra-tiny"), tmp_path / "md.pt", settings)
    assert result.frames_seen == 3 * 4  # two rattled and two teacher-MD frames a step
    # the walkers' burn-in and strides are labelled too: the teacher labelled more frames than were trained on
    assert result.teacher_frames > result.frames_seen
    assert load_checkpoint(tmp_path / "md.pt").metadata["online_settings"]["md_fraction"] == 0.5


def test_a_run_with_normal_mode_frames_mixes_them_into_every_batch(tmp_path):
    settings = OnlineSettings(steps=3, batch_size=4, eval_every=3, eval_frames=1, warmup_steps=1, conformers=1,
                              seed=1, nms_fraction=0.5)
    result = distil_online("emt", SMILES, preset_config("ultra-tiny"), tmp_path / "nms.pt", settings)
    assert result.frames_seen == 3 * 4 and result.teacher_frames == result.frames_seen  # one teacher call a frame
    validation_molecules = len(split_molecules(SMILES, seed=1)["val"])
    assert result.val.structures == 2 * validation_molecules  # a rattled and a normal-mode frame of each
    assert load_checkpoint(tmp_path / "nms.pt").metadata["online_settings"]["nms_fraction"] == 0.5


def test_a_batch_takes_its_normal_mode_frames_after_its_rattles():
    from deploycc.data.normal_modes import NormalModeSampler
    from deploycc.train.labellers import unlabelled_batch

    pool = conformers_of([(0, "CCO"), (1, "CN")], 1, seed=0)
    plain = rattled(pool, 2, np.random.default_rng([2, 0, 7]))  # the rattles of worker 0's batch 7, seed 2
    sampler = NormalModeSampler(pool, {0: "CCO", 1: "CN"})
    mixed = unlabelled_batch(pool, sampler, OnlineSettings(batch_size=4, seed=2, nms_fraction=0.5), 0, 7)
    assert len(mixed) == 4
    assert all(np.array_equal(a.positions, b.positions) for (_, a), (_, b) in zip(plain[:2], mixed[:2]))

    def centre_shift(mol_id, atoms):  # a normal-mode displacement keeps the centre of mass; a rattle moves it
        origin = sampler.modes([m for m, _ in pool].index(mol_id)).origin
        return np.abs((atoms.get_masses()[:, None] * (atoms.positions - origin)).sum(0)).max()

    assert all(centre_shift(*frame) < 1e-8 for frame in mixed[2:])
    assert all(centre_shift(*frame) > 1e-4 for frame in plain)


def test_held_out_normal_mode_frames_are_labelled_samples_about_one_centre_per_molecule():
    from deploycc.train.frames import nms_split

    frames = nms_split(get_teacher("emt"), [(0, "CCO"), (1, "CN")], 3, seed=0, stream=5, cutoff=5.0)
    assert sorted(frames.group.tolist()) == [0, 0, 0, 1, 1, 1] and np.isfinite(frames.energies).all()
    for mol_id in (0, 1):
        picked = [(z, r) for z, r, g in zip(frames.numbers, frames.positions, frames.group) if g == mol_id]
        masses = _atoms(*picked[0]).get_masses()[:, None]
        centres = [(masses * r).sum(0) / masses.sum() for _, r in picked]
        assert np.allclose(centres, centres[0], atol=1e-8)
        assert not np.allclose(picked[0][1], picked[1][1])


def test_clusters_train_beside_the_molecules_and_are_counted(tmp_path):
    from deploycc.data.clusters import cluster_list

    settings = OnlineSettings(steps=2, batch_size=4, eval_every=2, eval_frames=1, warmup_steps=1, conformers=1, seed=3)
    waters = [pair for pair in cluster_list() if pair[1].startswith("water")][:10]
    distil_online("emt", SMILES + waters, preset_config("ultra-tiny"), tmp_path / "cl.pt", settings)
    meta = load_checkpoint(tmp_path / "cl.pt").metadata
    assert meta["molecules"] == len(SMILES) + 10 and meta["clusters"] == 10


def test_train_only_molecules_join_training_and_leave_the_split_and_its_ids_as_they_were():
    from deploycc.train.frames import add_train_only

    splits = split_molecules(SMILES, seed=0)
    before = {name: list(pairs) for name, pairs in splits.items()}
    add_train_only(splits, [("CCCC", "butane"), ("CCCCO", "butanol")], len(SMILES))
    assert splits["val"] == before["val"] and splits["test"] == before["test"]
    assert splits["train"] == before["train"] + [(len(SMILES), "CCCC"), (len(SMILES) + 1, "CCCCO")]
    held = before["test"][0][1]
    from rdkit import Chem

    other_spelling = Chem.MolToSmiles(Chem.MolFromSmiles(held), doRandom=True, canonical=False) or held
    with pytest.raises(UserInputError, match="would leak"):
        add_train_only(split_molecules(SMILES, seed=0), [(other_spelling, "again")], len(SMILES))


def test_a_run_with_train_only_molecules_keeps_the_held_out_frames_and_counts_them(run, tmp_path):
    from deploycc.data.schema import read_h5

    folder, settings, _, _ = run
    distil_online("emt", SMILES, preset_config("ultra-tiny"), tmp_path / "t.pt", settings,
                  splits_out=tmp_path / "held.h5", train_only=[("CCCC", "butane"), ("NCCN", "ethylenediamine")])
    assert load_checkpoint(tmp_path / "t.pt").metadata["train_only_molecules"] == 2
    first, again = read_h5(folder / "held.h5"), read_h5(tmp_path / "held.h5")
    assert len(first) == len(again) and np.array_equal(first.group, again.group)
    assert all(np.array_equal(p, q) for p, q in zip(first.positions, again.positions))


def test_settings_outside_their_domain_are_refused():
    with pytest.raises(UserInputError, match="--md-fraction must be between 0 and 1, got 1.5"):
        OnlineSettings(md_fraction=1.5).check()
    with pytest.raises(UserInputError, match="--md-fraction 0.01 gives no teacher-MD frame in a batch of 16"):
        OnlineSettings(md_fraction=0.01).check()
    assert OnlineSettings(md_fraction=0.5, batch_size=16).thermal_count() == 8
    with pytest.raises(UserInputError, match="--nms-fraction must be between 0 and 1, got -0.1"):
        OnlineSettings(nms_fraction=-0.1).check()
    with pytest.raises(UserInputError, match="--nms-fraction 0.02 gives no normal-mode frame in a batch of 16"):
        OnlineSettings(nms_fraction=0.02).check()
    with pytest.raises(UserInputError, match=r"give 8 \+ 10 frames, more than the batch of 16"):
        OnlineSettings(md_fraction=0.5, nms_fraction=0.6).check()
    assert OnlineSettings(nms_fraction=0.25, batch_size=16).nms_count() == 4
    for batch in (16, 24, 7):  # the least fraction the message suggests gives a frame
        with pytest.raises(UserInputError, match="give at least") as refused:
            OnlineSettings(nms_fraction=0.001, batch_size=batch).check()
        least = float(str(refused.value).rsplit(" ", 1)[-1])
        assert OnlineSettings(nms_fraction=least, batch_size=batch).nms_count() == 1
    with pytest.raises(UserInputError, match="tpu"):
        OnlineSettings(device="tpu").check()
    with pytest.raises(UserInputError, match="--max-minutes must be a non-negative number, got -1"):
        OnlineSettings(max_minutes=-1).check()
    with pytest.raises(UserInputError, match="--steps must be at least 1, got 0"):
        OnlineSettings(steps=0).check()
    with pytest.raises(UserInputError, match="--lr must be a positive number, got nan"):
        OnlineSettings(lr=float("nan")).check()
    with pytest.raises(UserInputError, match="--new-teacher needs --init"):
        OnlineSettings(new_teacher=True).check()
    with pytest.raises(UserInputError, match="needs molecules for train, val and test"):
        distil_online("emt", SMILES[:2], preset_config("ultra-tiny"), "unused.pt", OnlineSettings(steps=1))


def test_a_warm_restart_starts_from_the_checkpoint_and_refuses_another_architecture(run, tmp_path):
    folder, settings, _result, _ = run
    from dataclasses import replace

    from deploycc.train.loop import warm_start

    start = warm_start(str(folder / "a.pt"), preset_config("ultra-tiny"), "cpu").model
    saved = load_checkpoint(folder / "a.pt").model.state_dict()
    assert all(np.array_equal(v.numpy(), saved[k].numpy()) for k, v in start.state_dict().items())
    with pytest.raises(UserInputError, match="--init .* is a .* model, not the"):
        warm_start(str(folder / "a.pt"), preset_config("tiny"), "cpu")
    again = distil_online("emt", SMILES, preset_config("ultra-tiny"), tmp_path / "c.pt",
                          replace(settings, steps=2, eval_every=1, init=str(folder / "a.pt")))
    assert again.steps == 2 and load_checkpoint(tmp_path / "c.pt").metadata["online_settings"]["init"].endswith("a.pt")



def test_a_warm_start_from_another_teacher_refits_its_element_references(run, tmp_path):
    from dataclasses import replace

    from deploycc.checkpoint import save_checkpoint

    folder, settings, _result, _ = run
    trained = load_checkpoint(folder / "a.pt")
    model = trained.model
    with torch.no_grad():
        model.element_ref[[1, 6, 7, 8]] += torch.tensor([50.0, -300.0, 120.0, 700.0])  # "another teacher"
    save_checkpoint(model, tmp_path / "other.pt", trained.metadata)
    shifted = trained.model.element_ref.clone()
    ends = {}
    for new_teacher in (False, True):
        out = tmp_path / f"{new_teacher}.pt"
        distil_online("emt", SMILES, preset_config("ultra-tiny"), out,
                      replace(settings, steps=2, eval_every=1, init=str(tmp_path / "other.pt"), new_teacher=new_teacher))
        saved = load_checkpoint(out)
        assert saved.metadata["online_settings"]["new_teacher"] is new_teacher
        ends[new_teacher] = saved.model.element_ref
    assert torch.equal(ends[False], shifted)  # a plain warm restart keeps the references it was given
    original = load_checkpoint(folder / "a.pt").model.element_ref
    assert (ends[True] - original)[[1, 6, 7, 8]].abs().max() < 1.0  # refitted to EMT, within 1 eV of EMT's own


def test_the_distil_command_trains_and_refuses_bad_settings_in_one_line(tmp_path, monkeypatch, capsys):
    import sys

    from deploycc.cli import main

    molecules = tmp_path / "molecules.txt"
    molecules.write_text("".join(f"{s} {s}\n" for s, _ in SMILES) + "CS methanethiol\n")

    def run(*args: str) -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "argv", ["deploycc", "distil", *args])
        try:
            main()
            code = 0
        except SystemExit as exc:
            code = int(exc.code or 0)
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    code, out, err = run("--teacher", "emt", "--molecules", str(molecules), "--model", "ultra-tiny", "--steps", "2",
                         "--eval-every", "1", "--batch-size", "3", "--out", str(tmp_path / "s.pt"))
    assert code == 0, err
    assert "steps 2," in out and load_checkpoint(tmp_path / "s.pt").metadata["online"] is True
    code, out, err = run("--teacher", "emt", "--molecules", str(molecules), "--workers", "0", "--out",
                         str(tmp_path / "t.pt"))
    assert code == 65 and err.strip() == "error: --workers must be at least 1, got 0"
    code, out, err = run("--teacher", "ani1x", "--molecules", str(molecules), "--out", str(molecules))
    assert code == 65 and "is an input of this command" in err and len(err.strip().splitlines()) == 1


def test_a_frame_the_teacher_cannot_label_is_dropped_not_the_batch():
    pool = conformers_of([(0, "CCO"), (1, "CS")], 1, seed=0)  # EMT has no parameters for sulfur
    frames = rattled(pool, 6, np.random.default_rng(1))
    kinds = [mol_id for mol_id, _ in frames]
    got = labelled(get_teacher("emt"), frames, cutoff=5.0)
    assert got.group.tolist() == [k for k in kinds if k == 0] and np.isfinite(got.energies).all()


def test_a_teacher_that_labels_no_held_out_frame_is_refused_before_training(tmp_path):
    sulfur = [(f"C{'C' * k}S", f"thiol{k}") for k in range(12)]  # EMT has no parameters for sulfur
    with pytest.raises(UserInputError, match="teacher 'emt' labelled none of the validation frames"):
        distil_online("emt", sulfur, preset_config("ultra-tiny"), tmp_path / "x.pt", OnlineSettings(steps=1))
    assert not (tmp_path / "x.pt").exists()


WATERS = [(".".join(["O"] * n), f"water{n}") for n in range(8, 14)]


def test_large_training_clusters_are_packed_as_periodic_boxes_at_liquid_density():
    from deploycc.data.clusters import AMU_PER_A3, MIN_CONTACT
    from deploycc.train.frames import box_pool

    boxes = box_pool([(0, "O.O.O.O.O.O.O.O"), (1, "O.O.O"), (2, "CCO")], 2, seed=4)
    assert [mol_id for mol_id, _ in boxes] == [0, 0]  # a trimer and a molecule stay as they are
    for _, box in boxes:
        assert box.pbc.all() and len(box) == 24
        edge = box.cell.lengths()
        assert np.allclose(edge, edge[0]) and np.allclose(box.cell.angles(), 90.0)
        assert box.get_masses().sum() / box.get_volume() == pytest.approx(AMU_PER_A3, rel=0.2)
        d = box.get_all_distances(mic=True)
        other = np.arange(len(box))[:, None] // 3 != np.arange(len(box))[None, :] // 3  # atoms of other waters
        assert d[other].min() >= MIN_CONTACT
    assert not np.allclose(boxes[0][1].positions, boxes[1][1].positions)


def test_labelled_boxes_carry_their_cells_and_train_as_the_offline_path_does():
    import torch

    from deploycc.model import StudentModel
    from deploycc.runtime.neighbours import Structure, half_list
    from deploycc.train.batches import Prepared, predict_batch
    from deploycc.train.frames import box_pool, joined

    teacher = get_teacher("emt")
    boxes = labelled(teacher, rattled(box_pool([(0, WATERS[0][0])], 1, seed=1), 2, np.random.default_rng(0)), 5.0)
    molecules = labelled(teacher, rattled(conformers_of([(1, "CCO")], 1, seed=0), 1, np.random.default_rng(1)), 5.0)
    both = joined([molecules, boxes])
    assert boxes.periodic_count() == 2 and molecules.cells is None and both.periodic_count() == 2
    cells, pbc = both.cells_and_pbc()
    assert not pbc[0].any() and pbc[1:].all() and np.allclose(cells[1], boxes.cells[0])
    from ase import Atoms

    for z, r, e, c in zip(boxes.numbers, boxes.positions, boxes.energies, boxes.cells):  # labelled as periodic
        (e_cell,), _ = teacher.label([Atoms(numbers=z, positions=r, cell=c, pbc=True)])
        (e_alone,), _ = teacher.label([Atoms(numbers=z, positions=r)])
        assert e == pytest.approx(e_cell, abs=1e-9) and abs(e - e_alone) > 1e-3
    model = StudentModel(preset_config("ultra-tiny")).double()
    online, offline = both.prepared(), Prepared.of(both.structures(), 5.0)
    idx = np.arange(3)
    results = [predict_batch(model, tuple(t.double() if t.is_floating_point() else t for t in p.batch(idx, "cpu")),
                             3, create_graph=False) for p in (online, offline)]
    assert torch.allclose(results[0][0], results[1][0]) and torch.allclose(results[0][2], results[1][2])
    alone = [half_list(Structure.of(z, r, np.zeros((3, 3)), np.zeros(3, bool)), 5.0)
             for z, r in zip(boxes.numbers, boxes.positions)]
    assert all(len(h.i) > len(a.i) for h, a in zip(boxes.halves, alone))  # the images add pairs


def test_every_nth_batch_trades_one_rattle_for_a_periodic_box():
    from deploycc.train.frames import box_pool
    from deploycc.train.labellers import unlabelled_batch

    pool = conformers_of([(0, "CCO"), (1, "CN")], 1, seed=0)
    boxes = box_pool([(2, WATERS[0][0])], 1, seed=0)
    settings = OnlineSettings(batch_size=4, seed=2, box_every=3)
    batches = [unlabelled_batch(pool, None, settings, 0, k, boxes) for k in range(6)]
    assert all(len(b) == 4 for b in batches)
    assert [sum(atoms.pbc.any() for _, atoms in b) for b in batches] == [0, 0, 1, 0, 0, 1]
    assert batches[2][-1][0] == 2 and not np.allclose(batches[2][-1][1].positions, batches[5][-1][1].positions)
    without = [unlabelled_batch(pool, None, OnlineSettings(batch_size=4, seed=2), 0, k) for k in range(6)]
    assert all(np.array_equal(a.positions, b.positions) for k in (0, 1, 3) for (_, a), (_, b)
               in zip(batches[k], without[k]))


def test_a_run_with_boxes_trains_and_validates_on_them_and_counts_them(tmp_path):
    from deploycc.data.schema import read_h5

    settings = OnlineSettings(steps=4, batch_size=4, eval_every=4, eval_frames=1, warmup_steps=1, conformers=1,
                              seed=3, box_every=2)
    pairs = SMILES + [(".".join(["O"] * n), f"water{n}") for n in range(8, 20)]
    result = distil_online("emt", pairs, preset_config("ultra-tiny"), tmp_path / "box.pt", settings,
                           splits_out=tmp_path / "held.h5")
    checkpoint = load_checkpoint(tmp_path / "box.pt")
    meta = checkpoint.metadata
    assert meta["box_frames"] == 2 and meta["online_settings"]["box_every"] == 2  # batches 1 and 3
    # boxes in the first batches (those the fresh student is fitted on) leave it the molecular preset it was
    assert checkpoint.config == preset_config("ultra-tiny") and not checkpoint.config.periodic
    held = read_h5(tmp_path / "held.h5")
    periodic = held.pbc.any(axis=1)
    edges = held.cells[periodic][:, [0, 1, 2], [0, 1, 2]]
    assert np.all(edges > 5.0) and np.allclose(held.cells[periodic][:, 0, 1:], 0.0)  # the boxes' cubes
    val_clusters = [m for m, s in split_molecules(pairs, 3)["val"] if "." in s]
    assert periodic[held.splits["val"]].sum() == len(val_clusters) > 0  # a box of each validation cluster
    assert not periodic[held.splits["test"]].any() and np.isfinite(result.val.force_rmse)


def test_boxes_need_a_periodic_teacher_large_clusters_and_a_rattle_to_replace():
    from deploycc.train.frames import check_boxes

    with pytest.raises(UserInputError, match="--box-every must be at least 0 \\(0: no periodic boxes\\), got -1$"):
        OnlineSettings(box_every=-1).check()
    with pytest.raises(UserInputError, match="a periodic box replaces a rattled frame"):
        OnlineSettings(box_every=4, nms_fraction=0.5, md_fraction=0.5).check()
    train = [(0, "CCO"), (1, WATERS[0][0])]
    with pytest.raises(UserInputError, match="teacher 'ani1x' labels molecules only"):
        check_boxes(get_teacher("ani1x"), train, 4)
    with pytest.raises(UserInputError, match="there are none: add --clusters"):
        check_boxes(get_teacher("emt"), [(0, "CCO"), (1, "O.O.O")], 4)
    check_boxes(get_teacher("emt"), train, 4)
    check_boxes(get_teacher("ani1x"), [(0, "CCO")], 0)  # no boxes asked: nothing to check
