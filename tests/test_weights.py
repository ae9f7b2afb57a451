"""Each backend's weights files: canonical, round-trip exact, and refused when they do not fit."""

from __future__ import annotations

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from conftest import forward
from fakedata import make_set
from nin import runs, spec, weights


def _net(backend, backend_name, seed=0, **kwargs):
    """A model with seeded Kaiming weights (so that its logits are far from zero)."""
    net = backend.NiN(**kwargs)
    backend.init_weights(net, "kaiming", seed)
    return net


def test_round_trip_is_byte_identical(backend_name, backend, tmp_path):
    net = _net(backend, backend_name)
    backend.save_weights(net, tmp_path / "a.safetensors")
    other = _net(backend, backend_name, seed=1)
    backend.load_weights(other, tmp_path / "a.safetensors")
    backend.save_weights(other, tmp_path / "b.safetensors")
    a, b = load_file(tmp_path / "a.safetensors"), load_file(tmp_path / "b.safetensors")
    assert {name: t.shape for name, t in a.items()} == spec.weight_shapes()
    assert all(t.dtype == np.float32 for t in a.values())
    assert a.keys() == b.keys() and all(a[name].tobytes() == b[name].tobytes() for name in a)
    X = np.random.default_rng(0).uniform(size=(2, 1, 96, 96)).astype(np.float32)
    np.testing.assert_array_equal(forward(backend, net, X), forward(backend, other, X))


def test_file_records_the_model(backend_name, backend, tmp_path):
    net = _net(backend, backend_name, num_classes=7, in_channels=3)
    backend.save_weights(net, tmp_path / "w.safetensors")
    tensors, meta = weights.load(tmp_path / "w.safetensors")
    model = {"num_classes": 7, "in_channels": 3, "num_1x1": 2, "head": "one-step"}
    assert weights.model_args(tensors) == model
    assert meta == {**model, "format": weights.FORMAT, "sha256": weights.checksum(tensors)}


def test_variant_weights_load_and_are_told_apart(backend_name, backend, tmp_path):
    gradual = _net(backend, backend_name, num_1x1=1, head="gradual")
    backend.save_weights(gradual, tmp_path / "g.safetensors")
    tensors, _ = weights.load(tmp_path / "g.safetensors")
    assert weights.model_args(tensors) == {"num_classes": 10, "in_channels": 1, "num_1x1": 1, "head": "gradual"}
    again = backend.NiN(**weights.model_args(tensors))
    backend.load_weights(again, tmp_path / "g.safetensors")
    X = np.random.default_rng(0).uniform(size=(2, 1, 67, 67)).astype(np.float32)
    logits = [forward(backend, net, X) for net in (gradual, again)]
    np.testing.assert_array_equal(*logits)
    with pytest.raises(ValueError, match="num_1x1=2, head='one-step'.*missing: blocks.0.convs.2.weight"):
        backend.load_weights(_net(backend, backend_name), tmp_path / "g.safetensors")


def _bad_files(tmp_path, good: dict) -> dict:
    """Weights files that do not fit NiN(num_classes=10, in_channels=1), and what the error says."""
    files = {}

    def write(name, tensors, message):
        save_file(tensors, tmp_path / name)
        files[name] = message

    write("missing.safetensors", {k: v for k, v in good.items() if k != "blocks.2.convs.1.bias"},
          "missing: blocks.2.convs.1.bias")
    write("extra.safetensors", {**good, "head.weight": np.zeros((10, 10), np.float32)}, "unexpected: head.weight")
    write("float64.safetensors", {k: v.astype(np.float64) for k, v in good.items()}, "dtype float64")
    write("transposed.safetensors", {**good, "blocks.0.convs.0.weight": good["blocks.0.convs.0.weight"].transpose(
        2, 3, 1, 0).copy()}, "blocks.0.convs.0.weight is (11, 11, 1, 96), the model's is (96, 1, 11, 11)")
    (tmp_path / "corrupt.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    files["corrupt.safetensors"] = "is not a readable safetensors weights file"
    files["absent.safetensors"] = "no such weights file"
    return files


def test_bad_files_are_refused_and_change_nothing(backend_name, backend, tmp_path):
    net = _net(backend, backend_name)
    before = backend.get_weights(net)
    backend.save_weights(_net(backend, backend_name, num_classes=5), tmp_path / "five.safetensors")
    backend.save_weights(_net(backend, backend_name, in_channels=3), tmp_path / "rgb.safetensors")
    cases = {"five.safetensors": "blocks.3.convs.0.weight is (5, 384, 3, 3), the model's is (10, 384, 3, 3)",
             "rgb.safetensors": "blocks.0.convs.0.weight is (96, 3, 11, 11), the model's is (96, 1, 11, 11)",
             **_bad_files(tmp_path, before)}
    for name, message in cases.items():
        with pytest.raises(ValueError) as err:
            backend.load_weights(net, tmp_path / name)
        assert message in str(err.value), name
        after = backend.get_weights(net)
        assert all(np.array_equal(before[k], after[k]) for k in before), f"{name} changed the model"


def test_checkpoint_is_a_weights_file(backend_name, backend, tmp_path):
    arrays = make_set(tmp_path / "data", n_train=32, n_test=16)
    train_iter, test_iter = backend.load_data_fashion_mnist(16, resize=67, root=tmp_path / "data")
    net = backend.NiN()
    backend.train(net, train_iter, test_iter, 1, 0.05, seed=2, run=runs.Run(tmp_path / "run", backend_name),
                  quiet=True)
    other = backend.NiN()
    backend.load_weights(other, tmp_path / "run" / runs.CHECKPOINT)
    classes = backend.predict(other, test_iter)
    assert classes.shape == (16,) and np.issubdtype(classes.dtype, np.integer)
    np.testing.assert_array_equal(classes, backend.predict(net, test_iter))
    labels = arrays["t10k-labels-idx1-ubyte"]
    assert backend.evaluate_accuracy(net, test_iter) == pytest.approx(float((classes == labels).mean()))
