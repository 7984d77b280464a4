"""The TensorRT target's helpers that need no TensorRT (issue 18): the persistent timing cache (one file per
TensorRT version, GPU and compute capability under the user's cache folder, replaced atomically), 256-byte
aligned input buffers, the builder flags that are cleared (TF32), and the choice of optimization profile.
The TensorRT side of each (cache reuse, flags on a real builder config, misaligned inputs through an
engine) is asserted in test_trt_runtime.py where TensorRT and a GPU exist."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
import torch

from deploycc.errors import UserInputError
from deploycc.targets.trt import (ALIGNMENT, CLEARED_FLAGS, TrtRunner, aligned, cache_root, read_timing_cache,
                                  timing_cache_file, write_timing_cache)

ENV = {"tensorrt": "10.3.0", "gpu": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0"}


# --- timing cache --------------------------------------------------------------------------------------------

def test_cache_root_prefers_deploycc_cache_then_xdg_then_home() -> None:
    assert cache_root({"DEPLOYCC_CACHE": "/c/deploycc-cache", "XDG_CACHE_HOME": "/x"}) == Path("/c/deploycc-cache")
    assert cache_root({"XDG_CACHE_HOME": "/x/cache"}) == Path("/x/cache/deploycc")
    assert cache_root({"DEPLOYCC_CACHE": "", "XDG_CACHE_HOME": "/x/cache"}) == Path("/x/cache/deploycc")
    assert cache_root({}) == Path.home() / ".cache" / "deploycc"


def test_cache_root_reads_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("DEPLOYCC_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root() == tmp_path / "xdg" / "deploycc"
    monkeypatch.setenv("DEPLOYCC_CACHE", str(tmp_path / "mine"))
    assert cache_root() == tmp_path / "mine"


def test_timing_cache_is_one_file_per_tensorrt_gpu_and_capability(monkeypatch: pytest.MonkeyPatch,
                                                                   tmp_path: Path) -> None:
    monkeypatch.setenv("DEPLOYCC_CACHE", str(tmp_path))
    path = timing_cache_file(ENV)
    assert path.parent == tmp_path / "trt" and path.suffix == ".cache"
    assert "10.3.0" in path.name and "H100" in path.name and "9.0" in path.name
    assert timing_cache_file(dict(ENV)) == path  # deterministic
    others = [timing_cache_file({**ENV, "tensorrt": "10.4.0"}),
              timing_cache_file({**ENV, "gpu": "NVIDIA A100-SXM4-80GB"}),
              timing_cache_file({**ENV, "compute_capability": "8.0"})]
    assert len({path, *others}) == 4  # each part of the setup has its own cache
    assert timing_cache_file(ENV, tmp_path / "elsewhere") == tmp_path / "elsewhere" / "trt" / path.name


def test_timing_cache_name_stays_inside_its_folder(tmp_path: Path) -> None:
    for gpu in ("../../etc/passwd", "NVIDIA A/B\\C", "GPU: *?<>|\n"):
        path = timing_cache_file({**ENV, "gpu": gpu}, tmp_path)
        assert path.parent == tmp_path / "trt" and os.sep not in path.name and "\n" not in path.name
        assert path.name != ".." and not path.name.startswith("..")


def test_timing_cache_round_trips(tmp_path: Path) -> None:
    """What a first build reads (nothing), writes (its tactics), and what the second build then reads."""
    path = timing_cache_file(ENV, tmp_path / "cache")
    assert read_timing_cache(path) == b""  # first build: no cache yet (and no folder)
    first = os.urandom(4096)
    write_timing_cache(path, first)
    assert read_timing_cache(path) == first  # second build: what the first one wrote
    second = first + os.urandom(100)
    write_timing_cache(path, second)
    assert read_timing_cache(path) == second
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no temporary files left behind


def test_a_failed_write_keeps_the_previous_cache(tmp_path: Path) -> None:
    path = tmp_path / "trt" / "timing.cache"
    write_timing_cache(path, b"tactics of the previous build")
    with pytest.raises(TypeError):
        write_timing_cache(path, object())  # fails while writing the temporary file
    assert read_timing_cache(path) == b"tactics of the previous build"
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]


def test_concurrent_readers_see_whole_caches_only(tmp_path: Path) -> None:
    """A build reading while another writes gets either the old or the new file, never a mixture."""
    path = tmp_path / "trt" / "timing.cache"
    versions = [bytes([k]) * (1 << 20) for k in (1, 2)]
    write_timing_cache(path, versions[0])
    stop = threading.Event()

    def writer() -> None:
        k = 0
        while not stop.is_set():
            k ^= 1
            write_timing_cache(path, versions[k])

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        reads = [read_timing_cache(path) for _ in range(150)]
    finally:
        stop.set()
        thread.join()
    assert all(data in versions for data in reads)
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]


# --- aligned input buffers ----------------------------------------------------------------------------------

DEVICES = ["cpu", pytest.param("cuda", marks=[pytest.mark.gpu, pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA GPU")])]


def misaligned(shape: tuple[int, ...], dtype: torch.dtype, device: str) -> torch.Tensor:
    """A contiguous view of `shape` whose address is not a multiple of ALIGNMENT."""
    numel = 1
    for n in shape:
        numel *= n
    base = torch.arange(numel + 64, device=device).to(dtype)
    for k in range(1, 64):
        view = base[k : k + numel].view(shape)
        if view.data_ptr() % ALIGNMENT:
            return view
    raise AssertionError("could not make a misaligned view")


def aligned_view(shape: tuple[int, ...], dtype: torch.dtype, device: str) -> torch.Tensor:
    numel = 1
    for n in shape:
        numel *= n
    element = torch.empty((), dtype=dtype).element_size()
    base = torch.arange(numel + ALIGNMENT, device=device).to(dtype)
    offset = (-base.data_ptr() % ALIGNMENT) // element
    view = base[offset : offset + numel].view(shape)
    assert view.data_ptr() % ALIGNMENT == 0
    return view


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(("shape", "dtype"), [((13,), torch.int64), ((13, 7, 3), torch.float32),
                                              ((13, 7), torch.int64), ((5, 3, 3), torch.float16),
                                              ((9,), torch.bool)])
def test_misaligned_views_get_an_aligned_contiguous_copy(device: str, shape, dtype) -> None:
    view = misaligned(shape, dtype, device)
    assert view.is_contiguous() and view.data_ptr() % ALIGNMENT != 0
    before = view.clone()
    out = aligned(view)
    assert out.data_ptr() % ALIGNMENT == 0 and out.is_contiguous()
    assert out.shape == view.shape and out.dtype == view.dtype and out.device == view.device
    assert torch.equal(out, view)
    out.fill_(0)
    assert torch.equal(view, before)  # a copy, not an alias of the caller's tensor


@pytest.mark.parametrize("device", DEVICES)
def test_non_contiguous_tensors_get_a_contiguous_copy(device: str) -> None:
    source = aligned_view((6, 10), torch.float32, device)
    transposed = source.t()
    assert not transposed.is_contiguous() and transposed.data_ptr() % ALIGNMENT == 0
    out = aligned(transposed)
    assert out.is_contiguous() and out.data_ptr() % ALIGNMENT == 0 and torch.equal(out, transposed)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.int64, torch.float32, torch.float16])
def test_aligned_tensors_are_returned_as_they_are(device: str, dtype) -> None:
    view = aligned_view((11, 7), dtype, device)
    assert aligned(view) is view


def test_other_alignments() -> None:
    view = aligned_view((40,), torch.float32, "cpu")
    shifted = view[16:32]  # 64 bytes past a 256-byte boundary
    assert shifted.data_ptr() % 64 == 0 and shifted.data_ptr() % 256 != 0
    assert aligned(shifted, 64) is shifted
    out = aligned(shifted, 1024)
    assert out.data_ptr() % 1024 == 0 and torch.equal(out, shifted)


# --- builder flags and profile choice -------------------------------------------------------------------------

def test_tf32_is_cleared() -> None:
    """TF32 is on by default in TensorRT and would round float32 products to 10-bit mantissas."""
    assert "TF32" in CLEARED_FLAGS
    assert all(isinstance(flag, str) and flag.isupper() for flag in CLEARED_FLAGS)


def runner_with_ranges(ranges) -> TrtRunner:
    """The profile choice is a function of the engine's profile ranges alone (no engine needed)."""
    runner = TrtRunner.__new__(TrtRunner)
    runner.ranges = ranges
    return runner


def test_the_tightest_fitting_profile_is_chosen() -> None:
    runner = runner_with_ranges([((1, 1024), (1, 48)), ((1, 64), (1, 128)), ((1025, 65536), (1, 48))])
    assert runner._pick(10, 20) == 1  # fits all three; profile 1 is the smallest
    assert runner._pick(100, 20) == 0
    assert runner._pick(64, 128) == 1
    assert runner._pick(2000, 48) == 2
    assert runner._pick(1, 1) == 1
    with pytest.raises(UserInputError, match="100 atoms with 100 neighbour slots exceed every profile") as info:
        runner._pick(100, 100)
    assert "\n" not in str(info.value)
    with pytest.raises(UserInputError):
        runner._pick(70000, 1)
