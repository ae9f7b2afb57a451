"""Tiny, valid Fashion-MNIST IDX files written by the tests (no test reads the network)."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from nin import data


def idx(array: np.ndarray, magic: int | None = None) -> bytes:
    """Valid IDX bytes for a uint8 array (3-d images or 1-d labels), unless ``magic`` says otherwise."""
    magic = {3: 0x803, 1: 0x801}[array.ndim] if magic is None else magic
    dims = b"".join(d.to_bytes(4, "big") for d in array.shape)
    return magic.to_bytes(4, "big") + dims + array.astype(np.uint8).tobytes()


def images(n: int, seed: int = 0, size: tuple[int, int] = (28, 28)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, *size), dtype=np.uint8)


def labels(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 10, n, dtype=np.uint8)


def write(path: Path, payload: bytes, gz: bool) -> Path:
    path = path.with_name(path.name + ".gz") if gz else path
    path.write_bytes(gzip.compress(payload) if gz else payload)
    return path


def make_set(directory: Path, gz: bool = True, n_train: int = 6, n_test: int = 4, seed: int = 0) -> dict:
    """The four files of a tiny valid Fashion-MNIST in ``directory``; returns the arrays by file name."""
    directory.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for (x_name, y_name), n in zip(data.FILES.values(), (n_train, n_test), strict=True):
        arrays[x_name], arrays[y_name] = images(n, seed + n), labels(n, seed + n)
        for name in (x_name, y_name):
            write(directory / name, idx(arrays[name]), gz)
    return arrays


def make_class_set(directory: Path, n_train: int, n_test: int, seed: int = 0) -> dict:
    """Like :func:`make_set`, but each image is a grating whose orientation and frequency are its
    class's (random phase, some noise), so that models tell the classes apart quickly."""
    rng = np.random.default_rng(seed)
    i, j = np.mgrid[0:28, 0:28]
    directory.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for (x_name, y_name), n in zip(data.FILES.values(), (n_train, n_test), strict=True):
        y = rng.integers(0, 10, n).astype(np.uint8)
        angle, period = np.pi * (y % 5) / 5, np.where(y < 5, 4.0, 9.0)
        phase = rng.uniform(0, 2 * np.pi, n)
        wave = np.sin(2 * np.pi * (np.cos(angle)[:, None, None] * i + np.sin(angle)[:, None, None] * j)
                      / period[:, None, None] + phase[:, None, None])
        x = np.clip(127.5 + 100 * wave + rng.normal(0, 20, (n, 28, 28)), 0, 255).astype(np.uint8)
        arrays[x_name], arrays[y_name] = x, y
        for name in (x_name, y_name):
            write(directory / name, idx(arrays[name]), gz=True)
    return arrays


def check_loaded(loaded, arrays: dict) -> None:
    """``loaded`` (``nin.data.load_fashion_mnist``'s) holds the arrays ``make_set`` wrote, as uint8."""
    from nin import data

    (x_train, y_train), (x_test, y_test) = loaded
    assert x_train.shape == (6, 28, 28) and y_train.shape == (6,)
    assert x_test.shape == (4, 28, 28) and y_test.shape == (4,)
    for got, name in zip((x_train, y_train, x_test, y_test), data.NAMES, strict=True):
        assert got.dtype == np.uint8
        np.testing.assert_array_equal(got, arrays[name])
