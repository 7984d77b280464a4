"""Verbs that make data and students: `models`, `data generate`, `data metals`, `data boxes`, `data merge`,
`data import`, `train`, `distil`."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..errors import UserInputError
from .app import COMPILE_HELP, TRAIN_MODEL_HELP, app, data_app
from .console import console
from .render import print_label_report, print_models, print_train_result, progress


@app.command("models")
def models_cmd() -> None:
    """List the preset student architectures with their parameter counts."""
    print_models()


@data_app.command("generate")
def data_generate(
    out: Path = typer.Option(..., help="HDF5 file to write"),
    teacher: str = typer.Option("xtb", help="teacher: xtb, ani1x, emt, chgnet, or module:factory"),
    smiles: Optional[Path] = typer.Option(None, help="SMILES file (default: the shipped drug-like list)"),
    rattles: int = typer.Option(16, help="rattled frames per molecule"),
    md_frames: int = typer.Option(6, help="teacher-MD frames per molecule (300-800 K)"),
    normal_modes: int = typer.Option(0, help="normal-mode-sampled frames per molecule (300-1000 K; MMFF94 modes, "
                                             "UFF without MMFF parameters; rattled when neither applies)"),
    max_molecules: int = typer.Option(0, help="use only the first N molecules (0 = all)"),
    seed: int = typer.Option(0),
    cluster: Optional[str] = typer.Option(None, help="label on Dask workers: local:N, or tcp://HOST:PORT of a "
                                                     "running scheduler (same dataset for a seed)"),
) -> None:
    """Label off-equilibrium frames of molecules with a teacher; split by molecule; write HDF5."""
    from ..data.generate import SMILES_FILE, generate_molecules, molecules_for, read_smiles
    from ..data.schema import write_h5
    from ..data.teachers import get_teacher

    from ..runtime.cluster import parse_cluster

    for flag, count in (("--rattles", rattles), ("--md-frames", md_frames), ("--normal-modes", normal_modes)):
        if count < 0:
            raise UserInputError(f"{flag} must be at least 0, got {count}")
    spec = parse_cluster(cluster) if cluster is not None else None
    chosen = get_teacher(teacher)
    molecules, outside = molecules_for(read_smiles(smiles or SMILES_FILE), chosen)
    if outside:
        console.print(f"{outside} molecules hold elements teacher '{chosen.name}' does not know: left out")
    if not molecules:
        raise UserInputError(f"no molecule of the SMILES file has only elements teacher '{chosen.name}' knows")
    if max_molecules > 0:
        molecules = molecules[:max_molecules]
    chosen.make_calculator()  # fail early (and clearly) if the teacher is not installed
    with progress() as bar:
        task = bar.add_task(f"labelling with {chosen.name}", total=len(molecules))
        data, report = generate_molecules(molecules, chosen, rattles=rattles, md_frames=md_frames, seed=seed,
                                          on_molecule=lambda name: bar.advance(task), cluster=spec,
                                          normal_modes=normal_modes)
    write_h5(data, out)
    print_label_report(report, out, data)


@data_app.command("molecules")
def data_molecules(
    out: Path = typer.Option(..., help="SMILES file to write (the shipped one: deploycc/data/molecules.txt)"),
    count: int = typer.Option(1200, help="molecules to keep (the first of the balanced ranking that embed)"),
    seed: int = typer.Option(0, help="seed of the enumeration's random recipes"),
    embed_seed: int = typer.Option(0, help="seed of the RDKit embedding check"),
    elements: str = typer.Option("", help="element symbols to keep, e.g. H,C,N,O (default: H C N O F P S Cl)"),
) -> None:
    """Enumerate drug-like molecules from declared rings, chains, linkers and substituents (and ASE's g2
    set), balanced by element group and size, keeping those RDKit embeds; write a SMILES file."""
    from ..data.enumerate import SYMBOLS, build, molecule_stats, write
    from ..errors import UserInputError
    from ..paths import check_output_file

    if count < 1:
        raise UserInputError(f"--count must be at least 1, got {count}")
    by_symbol = {v: k for k, v in SYMBOLS.items()}
    chosen = [s.strip() for s in elements.split(",") if s.strip()]
    unknown = [s for s in chosen if s not in by_symbol]
    if unknown:
        raise UserInputError(f"--elements: {', '.join(unknown)} not among {' '.join(SYMBOLS.values())}")
    from ..data.generate import SMILES_FILE

    check_output_file(out, "--out", (SMILES_FILE,))  # the curated list is an input of the enumeration
    with progress() as bar:
        task = bar.add_task("embedding", total=None)
        kept, dropped, seconds = build(count, seed, {by_symbol[s] for s in chosen} or None, embed_seed,
                                       log=lambda message: bar.update(task, description=message))
    write(out, kept, dropped, count, seed, embed_seed, seconds, ",".join(chosen))
    stats = molecule_stats(kept)
    console.print(f"wrote {len(kept)} molecules to {out} ({stats['hcno_only']} of H C N O only; {len(dropped)} "
                  f"did not embed; embedding {seconds:.0f} s)")


@data_app.command("metals")
def data_metals(
    out: Path = typer.Option(..., help="HDF5 file to write"),
    teacher: str = typer.Option("emt", help="teacher: emt (offline, fast), sevennet, chgnet, or module:factory"),
    bulk: int = typer.Option(3, help="bulk cells per element (fcc, bcc, hcp in turn)"),
    alloys: int = typer.Option(20, help="random binary fcc alloys"),
    vacancies: int = typer.Option(10, help="fcc cells with 1-3 vacancies"),
    slabs: int = typer.Option(12, help="fcc(111)/(100)/(110) slabs with vacuum (pbc in-plane)"),
    clusters: int = typer.Option(6, help="non-periodic nanoparticles"),
    rattles: int = typer.Option(6, help="rattled frames per system"),
    md_frames: int = typer.Option(14, help="teacher-MD frames per system (300-1500 K)"),
    md_interval: int = typer.Option(5, help="teacher-MD steps (2 fs) between kept frames"),
    max_atoms: Optional[int] = typer.Option(None, help="small cells of 32 to N atoms, nanoparticles of 38-55 (N >= "
                                                       "32; default: 32-200): more systems per teacher-second"),
    alloy_fraction: str = typer.Option("0.1:0.5", help="MIN:MAX share of an alloy's second element (at most 0.5)"),
    seed: int = typer.Option(0),
    workers: int = typer.Option(1, help="labelling processes on this machine, one thread each (same dataset for "
                                        "a seed)"),
    cluster: Optional[str] = typer.Option(None, help="label on Dask workers instead: local:N, or tcp://HOST:PORT of "
                                                     "a running scheduler (same dataset for a seed)"),
) -> None:
    """Periodic metals (Al Cu Ag Au Ni Pd Pt: bulk, alloys, strain, vacancies, slabs, MD), 32-200 atoms."""
    from ..data.metals import MetalsSettings, generate_metals, parse_fraction_range, systems
    from ..data.schema import write_h5
    from ..data.teachers import get_teacher
    from ..paths import check_output_file
    from ..runtime.cluster import parse_cluster

    counts = (("--bulk", bulk, 0), ("--alloys", alloys, 0), ("--vacancies", vacancies, 0), ("--slabs", slabs, 0),
              ("--clusters", clusters, 0), ("--rattles", rattles, 0), ("--md-frames", md_frames, 0))
    more = (("--md-interval", md_interval, 1), ("--max-atoms", max_atoms or 32, 32), ("--workers", workers, 1))
    for flag, count, least in counts + more:
        if count < least:
            raise UserInputError(f"{flag} must be at least {least}, got {count}")
    fraction_range = parse_fraction_range(alloy_fraction)
    check_output_file(out, "--out")
    spec = parse_cluster(cluster) if cluster is not None else None
    chosen = get_teacher(teacher)
    chosen.make_calculator()  # fail early (and clearly) if the teacher is not installed
    settings = MetalsSettings(bulk=bulk, alloys=alloys, vacancies=vacancies, slabs=slabs, clusters=clusters,
                              rattles=rattles, md_frames=md_frames, md_interval=md_interval, seed=seed,
                              max_atoms=max_atoms, alloy_fraction=fraction_range)
    total = sum(1 for _ in systems(settings))
    with progress() as bar:
        task = bar.add_task(f"labelling with {chosen.name}", total=total)
        data, report = generate_metals(chosen, settings, on_system=lambda name: bar.advance(task), cluster=spec,
                                       workers=workers)
    write_h5(data, out)
    print_label_report(report, out, data)


@data_app.command("boxes")
def data_boxes(
    out: Path = typer.Option(..., help="HDF5 file to write"),
    teacher: str = typer.Option("xtb", help="a teacher of periodic cells: xtb, sevennet, chgnet, emt (a toy), or "
                                            "module:factory"),
    waters: int = typer.Option(32, help="waters per box (1 g/cm³; 32 make a 9.9 Å cube)"),
    solutes: bool = typer.Option(True, help="also one box per solute of the shipped clusters"),
    rattles: int = typer.Option(2, help="rattled frames per box"),
    max_boxes: int = typer.Option(0, help="use only the first N boxes (0 = all)"),
    seed: int = typer.Option(0),
) -> None:
    """Periodic boxes of water, pure and with a solute, packed at 1 g/cm³ and rattled; labelled by a teacher of
    periodic cells; split by box; write HDF5."""
    from ..data.boxes import box_list, generate_boxes
    from ..data.schema import write_h5
    from ..data.teachers import get_teacher
    from ..paths import check_output_file

    for flag, count in (("--waters", waters), ("--rattles", rattles)):
        if count < 1:
            raise UserInputError(f"{flag} must be at least 1, got {count}")
    for flag, count in (("--max-boxes", max_boxes), ("--seed", seed)):
        if count < 0:
            raise UserInputError(f"{flag} must be at least 0, got {count}")
    check_output_file(out, "--out")
    chosen = get_teacher(teacher)
    if not chosen.periodic:
        raise UserInputError(f"teacher '{chosen.name}' does not label periodic cells: give xtb, sevennet or chgnet")
    chosen.make_calculator()  # fail early (and clearly) if the teacher is not installed
    pairs = box_list(waters) if solutes else box_list(waters)[:1]
    pairs = pairs[:max_boxes] if max_boxes else pairs
    with progress() as bar:
        task = bar.add_task(f"labelling with {chosen.name}", total=len(pairs))
        data, report = generate_boxes(chosen, pairs, rattles, seed, on_box=lambda name: bar.advance(task))
    write_h5(data, out)
    print_label_report(report, out, data)


@data_app.command("merge")
def data_merge(
    sources: list[Path] = typer.Argument(..., help="deploycc HDF5 datasets of one teacher, in order"),
    out: Path = typer.Option(..., help="HDF5 file to write (none of the inputs)"),
) -> None:
    """Merge datasets into one: groups kept apart, each input's train/val/test splits kept."""
    from ..data.merge import merge_datasets
    from ..data.schema import read_h5, write_h5
    from ..paths import check_output_file

    check_output_file(out, "--out", inputs=tuple(sources))
    merged = merge_datasets([read_h5(source) for source in sources], [str(source) for source in sources])
    write_h5(merged, out)
    splits = ", ".join(f"{name} {len(idx)}" for name, idx in merged.splits.items())
    console.print(f"wrote {len(merged)} structures of {len(sources)} datasets to {out} ({splits})")


