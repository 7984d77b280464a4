"""Property-based tests (hypothesis) of every reader of user data but HDF5 (tests/data/test_fuzz_h5.py):
checkpoints, manifests, structure files and command-line options.

Each takes something valid, breaks it at random (a field dropped or of the wrong type or shape, a number out
of range or non-finite, the file truncated) and asserts the one rule: the reader either accepts it and gives
finite results, or refuses it with one line naming the file (a `DeployccError`: exit 65, 64 for usage, 74
for storage) — never another exception, never a traceback, never an output file. Derandomized, no example
database.
"""

from __future__ import annotations

import copy
import io
import json
import shutil
import sys
import tempfile
from pathlib import Path

import ase.io
import numpy as np
import pytest
import torch
from ase import Atoms
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deploycc.api import load
from deploycc.build import build
from deploycc.checkpoint import load_checkpoint, save_checkpoint
from deploycc.cli import main
from deploycc.errors import DeployccError

from helpers import make_model, random_molecule

FUZZ = settings(max_examples=40, deadline=None, derandomize=True, database=None, print_blob=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
FEW = settings(FUZZ, max_examples=25)

# Values of every JSON/pickle kind, including the ones readers forget: None, bools, NaN, huge and negative.
ANY_VALUE = st.one_of(
    st.none(), st.booleans(), st.integers(-10**12, 10**12), st.sampled_from([0, -1, 1, 2**63]),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8), st.lists(st.integers(-3, 200), max_size=4),
    st.dictionaries(st.text(max_size=4), st.integers(), max_size=2))


def fresh(tmp_path: Path) -> Path:
    """A new folder per hypothesis example (function-scoped tmp_path is shared by all of them)."""
    return Path(tempfile.mkdtemp(dir=tmp_path))


def assert_refused_in_one_line(exc: BaseException, *names: str) -> None:
    assert isinstance(exc, DeployccError), f"{type(exc).__name__}: {exc}"  # any other type is a bug
    message = str(exc)
    assert message and "\n" not in message, message
    assert any(name in message for name in names), (names, message)


def probe_molecule() -> list[Atoms]:
    numbers, positions = random_molecule(np.random.default_rng(4), 6)
    return [Atoms(numbers=numbers, positions=positions)]


def assert_finite_prediction(source) -> None:
    energies, forces = load(source, unseen_elements="allow").predict(probe_molecule())
    assert np.isfinite(energies).all() and all(np.isfinite(f).all() for f in forces)


# --- checkpoints -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def checkpoint_payload(tmp_path_factory) -> dict:
    path = tmp_path_factory.mktemp("ckpt") / "valid.pt"
    save_checkpoint(make_model(), path, {"teacher": "none", "elements": [1, 6, 7, 8]})
    return torch.load(path, weights_only=True)


def _break_tensor(tensor: torch.Tensor, how: str) -> object:
    if how == "nan":
        return torch.full_like(tensor, float("nan")) if tensor.is_floating_point() else tensor
    if how == "inf":
        return torch.full_like(tensor, float("inf")) if tensor.is_floating_point() else tensor
    if how == "shape":
        return torch.zeros(*(s + 1 for s in tensor.shape), 2)
    if how == "empty":
        return torch.zeros(0)
    if how == "int":
        return tensor.to(torch.int64)
    return how  # a string where a tensor belongs


CHECKPOINT_BREAKS = st.one_of(
    st.tuples(st.just("drop"), st.sampled_from(["state_dict", "model_config", "format_version", "metadata",
                                                "normalisation"])),
    st.tuples(st.just("top"), st.sampled_from(["state_dict", "model_config", "format_version", "metadata"]), ANY_VALUE),
    st.tuples(st.just("config"), st.sampled_from(["hidden_dim", "num_interactions", "num_rbf", "max_z", "cutoff",
                                                  "periodic", "unknown_key"]), ANY_VALUE),
    st.tuples(st.just("tensor"), st.integers(0, 10**6), st.sampled_from(["nan", "inf", "shape", "empty", "int", "str"])),
    st.tuples(st.just("drop-weight"), st.integers(0, 10**6)),
    st.tuples(st.just("elements"), ANY_VALUE),
    st.tuples(st.just("truncate"), st.floats(0.0, 0.99)),
)


def broken_checkpoint(payload: dict, change: tuple, path: Path) -> None:
    payload = copy.deepcopy(payload)
    kind = change[0]
    if kind == "drop":
        payload.pop(change[1], None)
    elif kind == "top":
        payload[change[1]] = change[2]
    elif kind == "config":
        payload["model_config"][change[1]] = change[2]
    elif kind in ("tensor", "drop-weight"):
        names = sorted(payload["state_dict"])
        name = names[change[1] % len(names)]
        if kind == "tensor":
            payload["state_dict"][name] = _break_tensor(payload["state_dict"][name], change[2])
        else:
            del payload["state_dict"][name]
    elif kind == "elements":
        payload["metadata"]["elements"] = change[1]
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    data = buffer.getvalue()
    if kind == "truncate":
        data = data[: int(len(data) * change[1])]
    path.write_bytes(data)


