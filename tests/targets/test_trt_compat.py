"""TensorRT engine compatibility and availability, on CPU (no TensorRT needed)."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from deploycc.errors import ArtifactError, UserInputError
from deploycc.targets.settings import Profile, TargetSettings, load_settings
from deploycc.targets.trt import TrtTarget, check_engine_compatibility, profiles

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


def test_engine_info_without_version_is_refused() -> None:
    recorded = {k: v for k, v in BUILT.items() if k != "tensorrt"}
    with pytest.raises(ArtifactError, match="TensorRT"):
        check_engine_compatibility(recorded, BUILT)


@pytest.mark.skipif(_tensorrt_importable(), reason="tensorrt is installed here")
def test_availability_names_the_missing_package() -> None:
    reason = TrtTarget().availability(load_settings("trt"))
    assert reason == ("TensorRT is not installed: pip install 'deploycc[trt]' (NVIDIA's index) "
                      "on a machine with an NVIDIA GPU")


@pytest.mark.skipif(not _tensorrt_importable() or torch.cuda.is_available(), reason="needs TensorRT and no GPU")
def test_availability_without_gpu() -> None:
    assert "CUDA GPU" in TrtTarget().availability(load_settings("trt"))


def test_profiles_from_settings_and_extra() -> None:
    settings = TargetSettings(target="trt", device="cuda", batch=Profile(1, 8, 64), atoms=Profile(1, 16, 32),
                              extra={"profiles": [{"batch": [1, 2, 4], "atoms": [33, 96, 128]}]})
    assert profiles(settings) == [(Profile(1, 8, 64), Profile(1, 16, 32)), (Profile(1, 2, 4), Profile(33, 96, 128))]
    with pytest.raises(UserInputError, match="extra.profiles"):
        profiles(TargetSettings(target="trt", extra={"profiles": [{"batch": [1, 2, 4]}]}))
