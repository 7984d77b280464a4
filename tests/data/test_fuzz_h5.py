"""Fuzzing read_h5: a valid small HDF5 file, made in code, with random corruptions (datasets dropped, replaced by
groups or scalars, wrong dtypes, wrong shapes, truncated arrays, random offsets, NaN/inf labels, the file's
bytes truncated or zeroed).  read_h5 must either return structures that satisfy the schema or raise a
UserInputError whose message is one line naming the file; never any other exception."""

from __future__ import annotations

import tempfile
from pathlib import Path

import h5py
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deploycc.data.schema import SCHEMA, SPLITS, Structures, read_h5
from deploycc.errors import UserInputError

SIZES = (2, 4, 1, 3)
NAMES = [f.name for f in SCHEMA]


def valid_datasets() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(3)
    atoms, n = sum(SIZES), len(SIZES)
    return {
        "atomic_numbers": rng.choice([1, 6, 8], size=atoms).astype(np.int64),
        "positions": rng.uniform(-3, 3, (atoms, 3)),
        "offsets": np.concatenate([[0], np.cumsum(SIZES)]).astype(np.int64),
        "forces": rng.normal(size=(atoms, 3)),
        "energies": rng.normal(size=n),
        "cells": np.zeros((n, 3, 3)),
        "pbc": np.zeros((n, 3), dtype=bool),
        "group": np.arange(n, dtype=np.int64),
        "split/train": np.array([0, 1]), "split/val": np.array([2]), "split/test": np.array([3]),
    }


def _wrong_dtype(a: np.ndarray, choice: int) -> np.ndarray:
    if a.dtype.kind not in "biuf":
        return a  # strings or complex already
    if choice == 0:
        return np.array([b"x"] * max(1, a.size)).reshape(a.shape) if a.size else np.array([b"x"])
    if choice == 1:
        return a.astype(np.float64) + 0.5  # fractional
    if choice == 2:
        return a.astype(np.complex128)
    if choice == 3:
        return a.astype(bool)
    if choice == 4:
        with np.errstate(over="ignore"):
            return (a.astype(np.float64) * 1e30).astype(np.float32)  # overflows to inf
    return a.astype(np.uint64) + np.uint64(2**63)  # beyond int64


def _wrong_shape(a: np.ndarray, choice: int) -> np.ndarray:
    if choice == 0:
        return a.reshape(-1)
    if choice == 1:
        return a[..., None]
    if choice == 2:
        return np.concatenate([a, a[:1]]) if len(a) else np.zeros((1,) + a.shape[1:], a.dtype)
    if choice == 3:
        return a.reshape(-1)[:, None].repeat(2, axis=1)
    return a.T.copy()


# one corruption: (kind, dataset name, an integer or a list that parametrises it)
corruption = st.one_of(
    st.tuples(st.just("drop"), st.sampled_from(NAMES), st.just(0)),
    st.tuples(st.just("group"), st.sampled_from(NAMES + ["split"]), st.just(0)),
    st.tuples(st.just("scalar"), st.sampled_from(NAMES), st.integers(-3, 30)),
    st.tuples(st.just("dtype"), st.sampled_from(NAMES), st.integers(0, 5)),
    st.tuples(st.just("shape"), st.sampled_from(NAMES), st.integers(0, 4)),
    st.tuples(st.just("truncate"), st.sampled_from(NAMES), st.integers(0, 12)),
    st.tuples(st.just("offsets"), st.just("offsets"), st.lists(st.integers(-3, 15), min_size=0, max_size=7)),
    st.tuples(st.just("value"), st.sampled_from(NAMES), st.tuples(st.integers(0, 40),
                                                                st.sampled_from([np.nan, np.inf, -np.inf, 0, -1,
                                                                                 119, 99, 1e9, 2.5])).map(list)),
)
# the file's bytes: kept (most examples, so that the schema checks are reached), cut at a fraction of the
# length, or zeroed from a fraction of the length for a number of bytes
file_damage = st.tuples(st.sampled_from(["keep", "keep", "keep", "cut", "zero"]), st.floats(0.0, 0.999),
                        st.integers(1, 512))