@FUZZ
@given(change=CHECKPOINT_BREAKS)
def test_a_broken_checkpoint_loads_or_is_refused_in_one_line(checkpoint_payload, tmp_path, change):
    path = tmp_path / "broken.pt"
    broken_checkpoint(checkpoint_payload, change, path)
    try:
        checkpoint = load_checkpoint(path)
    except Exception as exc:  # noqa: BLE001 - the point: which exceptions come out
        assert_refused_in_one_line(exc, str(path))
        return
    assert checkpoint.model.cutoff > 0
    assert_finite_prediction(path)


# --- manifests ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def artifact(tmp_path_factory, calib_file) -> Path:
    checkpoint = tmp_path_factory.mktemp("ckpt") / "fuzz.pt"
    save_checkpoint(make_model(), checkpoint, {"teacher": "none"})
    return build(str(checkpoint), "eager", tmp_path_factory.mktemp("art"), calib=calib_file).folder


def json_paths(value, prefix: tuple = ()) -> list[tuple]:
    """Every key path in a JSON document (dicts and lists), the document's own root excluded."""
    paths = []
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else []
    for key, child in items:
        paths.append(prefix + (key,))
        paths.extend(json_paths(child, prefix + (key,)))
    return paths


MANIFEST_BREAKS = st.tuples(st.integers(0, 10**6), st.sampled_from(["drop", "replace"]), ANY_VALUE)


def broken_manifest(document: dict, change: tuple) -> object:
    document = copy.deepcopy(document)
    paths = json_paths(document)
    path = paths[change[0] % len(paths)]
    parent = document
    for key in path[:-1]:
        parent = parent[key]
    if change[1] == "drop":
        del parent[path[-1]]
    else:
        parent[path[-1]] = change[2]
    return document


@FUZZ
@given(change=MANIFEST_BREAKS)
def test_a_broken_manifest_opens_or_is_refused_in_one_line(artifact, tmp_path, change):
    folder = fresh(tmp_path) / "eager"
    shutil.copytree(artifact, folder)
    document = json.loads((artifact / "manifest.json").read_text())
    (folder / "manifest.json").write_text(json.dumps(broken_manifest(document, change)))
    try:
        assert_finite_prediction(folder)
    except Exception as exc:  # noqa: BLE001
        assert_refused_in_one_line(exc, str(folder))


@FEW
@given(cut=st.floats(0.0, 0.999), junk=st.binary(max_size=16))
def test_a_truncated_manifest_is_refused_in_one_line(artifact, tmp_path, cut, junk):
    folder = fresh(tmp_path) / "eager"
    shutil.copytree(artifact, folder)
    text = (artifact / "manifest.json").read_bytes()
    (folder / "manifest.json").write_bytes(text[: int(len(text) * cut)] + junk)
    with pytest.raises(Exception) as info:  # noqa: PT011 - checked below
        load(folder)
    assert_refused_in_one_line(info.value, str(folder))


# --- structure files (extxyz) through `deploycc predict` ---------------------------------------------------


def cli(*args) -> tuple[int, str]:
    """`deploycc ARGS` in this process: (exit code, stderr), stdout discarded."""
    from contextlib import redirect_stderr, redirect_stdout

    err = io.StringIO()
    code = 0
    argv = sys.argv
    sys.argv = ["deploycc", *map(str, args)]
    try:
        with redirect_stdout(io.StringIO()), redirect_stderr(err):
            main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        sys.argv = argv
    return code, err.getvalue()


def assert_one_error_line(code: int, err: str, codes: set[int]) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert code in codes, (code, err[-2000:])
    assert "Traceback" not in err and len(lines) == 1 and lines[0].startswith("error: "), err[-2000:]
    return lines[0]


def valid_extxyz() -> str:
    rng = np.random.default_rng(2)
    molecules = [Atoms(*random_molecule(rng, n)) for n in (3, 5, 4)]
    buffer = io.StringIO()
    ase.io.write(buffer, molecules, format="extxyz")
    return buffer.getvalue()


TEXT_BREAKS = st.one_of(
    st.tuples(st.just("truncate"), st.floats(0.0, 0.999)),
    st.tuples(st.just("token"), st.integers(0, 10**6), st.sampled_from(["nan", "inf", "-1", "1e30", "x", "", "0",
                                                                       "Xx", "999", "1,2", '"'])),
    st.tuples(st.just("line"), st.integers(0, 10**6), st.sampled_from(["", "7", "-2", "abc", "3 3 3"])),
)


def broken_text(text: str, change: tuple) -> str:
    if change[0] == "truncate":
        return text[: int(len(text) * change[1])]
    lines = text.splitlines()
    if change[0] == "line":
        lines[change[1] % len(lines)] = change[2]
        return "\n".join(lines) + "\n"
    tokens = [(k, t) for k, line in enumerate(lines) for t in range(len(line.split()))]
    k, t = tokens[change[1] % len(tokens)]
    words = lines[k].split()
    words[t] = change[2]
    lines[k] = " ".join(words)
    return "\n".join(lines) + "\n"


