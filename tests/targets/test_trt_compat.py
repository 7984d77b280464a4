"""TensorRT engine compatibility, availability, settings and optimization profiles, on CPU (no TensorRT
needed)."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from deploycc.errors import ArtifactError, UserInputError
from deploycc.targets.onnx_fp16 import FP16_TOLERANCES
from deploycc.targets.settings import Profile, TargetSettings
from deploycc.targets.trt import TrtTarget, check_engine_compatibility, input_shapes, profiles

BUILT = {"tensorrt": "10.3.0", "gpu": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0"}


def _tensorrt_importable() -> bool:
    if importlib.util.find_spec("tensorrt") is None:
        return False
    try:
        import tensorrt  # noqa: F401
    except Exception:  # noqa: BLE001 - a broken install counts as missing
        return False
    return True


def test_equal_setup_is_accepted() -> None:
    check_engine_compatibility(BUILT, dict(BUILT))
    check_engine_compatibility({**BUILT, "compute_capability": 9.0}, BUILT)  # compared as text


@pytest.mark.parametrize(("key", "value", "label"), [
    ("tensorrt", "10.4.0", "TensorRT 10.3.0 != 10.4.0"),
    ("gpu", "NVIDIA A100-SXM4-80GB", "GPU NVIDIA H100 80GB HBM3 != NVIDIA A100-SXM4-80GB"),
    ("compute_capability", "8.0", "compute capability 9.0 != 8.0"),
])
def test_different_setup_is_refused(key: str, value: str, label: str) -> None:
    with pytest.raises(ArtifactError) as info:
        check_engine_compatibility(BUILT, {**BUILT, key: value})
    message = str(info.value)
    assert label in message and "rebuild" in message and "\n" not in message


def test_every_difference_is_named() -> None:
    with pytest.raises(ArtifactError) as info:
        check_engine_compatibility(BUILT, {"tensorrt": "10.4.0", "gpu": "NVIDIA L4", "compute_capability": "8.9"})
    message = str(info.value)
    assert "TensorRT 10.3.0 != 10.4.0" in message and "GPU" in message and "compute capability 9.0 != 8.9" in message


@pytest.mark.parametrize(("missing", "label"), [("tensorrt", "TensorRT"), ("gpu", "GPU"),
                                                ("compute_capability", "compute capability")])
def test_engine_info_without_a_key_is_refused(missing: str, label: str) -> None:
    recorded = {k: v for k, v in BUILT.items() if k != missing}
    with pytest.raises(ArtifactError, match=f"lacks the {label}"):
        check_engine_compatibility(recorded, BUILT)


@pytest.mark.skipif(_tensorrt_importable(), reason="tensorrt is installed here")
def test_availability_names_the_missing_package() -> None:
    target = TrtTarget()
    reason = target.availability(target.settings())
    assert reason == ("TensorRT is not installed: pip install 'deploycc[trt]' (NVIDIA's index) "
                      "on a machine with an NVIDIA GPU")


@pytest.mark.skipif(not _tensorrt_importable() or torch.cuda.is_available(), reason="needs TensorRT and no GPU")
def test_availability_without_gpu() -> None:
    target = TrtTarget()
    assert "CUDA GPU" in target.availability(target.settings())


def test_settings_are_its_own() -> None:
    settings = TrtTarget().settings()
    assert settings.target == "trt" and settings.device == "cuda" and settings.precision == "fp16-mixed"
    assert settings.tolerances == FP16_TOLERANCES  # built from the onnx-fp16 graph
    assert settings.opset <= 20  # the TensorRT ONNX parser's limit
    assert settings.atoms.max >= 1 << 16 and settings.neighbours.max >= 128


def test_profiles_from_settings_and_extra() -> None:
    settings = TargetSettings(target="trt", device="cuda", atoms=Profile(1, 64, 4096), neighbours=Profile(1, 16, 32),
                              extra={"profiles": [{"atoms": [1, 256, 1024], "neighbours": [33, 48, 96]},
                                                  {"neighbours": (1, 8, 8), "atoms": (4097, 8192, 65536)}]})
    assert profiles(settings) == [(Profile(1, 64, 4096), Profile(1, 16, 32)),
                                  (Profile(1, 256, 1024), Profile(33, 48, 96)),
                                  (Profile(4097, 8192, 65536), Profile(1, 8, 8))]
    assert profiles(TargetSettings(target="trt", atoms=Profile(2, 3, 4))) == [(Profile(2, 3, 4), Profile(1, 48, 512))]


@pytest.mark.parametrize("bad", [
    [{"atoms": [1, 2, 4]}],  # no neighbours
    [{"neighbours": [1, 2, 4]}],  # no atoms
    [{"batch": [1, 2, 4], "atoms": [33, 96, 128]}],  # the old dense layout's profile
    [{"batch": [1, 2, 4], "atoms": [1, 2, 4], "neighbours": [1, 2, 4]}],  # an unknown key
    [{"atoms": [1, 2], "neighbours": [1, 2, 4]}],  # two numbers
    [{"atoms": [4, 2, 1], "neighbours": [1, 2, 4]}],  # min > max
    [{"atoms": [0, 2, 4], "neighbours": [1, 2, 4]}],  # min 0
    [{"atoms": [1.5, 2, 4], "neighbours": [1, 2, 4]}],  # not integers
    [{"atoms": 8, "neighbours": [1, 2, 4]}],  # not a list
    [[1, 2, 4]],  # not a table
    {"atoms": [1, 2, 4], "neighbours": [1, 2, 4]},  # [extra.profiles] instead of [[extra.profiles]]
    8,
])
def test_bad_extra_profiles_are_one_line_user_errors(bad) -> None:
    with pytest.raises(UserInputError, match="extra.profiles") as info:
        profiles(TargetSettings(target="trt", extra={"profiles": bad}))
    assert "\n" not in str(info.value)


def test_profiles_from_an_override_file(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`[[extra.profiles]]` tables of $DEPLOYCC_HOME/targets/trt.toml reach the engine's profiles."""
    (tmp_path / "targets").mkdir()
    (tmp_path / "targets" / "trt.toml").write_text(
        "[atoms]\nmax = 2048\n\n[[extra.profiles]]\natoms = [2049, 4096, 8192]\nneighbours = [1, 24, 32]\n")
    monkeypatch.setenv("DEPLOYCC_HOME", str(tmp_path))
    settings = TrtTarget().settings()
    assert profiles(settings) == [(Profile(1, 1024, 2048), Profile(1, 48, 128)),
                                  (Profile(2049, 4096, 8192), Profile(1, 24, 32))]
    assert settings.extra["workspace_gib"] == 8  # defaults kept beside the override
    (tmp_path / "targets" / "trt.toml").write_text("[[extra.profiles]]\natoms = [1, 2]\nneighbours = [1, 2, 3]\n")
    with pytest.raises(UserInputError, match="extra.profiles"):
        profiles(TrtTarget().settings())


def test_input_shapes_follow_the_layout() -> None:
    assert input_shapes(7, 5) == {"numbers": (7,), "vectors": (7, 5, 3), "neighbours": (7, 5), "reverse": (7, 5)}