def corrupt(datasets: dict, kind: str, name: str, arg) -> None:
    a = datasets.get(name)
    if kind == "drop":
        datasets.pop(name, None)
    elif kind == "group":
        if name == "split":
            for s in SPLITS:
                datasets.pop(f"split/{s}", None)
        datasets[name] = None
    elif kind == "scalar":
        datasets[name] = np.int64(arg)
    elif a is None or np.ndim(a) == 0:
        return  # already dropped, a group or a scalar
    elif kind == "dtype":
        datasets[name] = _wrong_dtype(np.asarray(a), arg)
    elif kind == "shape":
        datasets[name] = _wrong_shape(np.asarray(a), arg)
    elif kind == "truncate":
        datasets[name] = np.asarray(a)[: arg % (len(a) + 1)]
    elif kind == "offsets":
        datasets[name] = np.asarray(arg, dtype=np.int64)
    elif kind == "value" and np.size(a) and np.asarray(a).dtype.kind in "biuf":
        index, value = arg
        whole = bool(np.isfinite(value)) and value == int(value) and np.asarray(a).dtype.kind in "ib"
        flat = np.array(a, dtype=None if whole else np.float64).reshape(-1)  # a copy; floats for NaN, 2.5
        flat[index % flat.size] = value
        datasets[name] = flat.reshape(np.shape(a))


def write(path: Path, datasets: dict) -> None:
    with h5py.File(path, "w") as h5:
        for key, value in datasets.items():
            if value is None:
                if key not in h5:
                    h5.create_group(key)
            elif key.split("/")[0] in h5 and not isinstance(h5[key.split("/")[0]], h5py.Group):
                continue  # 'split' made a group above is fine; a dataset 'split' cannot hold children
            else:
                h5.create_dataset(key, data=value)
        h5.attrs["format_version"] = 1


def damage(path: Path, how) -> None:
    kind, fraction, count = how
    if kind == "keep":
        return
    data = bytearray(path.read_bytes())
    start = int(fraction * len(data))
    if kind == "cut":
        data = data[:start]
    else:
        data[start : start + count] = bytes(len(data[start : start + count]))
    path.write_bytes(bytes(data))


def assert_valid(data: Structures) -> None:
    """What every reader of a Structures may rely on."""
    n = len(data)
    assert n >= 1 and len(data.positions) == n
    for k in range(n):
        z, r = data.numbers[k], data.positions[k]
        assert z.dtype == np.int64 and z.ndim == 1 and ((z >= 1) & (z <= 118)).all()
        assert r.dtype == np.float64 and r.shape == (len(z), 3) and np.isfinite(r).all()
        if data.forces is not None:
            assert data.forces[k].shape == (len(z), 3) and np.isfinite(data.forces[k]).all()
    if data.energies is not None:
        assert data.energies.shape == (n,) and np.isfinite(data.energies).all()
    if data.cells is not None:
        assert data.cells.shape == (n, 3, 3) and np.isfinite(data.cells).all()
    if data.pbc is not None:
        assert data.pbc.shape == (n, 3) and data.pbc.dtype == bool
    if data.group is not None:
        assert data.group.shape == (n,)
    for idx in data.splits.values():
        assert idx.ndim == 1 and ((idx >= 0) & (idx < n)).all()
        data.subset(idx)  # indexing by a split works


@settings(derandomize=True, database=None, max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(corruptions=st.lists(corruption, min_size=0, max_size=3), how=file_damage)
def test_read_h5_returns_valid_structures_or_one_line_user_error(corruptions, how):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "fuzz.h5"
        datasets = valid_datasets()
        for kind, name, arg in corruptions:
            corrupt(datasets, kind, name, arg)
        write(path, datasets)
        damage(path, how)
        try:
            data = read_h5(path)
        except UserInputError as exc:
            message = str(exc)
            assert "\n" not in message and str(path) in message, message
            return
        assert_valid(data)


def test_the_uncorrupted_file_is_valid(tmp_path):
    path = tmp_path / "ok.h5"
    write(path, valid_datasets())
    data = read_h5(path)
    assert_valid(data)
    assert [len(z) for z in data.numbers] == list(SIZES) and sorted(data.splits) == sorted(SPLITS)
