"""Checkpoints: round trip, the predecessor's layout, version gate, the schema every file is checked against,
and refusal of bad or unsafe files (one line naming the file and the field)."""

from __future__ import annotations

import hashlib
import os
import random
import shlex

import numpy as np
import pytest
import torch

import deploycc.checkpoint as checkpoint_module
from deploycc.checkpoint import CONFIG_DOMAIN, FORMAT_VERSION, Checkpoint, load_checkpoint, save_checkpoint
from deploycc.errors import CheckpointError, DeployccError
from deploycc.model import PRESET_CONFIGS, StudentModel

from helpers import evaluate, random_molecule

torch.set_num_threads(1)


def make_model(preset: str = "tiny", seed: int = 0) -> StudentModel:
    """Seeded model with perturbed weights and non-default normalisation (so a load that drops or mixes up
    any tensor shows)."""
    torch.manual_seed(seed)
    model = StudentModel(PRESET_CONFIGS[preset])
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(torch.empty_like(p).uniform_(0.5, 2.0))
        model.element_ref.copy_(torch.randn(model.element_ref.shape))
        model.scale.fill_(2.5)
        model.shift.fill_(-0.7)
    return model.eval()


def probe(model: StudentModel) -> tuple[np.ndarray, np.ndarray]:
    """Energies and forces of two molecules and a periodic cell (float64): any changed tensor shows."""
    from ase.build import bulk

    rng = np.random.default_rng(123)
    cell = bulk("Cu", "fcc", a=3.61, cubic=True)
    cell.rattle(0.05, seed=1)
    result = evaluate(model, [random_molecule(rng, 5), random_molecule(rng, 9), cell])
    return result.energies, result.forces


def assert_same_state(a: StudentModel, b: StudentModel) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sorted(sa) == sorted(sb)
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


def assert_one_line_naming(exc: BaseException, path) -> str:
    message = str(exc)
    assert "\n" not in message
    assert str(path) in message or os.path.basename(str(path)) in message
    return message


def file_state(path):
    stat = os.stat(path)
    return path.read_bytes(), stat.st_mtime_ns, stat.st_size


# --- round trip --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("preset", list(PRESET_CONFIGS))
def test_round_trip_config_state_metadata_sha(tmp_path, preset):
    model = make_model(preset, seed=1)
    metadata = {"epochs": 7, "teacher": "gfn2-xtb", "val_mae": [0.012, 0.034], "nested": {"a": 1.5, "b": "x"}}
    path = tmp_path / "sub" / "model.pt"  # parent folder is created
    sha = save_checkpoint(model, path, metadata)
    assert sha == hashlib.sha256(path.read_bytes()).hexdigest()
    assert sorted(os.listdir(path.parent)) == ["model.pt"]  # no temporary files left behind

    loaded = load_checkpoint(path)
    assert isinstance(loaded, Checkpoint)
    assert loaded.config == PRESET_CONFIGS[preset]
    assert loaded.model.config == model.config
    assert loaded.metadata == metadata
    assert loaded.sha256 == sha
    assert loaded.path == path
    assert loaded.name == "model"
    assert not loaded.model.training
    assert_same_state(loaded.model, model)
    e0, f0 = probe(model)
    e1, f1 = probe(loaded.model)
    np.testing.assert_array_equal(e0, e1)
    np.testing.assert_array_equal(f0, f1)


def test_load_by_string_path_and_overwrite(tmp_path):
    path = tmp_path / "ckpt.pt"
    save_checkpoint(make_model(seed=2), path, {"run": 1})
    sha2 = save_checkpoint(make_model(seed=3), path, {"run": 2})  # overwrite in place
    loaded = load_checkpoint(str(path))
    assert loaded.metadata == {"run": 2}
    assert loaded.sha256 == sha2
    assert_same_state(loaded.model, make_model(seed=3))
    assert sorted(os.listdir(tmp_path)) == ["ckpt.pt"]


def test_sha_changes_with_weights(tmp_path):
    a = save_checkpoint(make_model(seed=4), tmp_path / "a.pt", {})
    b = save_checkpoint(make_model(seed=5), tmp_path / "b.pt", {})
    assert a != b


def test_loading_does_not_modify_current_format_file(tmp_path):
    path = tmp_path / "m.pt"
    save_checkpoint(make_model(seed=6), path, {"k": 1})
    before = file_state(path)
    load_checkpoint(path)
    assert file_state(path) == before
    assert sorted(os.listdir(tmp_path)) == ["m.pt"]