@data_app.command("import")
def data_import(
    source: Path = typer.Argument(..., help="any ASE-readable labelled file (extxyz, ASE database, ...)"),
    out: Path = typer.Option(..., help="HDF5 file to write"),
    seed: int = typer.Option(0, help="seed of the train/val/test split"),
) -> None:
    """Import labelled structures from an ASE-readable file into the HDF5 schema."""
    import numpy as np

    from ..data.schema import read_structures, split_by_group, write_h5

    data = read_structures(source)
    if not data.has_labels:
        raise UserInputError(f"{source} carries no energy/forces labels; label it with `deploycc data generate`")
    data.group = np.arange(len(data)) if data.group is None else data.group
    data.splits = split_by_group(data.group, (0.8, 0.1, 0.1), seed)
    data.attrs.update({"teacher": "imported", "source": str(source), "generator": "deploycc data import"})
    write_h5(data, out)
    console.print(f"wrote {len(data)} structures to {out}")


@app.command("train")
def train_cmd(
    data: Path = typer.Option(..., help="HDF5 dataset with train/val/test splits"),
    model: str = typer.Option("tiny", help=TRAIN_MODEL_HELP),
    out: Path = typer.Option(..., help="checkpoint to write"),
    epochs: int = typer.Option(200),
    batch_size: int = typer.Option(16),
    lr: float = typer.Option(2e-3),
    energy_weight: float = typer.Option(10.0, help="weight of the energy-per-atom loss (eV/atom)^2"),
    force_weight: float = typer.Option(1.0, help="weight of the force loss (eV/A)^2"),
    angular_weight: float = typer.Option(0.0, help="weight of the 1 - cos(F, F_ref) term"),
    patience: int = typer.Option(30, help="early stopping: epochs without validation improvement"),
    max_minutes: float = typer.Option(0.0, help="wall-clock budget; the LR schedule follows it (0 = none)"),
    seed: int = typer.Option(0),
    device: str = typer.Option("cpu", help="cpu or cuda"),
    resume: bool = typer.Option(False, help="continue from the training state saved beside --out"),
    compile: bool = typer.Option(False, "--compile", help=COMPILE_HELP),
    init: Optional[str] = typer.Option(None, help="start from this checkpoint or preset (same architecture): a "
                                                  "warm restart on new data"),
) -> None:
    """Distil a student from the dataset's teacher labels and save a checkpoint."""
    from ..model import preset_config
    from ..train.loop import TrainSettings, train

    settings = TrainSettings(epochs=epochs, batch_size=batch_size, lr=lr, energy_weight=energy_weight,
                             force_weight=force_weight, angular_weight=angular_weight, patience=patience,
                             max_minutes=max_minutes, seed=seed, device=device, compile=compile, init=init)

    def report(record: dict) -> None:
        console.print(f"epoch {record['epoch']:4d}  loss {record['loss']:.4f}  val E {1000 * record['val_energy_mae']:.2f} "
                      f"meV/atom  val F rmse {record['val_force_rmse']:.4f} eV/Å  lr {record['lr']:.2e}  "
                      f"{record['minutes']:.1f} min")

    result = train(data, preset_config(model), out, settings, resume=resume, on_epoch=report)
    from ..train.distributed import is_main_process, launched

    if is_main_process():  # under torchrun every rank returns the result; one table
        print_train_result(model, result)
    if launched():
        _leave_launched_rank()