@FUZZ
@given(change=TEXT_BREAKS)
def test_a_broken_structure_file_is_predicted_or_refused_in_one_line(artifact, tmp_path, change):
    structures = tmp_path / "in.extxyz"
    structures.write_text(broken_text(valid_extxyz(), change))
    out = tmp_path / "out.extxyz"
    out.unlink(missing_ok=True)
    code, err = cli("predict", artifact, "--structures", structures, "--out", out, "--unseen-elements", "allow")
    if code == 0:
        written = ase.io.read(out, ":")
        assert written and all(np.isfinite(a.get_forces()).all() for a in written)
        return
    assert_one_error_line(code, err, {65})
    assert not out.exists()


# --- command-line options ----------------------------------------------------------------------------------

# Each verb with one input that cannot exist, so that no combination of other options starts real work; the
# other options get values of every kind. What is asserted is the shape of the refusal, whichever comes first.
POISONED = {
    "train": ["--data", "/nonexistent/data.h5", "--out", "{tmp}/t.pt"],
    "build": ["--model", "/nonexistent/model.pt"],
    "verify": ["/nonexistent/artifact"],
    "predict": ["{artifact}", "--structures", "/nonexistent/in.extxyz", "--out", "{tmp}/o.extxyz"],
    "md": ["{artifact}", "--structure", "/nonexistent/in.xyz"],
    "bench": ["--model", "/nonexistent/model.pt"],
    "scale": ["--model", "/nonexistent/model.pt"],
    "data generate": ["--teacher", "nonexistent_module_for_fuzz:factory", "--out", "{tmp}/d.h5"],
    "data metals": ["--teacher", "nonexistent_module_for_fuzz:factory", "--out", "{tmp}/m.h5"],
    "data import": ["/nonexistent/in.extxyz", "--out", "{tmp}/i.h5"],
}
OPTIONS = {
    "train": ["--epochs", "--batch-size", "--lr", "--energy-weight", "--force-weight", "--patience", "--max-minutes",
              "--seed", "--device", "--model"],
    "build": ["--target", "--out", "--device", "--calib"],
    "verify": ["--data", "--json", "--device", "--unseen-elements"],
    "predict": ["--device", "--unseen-elements", "--cluster", "--chunk-size"],
    "md": ["--temperature", "--timestep-fs", "--ps", "--steps", "--equilibrate-ps", "--relax-fmax", "--friction",
           "--log-interval", "--skin", "--compare", "--out", "--max-drift"],
    "bench": ["--target", "--batch-sizes", "--atoms", "--threads", "--min-iters", "--min-seconds", "--warmup",
              "--rounds", "--json", "--device"],
    "scale": ["--target", "--systems", "--threads", "--repeats", "--budget", "--peer", "--json"],
    "data generate": ["--smiles", "--rattles", "--md-frames", "--max-molecules", "--seed", "--cluster"],
    "data metals": ["--bulk", "--alloys", "--rattles", "--md-frames", "--seed"],
    "data import": ["--seed"],
}
VALUES = st.sampled_from(["0", "-1", "1", "nan", "inf", "-inf", "1e9", "abc", "", "3.5", "cpu", "cuda:x", "tiny",
                          "all", "local:0", "/nonexistent/x", "{tmp}", "{tmp}/sub/x.json", "{file}/below"])


@FUZZ
@given(verb=st.sampled_from(sorted(POISONED)), data=st.data())
def test_any_options_give_one_line_and_a_documented_code(artifact, tmp_path, verb, data):
    tmp_path = fresh(tmp_path)
    (tmp_path / "a-file").write_text("x\n")
    fill = {"tmp": tmp_path, "artifact": artifact, "file": tmp_path / "a-file"}
    chosen = data.draw(st.lists(st.tuples(st.sampled_from(OPTIONS[verb]), VALUES), max_size=4, unique_by=lambda o: o[0]))
    args = [*verb.split(), *POISONED[verb]]
    for option, value in chosen:
        args += [option, value]
    args = [a.format(**fill) for a in args]
    before = sorted(tmp_path.rglob("*"))
    code, err = cli(*args)
    assert_one_error_line(code, err, {2, 64, 65, 74})
    assert sorted(tmp_path.rglob("*")) == before  # nothing written by a refused command


def test_the_option_tables_name_real_options():
    """The fuzz above stays meaningful: every option it draws exists on its verb (typos would only test 64)."""
    import typer.main

    from deploycc.cli import app

    root = typer.main.get_command(app)
    for verb, options in OPTIONS.items():
        command = root
        for part in verb.split():
            command = command.commands[part]
        known = {opt for param in command.params for opt in param.opts}
        assert set(options) <= known, (verb, set(options) - known)