def test_preset_names_resolve_in_presets_dir(tmp_path, monkeypatch):
    monkeypatch.setattr(checkpoint_module, "presets_dir", lambda: tmp_path)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint("tiny")
    assert "\n" not in str(info.value) and "tiny" in str(info.value)
    model = make_model("tiny", seed=7)
    save_checkpoint(model, tmp_path / "tiny.pt", {"preset": True})
    loaded = load_checkpoint("tiny")
    assert loaded.name == "tiny"
    assert loaded.path == tmp_path / "tiny.pt"
    assert_same_state(loaded.model, model)


# --- the predecessor's layout ------------------------------------------------------------------------------


# The predecessor trained molecular models only: a periodic architecture cannot be told from its weight shapes.
@pytest.mark.parametrize("preset", [name for name, c in PRESET_CONFIGS.items() if not c.periodic])
def test_predecessor_layout_infers_architecture_and_keeps_file(tmp_path, preset):
    model = make_model(preset, seed=8)
    path = tmp_path / "old_run.pt"
    torch.save(
        {
            "model_state_dict": {"model." + k: v for k, v in model.state_dict().items()},
            "config": {"batch_size": 32, "lr": 1e-3},  # training settings only, no architecture
        },
        path,
    )
    before = file_state(path)
    loaded = load_checkpoint(path)
    assert loaded.config == PRESET_CONFIGS[preset]
    assert loaded.metadata == {}
    assert loaded.sha256 == hashlib.sha256(before[0]).hexdigest()
    assert_same_state(loaded.model, model)
    e0, _ = probe(model)
    e1, _ = probe(loaded.model)
    np.testing.assert_array_equal(e0, e1)
    # the user's file is not rewritten, converted or accompanied by anything
    assert file_state(path) == before
    assert sorted(os.listdir(tmp_path)) == ["old_run.pt"]


def test_predecessor_layout_with_normalisation_beside_weights(tmp_path):
    model = make_model("ultra-tiny", seed=9)
    state = model.state_dict()
    weights = {"model." + k: v for k, v in state.items() if k not in ("element_ref", "scale", "shift")}
    normalisation = {k: state[k].clone() for k in ("element_ref", "scale", "shift")}
    path = tmp_path / "old.pt"
    torch.save({"model_state_dict": weights, "config": {"lr": 3e-4}, "normalisation": normalisation}, path)
    loaded = load_checkpoint(path)
    assert loaded.config == PRESET_CONFIGS["ultra-tiny"]
    assert_same_state(loaded.model, model)


# --- refusals ----------------------------------------------------------------------------------------------


def test_newer_format_version_asks_for_upgrade(tmp_path):
    model = make_model(seed=10)
    path = tmp_path / "future.pt"
    torch.save(
        {
            "format_version": FORMAT_VERSION + 1,
            "model_config": model.config.to_dict(),
            "state_dict": model.state_dict(),
            "metadata": {},
        },
        path,
    )
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    message = assert_one_line_naming(info.value, path)
    assert "upgrade" in message.lower()
    assert str(FORMAT_VERSION + 1) in message


def test_missing_file(tmp_path):
    path = tmp_path / "nope.pt"
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert_one_line_naming(info.value, path)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.pt"
    path.write_bytes(b"")
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert_one_line_naming(info.value, path)


def test_truncated_file(tmp_path):
    good = tmp_path / "good.pt"
    save_checkpoint(make_model(seed=11), good, {})
    data = good.read_bytes()
    path = tmp_path / "truncated.pt"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert_one_line_naming(info.value, path)


@pytest.mark.parametrize("seed", [0, 1, 3, 4, 5])
def test_random_bytes(tmp_path, seed):
    path = tmp_path / "noise.pt"
    path.write_bytes(random.Random(seed).randbytes(4096))
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert isinstance(info.value, DeployccError)
    assert_one_line_naming(info.value, path)


@pytest.mark.parametrize(
    "content",
    [b"hello world\n", random.Random(2).randbytes(256), random.Random(20).randbytes(256)],
    ids=["text", "bytes-seed2", "bytes-seed20"],
)
def test_non_pytorch_bytes_that_look_like_pickle_opcodes(tmp_path, content):
    path = tmp_path / "notes.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert_one_line_naming(info.value, path)


