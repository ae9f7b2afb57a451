"""Every requested backend against the neutral description, and against itself."""

import inspect
import itertools

import numpy as np
import pytest

from conftest import forward
from nin import book, spec

SIZES = [67, 96, 101, 224]  # the minimum, a small one, an odd one, the book's
MODELS = list(itertools.product([1, 3], [10, 100]))  # (in_channels, num_classes)
NATIVE_LAYOUT = {"mxnet": "NCHW", "torch": "NCHW", "tf": "NHWC", "jax": "NHWC", "paddle": "NCHW"}


def test_requested_backend_imports(backend_name, backend):
    assert backend.__name__ == f"nin.{backend_name}"


@pytest.mark.parametrize("in_channels, num_classes", MODELS)
def test_layers_match_the_description(backend_name, backend, in_channels, num_classes):
    net = backend.NiN(num_classes=num_classes, in_channels=in_channels)
    for size in SIZES:
        input_shape = (2, in_channels, size, size + 1)
        rows = backend.summary(net, input_shape)
        expected = spec.layer_table(input_shape, num_classes)
        assert len(rows) == len(expected) == 10
        for row, ref in zip(rows, expected, strict=True):
            assert (row["kind"], tuple(row["shape"]), row["params"]) == (ref.kind, ref.shape, ref.params)
            assert tuple(row["native_shape"]) == _native(ref.shape, NATIVE_LAYOUT[backend_name])
        assert sum(r["params"] for r in rows) == spec.total_params(in_channels, num_classes)
    # The summary's column sums to the framework's own count of the whole model.
    assert book.module(backend_name).num_params(net) == spec.total_params(in_channels, num_classes)


VARIANTS = [{"num_1x1": 1}, {"num_1x1": 0}, {"head": "gradual"}, {"num_1x1": 1, "head": "gradual"}]


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: "-".join(f"{k}={v}" for k, v in v.items()))
def test_variants_match_the_description(backend_name, backend, variant):
    net = backend.NiN(num_classes=10, in_channels=1, **variant)
    for size in (67, 224):
        rows = backend.summary(net, (1, 1, size, size))
        expected = spec.layer_table((1, 1, size, size), 10, **variant)
        assert [(r["kind"], tuple(r["shape"]), r["params"]) for r in rows] == [
            (r.kind, r.shape, r.params) for r in expected]
    assert book.module(backend_name).num_params(net) == spec.total_params(1, 10, **variant)


def test_builder_defaults_are_the_books(backend):
    params = inspect.signature(backend.NiN).parameters
    assert {k: params[k].default for k in ("num_classes", "in_channels", "dropout", "num_1x1", "head")} == {
        "num_classes": spec.NUM_CLASSES, "in_channels": spec.IN_CHANNELS, "dropout": spec.DROPOUT,
        "num_1x1": 2, "head": "one-step"}
    net = backend.NiN(dropout=0.25)
    dropouts = [r for r in backend.summary(net, (1, 1, 67, 67)) if r["kind"] == "dropout"]
    assert len(dropouts) == 1


def test_every_parameter_gets_a_gradient(backend_name, backend):
    net = backend.NiN(num_classes=10, in_channels=1)
    backend.init_weights(net, "xavier", 0)
    rng = np.random.default_rng(0)
    X = rng.uniform(size=(4, 1, 96, 96)).astype(np.float32)
    y = rng.integers(0, 10, size=4)
    grads = book.module(backend_name).gradients(net, X, y)
    assert len(grads) == 4 * 3 * 2  # four blocks of three convolutions, each a weight and a bias
    for name, grad in grads.items():
        assert grad is not None, f"{name} got no gradient"
        assert np.isfinite(grad).all(), f"{name} has a non-finite gradient"
        assert np.abs(grad).sum() > 0, f"{name} has an all-zero gradient"


@pytest.mark.parametrize("size", [28, 66])
def test_model_refuses_too_small_images_before_the_framework(backend_name, backend, size):
    net = backend.NiN()
    X = np.zeros((1, 1, size, size), dtype=np.float32)
    with pytest.raises(ValueError, match=f"{size}x{size} are too small.*67x67.*resize=224"):
        forward(backend, net, X)
    with pytest.raises(ValueError, match="too small"):
        backend.summary(net, (1, 1, size, size))


def test_model_refuses_other_channel_counts(backend_name, backend):
    net = backend.NiN(in_channels=1)
    with pytest.raises(ValueError, match="1 channel.*got 3.*in_channels=3"):
        forward(backend, net, np.zeros((1, 3, 96, 96), dtype=np.float32))


@pytest.mark.parametrize("kwargs, match", [
    ({"num_classes": 0}, "num_classes must be a positive integer"),
    ({"in_channels": -1}, "in_channels must be a positive integer"),
    ({"dropout": 2}, "dropout must be in"),
])
def test_builder_refuses_nonsense(backend, kwargs, match):
    with pytest.raises(ValueError, match=match):
        backend.NiN(**kwargs)


def test_logits_are_the_flattened_last_block(backend_name, backend):
    net = backend.NiN(num_classes=7, in_channels=3)
    X = np.random.default_rng(1).uniform(size=(3, 3, 80, 80)).astype(np.float32)
    logits = forward(backend, net, X)
    assert logits.shape == (3, 7) and logits.dtype == np.float32
    assert (logits >= 0).all()  # the last block ends with ReLU, as in the book


def _native(shape, layout):
    if layout == "NHWC" and len(shape) == 4:
        n, c, h, w = shape
        return (n, h, w, c)
    return tuple(shape)