def _leave_launched_rank() -> None:
    """A rank that has written and printed everything exits at once: torch's gloo threads can abort a rank at
    interpreter teardown ("terminate called without an active exception", SIGABRT) even after the process group
    is destroyed, which torchrun reports as a failed run."""
    import os
    import sys

    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


NEW_TEACHER_HELP = ("with --init: the checkpoint was trained on another teacher; refit its element reference energies "
                    "to this one first (the rest of its weights carry over)")


@app.command("distil")
def distil_cmd(
    out: Path = typer.Option(..., help="checkpoint to write"),
    teacher: str = typer.Option("ani1x", help="a teacher that labels fast: ani1x, xtb, emt, or module:factory"),
    molecules: Optional[Path] = typer.Option(None, help="SMILES file (default: the shipped molecule list)"),
    train_only: Optional[Path] = typer.Option(None, help="SMILES file of molecules that only ever train (never "
                                                         "validate or test): the split of the others stays as it was"),
    model: str = typer.Option("tiny", help=TRAIN_MODEL_HELP),
    steps: int = typer.Option(2000, help="optimiser steps, each on a batch never seen before"),
    batch_size: int = typer.Option(16),
    lr: float = typer.Option(2e-3),
    energy_weight: float = typer.Option(10.0, help="weight of the energy-per-atom loss (eV/atom)^2; forces weigh 1"),
    workers: int = typer.Option(1, help="labelling processes ahead of the optimiser"),
    eval_every: int = typer.Option(200, help="score the EMA weights on the held-out molecules every N steps"),
    eval_frames: int = typer.Option(4, help="frames per held-out molecule"),
    max_minutes: float = typer.Option(0.0, help="wall-clock budget; the LR schedule follows it (0 = none)"),
    seed: int = typer.Option(0),
    splits_out: Optional[Path] = typer.Option(None, help="also write the held-out frames (val, test) as HDF5"),
    device: str = typer.Option("cpu", help="where the student trains (cpu, cuda); the teacher labels on CPU"),
    init: Optional[str] = typer.Option(None, help="start from this checkpoint (same architecture): a warm restart"),
    new_teacher: bool = typer.Option(False, "--new-teacher", help=NEW_TEACHER_HELP),
    stream: int = typer.Option(0, help="seed stream of the training frames (another one for a warm restart: new "
                                       "frames, the same molecule split)"),
    md_fraction: float = typer.Option(0.0, help="share of each batch from teacher MD at 300-1000 K (batched "
                                                "Langevin walkers); the rest of the batch is rattled conformers"),
    md_stride: int = typer.Option(4, help="teacher-MD steps (0.5 fs) between a walker's training frames"),
    nms_fraction: float = typer.Option(0.0, help="share of each batch by normal-mode sampling at 300-1000 K "
                                                 "(force-field modes, one teacher call a frame; clusters rattled)"),
    clusters: bool = typer.Option(False, help="also sample the shipped molecular clusters (water clusters, "
                                              "solutes in water; split among themselves)"),
    box_every: int = typer.Option(0, help="every Nth batch of a worker, a periodic box of a training cluster (8+ "
                                          "molecules) replaces a rattle; needs --clusters (0 = none)"),
    compile: bool = typer.Option(False, "--compile", help=COMPILE_HELP),
) -> None:
    """Online distillation: workers label fresh frames while the student trains (none seen twice)."""
    from ..data.teachers import get_teacher
    from ..model import preset_config
    from ..paths import check_output_file
    from ..train.online import OnlineSettings, check_boxes, distil_online, molecule_file

    settings = OnlineSettings(steps=steps, batch_size=batch_size, lr=lr, energy_weight=energy_weight, workers=workers,
                              eval_every=eval_every, eval_frames=eval_frames, max_minutes=max_minutes, seed=seed,
                              device=device, init=init or "", new_teacher=new_teacher, stream=stream,
                              md_fraction=md_fraction, md_stride=md_stride, nms_fraction=nms_fraction,
                              box_every=box_every, compile=compile)
    settings.check()
    config = preset_config(model)
    inputs = tuple(Path(p) for p in (molecules, init, train_only) if p)
    check_output_file(out, "--out", inputs)
    if splits_out is not None:
        check_output_file(splits_out, "--splits-out", inputs)
        if Path(splits_out).resolve() == Path(out).resolve():
            raise UserInputError(f"--splits-out {splits_out} is also --out: give two files")
    chosen = get_teacher(teacher)
    pairs = _distil_molecules(molecules or molecule_file(), clusters, chosen)
    extra = _distil_molecules(train_only, False, chosen) if train_only else []
    check_boxes(chosen, list(enumerate(smi for smi, _ in pairs)), box_every)  # before the teacher starts
    chosen.make_calculator()  # a missing teacher is one line before any worker starts

    print_train_result(model, distil_online(chosen.name, pairs, config, out, settings, on_eval=_report_eval,
                                            splits_out=splits_out, train_only=extra))


def _report_eval(record: dict) -> None:
    console.print(f"step {record['step']:6d}  frames {record['frames_seen']:7d}  teacher {record['teacher_seconds']:6.1f} s"
                  f"  val E {1000 * record['val_energy_mae']:.2f} meV/atom  F mae {record['val_force_mae']:.4f}"
                  f"  rmse {record['val_force_rmse']:.4f} eV/Å  {record['minutes']:.1f} min")


def _distil_molecules(path: Path, clusters: bool, teacher) -> list[tuple[str, str]]:
    """The molecules of `path` the teacher can label, then (with --clusters) the shipped clusters."""
    from ..data.generate import molecules_for, read_smiles

    pairs, outside = molecules_for(read_smiles(path), teacher)
    if outside:
        console.print(f"{outside} molecules hold elements teacher '{teacher.name}' does not know: left out")
    if clusters:
        from ..data.clusters import read_clusters

        pairs = pairs + molecules_for(read_clusters(), teacher)[0]
    return pairs