class _RunsCode:
    """Unpickling this calls os.system: a stand-in for a malicious checkpoint."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {shlex.quote(self.marker)}",))


class _CustomObject:
    def __init__(self):
        self.value = 42


def test_pickled_code_is_refused_and_not_executed(tmp_path):
    marker = tmp_path / "code_ran"
    model = make_model(seed=12)
    path = tmp_path / "evil.pt"
    torch.save(
        {
            "format_version": FORMAT_VERSION,
            "model_config": model.config.to_dict(),
            "state_dict": model.state_dict(),
            "metadata": {"payload": _RunsCode(marker)},
        },
        path,
    )
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert_one_line_naming(info.value, path)
    assert not marker.exists()
    # control: the file really carries code that a full (unsafe) unpickle would run
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_pickled_code_as_whole_payload_is_not_executed(tmp_path):
    marker = tmp_path / "code_ran"
    path = tmp_path / "evil2.pt"
    torch.save(_RunsCode(marker), path)
    with pytest.raises(CheckpointError):
        load_checkpoint(path)
    assert not marker.exists()


def test_custom_class_instance_is_refused(tmp_path):
    model = make_model(seed=13)
    path = tmp_path / "custom.pt"
    torch.save(
        {
            "format_version": FORMAT_VERSION,
            "model_config": model.config.to_dict(),
            "state_dict": model.state_dict(),
            "metadata": {"obj": _CustomObject()},
        },
        path,
    )
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert_one_line_naming(info.value, path)


def test_non_dict_payload_is_refused(tmp_path):
    path = tmp_path / "tensor.pt"
    torch.save(torch.zeros(3), path)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert_one_line_naming(info.value, path)


def test_dict_without_weights_is_refused(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"optimizer": {"lr": 1.0}}, path)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert_one_line_naming(info.value, path)


def test_wrong_shapes_name_keys_and_shapes(tmp_path):
    tiny = make_model("tiny", seed=14)
    path = tmp_path / "mismatch.pt"
    torch.save(
        {
            "format_version": FORMAT_VERSION,
            "model_config": PRESET_CONFIGS["original"].to_dict(),  # claims the original architecture
            "state_dict": tiny.state_dict(),
            "metadata": {},
        },
        path,
    )
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    message = assert_one_line_naming(info.value, path)
    assert "embedding.weight" in message
    assert "(101, 64)" in message and "(101, 128)" in message
    assert "messages.2" in message  # the original preset's third interaction is missing


def test_unexpected_keys_are_named(tmp_path):
    model = make_model("tiny", seed=15)
    state = dict(model.state_dict())
    state["extra_head.weight"] = torch.zeros(2, 2)
    path = tmp_path / "extra.pt"
    torch.save({"format_version": 1, "model_config": model.config.to_dict(), "state_dict": state}, path)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert "extra_head.weight" in assert_one_line_naming(info.value, path)


# --- the schema ------------------------------------------------------------------------------------------------


def payload(model: StudentModel | None = None, **changes) -> dict:
    model = model or make_model(seed=16)
    out = {"format_version": FORMAT_VERSION, "model_config": model.config.to_dict(),
           "state_dict": dict(model.state_dict()), "metadata": {}}
    out.update(changes)
    return out


def refused(tmp_path, content, *fragments: str, name: str = "schema.pt") -> str:
    path = tmp_path / name
    torch.save(content, path)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    message = assert_one_line_naming(info.value, path)
    assert message.startswith(f"checkpoint {path}"), message
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    return message


@pytest.mark.parametrize("state, fragment", [
    ([1, 2], "holds no weights (its state_dict is a list)"),
    ({}, "holds no weights (its state_dict is a dict)"),
    (None, "holds no weights (its state_dict is a NoneType)"),
    ("weights", "holds no weights (its state_dict is a str)"),
])
def test_state_dict_must_be_a_non_empty_dict(tmp_path, state, fragment):
    refused(tmp_path, payload(state_dict=state), fragment)
    refused(tmp_path, {"model_state_dict": state, "config": {}}, fragment, name="old.pt")  # the predecessor too


@pytest.mark.parametrize("bad", ["nan", "inf", "-inf"])
def test_weights_must_be_finite(tmp_path, bad):
    state = dict(make_model(seed=17).state_dict())
    state["messages.1.filter.weight"] = state["messages.1.filter.weight"].clone()
    state["messages.1.filter.weight"][0, 0] = float(bad)
    refused(tmp_path, payload(state_dict=state), "weight 'messages.1.filter.weight' holds NaN or infinite values")
    old = {"model." + k: v for k, v in state.items()}
    refused(tmp_path, {"model_state_dict": old, "config": {}}, "weight 'model.messages.1.filter.weight' holds NaN",
            name="old.pt")


def test_weights_must_be_tensors(tmp_path):
    state = dict(make_model(seed=18).state_dict())
    state["scale"] = 2.0
    refused(tmp_path, payload(state_dict=state), "weight 'scale' is a float, not a tensor")
    state["scale"] = [2.0]
    refused(tmp_path, payload(state_dict=state), "weight 'scale' is a list, not a tensor")


@pytest.mark.parametrize("version", ["1", 1.0, True, None, [1]])
def test_format_version_must_be_an_integer(tmp_path, version):
    refused(tmp_path, payload(format_version=version), f"format_version must be an integer, got {version!r}")


@pytest.mark.parametrize("config", ["tiny", [64, 2], 5])
def test_model_config_must_be_a_dict(tmp_path, config):
    refused(tmp_path, payload(model_config=config), f"'model_config' must be a dict, got {type(config).__name__}")


@pytest.mark.parametrize("key, value", [
    ("hidden_dim", 64.5), ("hidden_dim", "64"), ("hidden_dim", True), ("hidden_dim", 0), ("hidden_dim", 5000),
    ("num_interactions", 0), ("num_interactions", 17), ("num_rbf", -1), ("num_rbf", None),
    ("cutoff", 0.1), ("cutoff", 25.0), ("cutoff", "5"), ("cutoff", float("nan")), ("cutoff", float("inf")),
    ("max_z", 119), ("max_z", 0), ("max_z", 100.5),
    ("periodic", "yes"), ("periodic", 1), ("periodic", None),
])
def test_model_config_values_must_be_in_their_domain(tmp_path, key, value):
    model = make_model(seed=19)
    config = {**model.config.to_dict(), key: value}
    kind, low, high = CONFIG_DOMAIN[key]
    refused(tmp_path, payload(model, model_config=config),
            f"model_config.{key} = {value!r} is not a {kind.__name__} in {low:g}..{high:g}")
    refused(tmp_path, {"model_state_dict": dict(model.state_dict()), "config": {key: value}},
            f"model_config.{key} = {value!r}", name="old.pt")


def test_model_config_values_that_are_accepted(tmp_path):
    model = make_model(seed=20)
    config = {**model.config.to_dict(), "hidden_dim": 64.0, "cutoff": 5, "lr": "ignored", "notes": [1, 2]}
    torch.save(payload(model, model_config=config), tmp_path / "ok.pt")
    loaded = load_checkpoint(tmp_path / "ok.pt")
    assert loaded.config == model.config and isinstance(loaded.config.hidden_dim, int)
    assert isinstance(loaded.config.cutoff, float)
    assert_same_state(loaded.model, model)


@pytest.mark.parametrize("metadata", [[1], "notes", 3])
def test_metadata_must_be_a_dict(tmp_path, metadata):
    refused(tmp_path, payload(metadata=metadata), f"'metadata' must be a dict, got {type(metadata).__name__}")


@pytest.mark.parametrize("elements", [[1, "C"], [1, True], [0, 1], [1, 119], [1.0, 6.0], "HCNO", {"H": 1}])
def test_metadata_elements_must_be_atomic_numbers(tmp_path, elements):
    refused(tmp_path, payload(metadata={"elements": elements}),
            "metadata.elements must be a list of atomic numbers 1..118, got")


def test_metadata_elements_are_the_training_elements(tmp_path):
    model = make_model(seed=21)
    torch.save(payload(model, metadata={"elements": (8, 1, 6)}), tmp_path / "a.pt")
    assert load_checkpoint(tmp_path / "a.pt").elements == [1, 6, 8]
    save_checkpoint(model, tmp_path / "b.pt", {})  # no record: the nonzero element references
    assert load_checkpoint(tmp_path / "b.pt").elements == [int(z) for z in torch.nonzero(model.element_ref[1:]) + 1]
    with torch.no_grad():
        model.element_ref.zero_()
    save_checkpoint(model, tmp_path / "c.pt", {"elements": []})
    assert load_checkpoint(tmp_path / "c.pt").elements is None  # nothing says: unknown
