"""ONNX export (:mod:`nin.export`) and ONNX Runtime (:mod:`nin.ort`) against every requested backend.

The same weights give the same logits (within 1e-4 of the largest) in ONNX Runtime and in the
backend, on real test images at 224x224 and at the minimum size, for the book's model, each
variant and a model trained a few steps; the file passes ONNX's full check and is byte-identical
when exported again. onnx and onnxruntime are in every test env: a missing one fails, never skips.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import onnx
import pytest

from nin import api, cli, export, ort, spec

VARIANTS = [{}, {"num_1x1": 1}, {"num_1x1": 0}, {"head": "gradual"}]
# Which framework's own exporter (``--via``) runs beside the onnx package nin needs (docs/frameworks.md).
VIA_WORKS = {"mxnet": False, "torch": True, "tf": True, "jax": False, "paddle": False}


@pytest.fixture(scope="module")
def images(real_data) -> dict[int, np.ndarray]:
    """Eight real test images at 224x224 and at the minimum size, N,C,H,W float32 (no framework)."""
    return {size: next(iter(ort.load_data_fashion_mnist(8, size, real_data, limit_train=1, limit_test=8,
                                                        download=False)[1]))[0]
            for size in (224, spec.min_image_size())}


def _assert_same_logits(backend, net, model, images):
    for size, X in images.items():
        expected = backend.logits(net, backend.from_numpy(X))
        got = ort.logits(model, X)
        assert got.shape == expected.shape
        assert np.abs(got - expected).max() <= 1e-4 * np.abs(expected).max(), size


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: "-".join(f"{k}={v}" for k, v in v.items()) or "book")
def test_onnx_runtime_gives_the_backends_logits(backend, variant, images, tmp_path):
    net = backend.NiN(**variant)
    backend.init_weights(net, "centered", 0)
    backend.save_weights(net, tmp_path / "w.safetensors")
    export.export(tmp_path / "w.safetensors", tmp_path / "nin.onnx")
    model_proto = onnx.load(tmp_path / "nin.onnx")
    onnx.checker.check_model(model_proto, full_check=True)
    meta = {p.key: p.value for p in model_proto.metadata_props}
    assert meta == {"num_classes": "10", "in_channels": "1", "num_1x1": str(variant.get("num_1x1", 2)),
                    "head": variant.get("head", "one-step"), "min_image_size": str(spec.min_image_size()),
                    "producer": "nin"}
    _assert_same_logits(backend, net, ort.load(tmp_path / "nin.onnx"), images)


def test_a_trained_model_exports_too(backend, images, real_data, tmp_path):
    train_iter, test_iter = backend.load_data_fashion_mnist(16, spec.min_image_size(), real_data, limit_train=48,
                                                            limit_test=16, seed=0, download=False)
    net = backend.NiN()
    backend.train(net, train_iter, test_iter, 1, 0.1, seed=0, init="centered", quiet=True)
    backend.save_weights(net, tmp_path / "w.safetensors")
    export.export(tmp_path / "w.safetensors", tmp_path / "nin.onnx")
    _assert_same_logits(backend, net, ort.load(tmp_path / "nin.onnx"), images)


def test_export_is_repeatable(backend, tmp_path):
    net = backend.NiN()
    backend.init_weights(net, "kaiming", 3)
    backend.save_weights(net, tmp_path / "w.safetensors")
    files = [export.export(tmp_path / "w.safetensors", tmp_path / f"{i}.onnx") for i in range(2)]
    digests = {hashlib.sha256(path.read_bytes()).hexdigest() for path in files}
    assert len(digests) == 1


def test_the_frameworks_own_exporter(backend_name, backend, images, tmp_path, capsys):
    net = backend.NiN()
    backend.init_weights(net, "centered", 1)
    backend.save_weights(net, tmp_path / "w.safetensors")
    if not VIA_WORKS[backend_name]:
        with pytest.raises(api.NoExporter, match=r"nin's exporter \(nin.export\)"):
            export.export(tmp_path / "w.safetensors", tmp_path / "via.onnx", backend=backend_name)
        assert cli.main(["export", "--weights", str(tmp_path / "w.safetensors"), "--out", str(tmp_path / "via.onnx"),
                         "--via", backend_name]) == 1
        assert capsys.readouterr().err.strip().endswith("; export without --via")
        assert not (tmp_path / "via.onnx").exists()
        return
    export.export(tmp_path / "w.safetensors", tmp_path / "via.onnx", backend=backend_name)
    onnx.checker.check_model(onnx.load(tmp_path / "via.onnx"), full_check=True)
    _assert_same_logits(backend, net, ort.load(tmp_path / "via.onnx"), images)


def test_onnx_runtime_refuses_bad_input(tmp_path, images):
    from nin import weights

    tensors = {name: np.zeros(shape, np.float32) for name, shape in spec.weight_shapes().items()}
    weights.save(tensors, tmp_path / "w.safetensors")
    model = ort.load(export.export(tmp_path / "w.safetensors", tmp_path / "nin.onnx"))
    with pytest.raises(ValueError, match="too small"):
        ort.logits(model, np.zeros((1, 1, 28, 28), np.float32))
    with pytest.raises(ValueError, match="channel"):
        ort.logits(model, np.zeros((1, 3, 96, 96), np.float32))
    (tmp_path / "bad.onnx").write_bytes(b"not an onnx model")
    with pytest.raises(ValueError, match="not a readable ONNX model"):
        ort.load(tmp_path / "bad.onnx")
    with pytest.raises(ValueError, match="no such ONNX file"):
        ort.load(tmp_path / "missing.onnx")
    with pytest.raises(ValueError, match="opset must be an integer of at least 13, got 9"):
        export.build(tensors, opset=9)


def _cli(capsys, *argv) -> tuple[int, str, str]:
    from nin import cli

    status = cli.main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def test_export_and_predict_on_the_command_line(backend_name, backend, real_data, capsys, tmp_path):
    net = backend.NiN()
    backend.init_weights(net, "centered", 0)
    backend.save_weights(net, tmp_path / "w.safetensors")
    status, out, _ = _cli(capsys, "export", "--weights", str(tmp_path / "w.safetensors"), "--out",
                          str(tmp_path / "nin.onnx"))
    assert status == 0 and "wrote" in out
    results = {}
    for runtime, path in (("onnxruntime", "nin.onnx"), (backend_name, "w.safetensors")):
        status, out, _ = _cli(capsys, "predict", "--backend", runtime, "--weights", str(tmp_path / path), "--data",
                              str(real_data), "--limit", "64", "--resize", "67", "--json")
        assert status == 0
        results[runtime] = json.loads(out)
    assert results["onnxruntime"]["predictions"] == results[backend_name]["predictions"]
    assert results["onnxruntime"]["accuracy"] == results[backend_name]["accuracy"]


@pytest.mark.parametrize("case", ["corrupt", "too small", "channels"])
def test_bad_input_is_one_line(case, real_data, capsys, tmp_path):
    from nin import weights

    tensors = {name: np.zeros(shape, np.float32) for name, shape in spec.weight_shapes(in_channels=3).items()}
    weights.save(tensors, tmp_path / "w3.safetensors")
    (tmp_path / "bad.onnx").write_bytes(b"\x08\x07garbage")
    argv = {"corrupt": ["--weights", str(tmp_path / "bad.onnx")],
            "too small": ["--weights", str(tmp_path / "good.onnx"), "--resize", "28"],
            "channels": ["--weights", str(tmp_path / "w3.onnx")]}[case]
    tensors1 = {name: np.zeros(shape, np.float32) for name, shape in spec.weight_shapes().items()}
    weights.save(tensors1, tmp_path / "w1.safetensors")
    for source, target in (("w1.safetensors", "good.onnx"), ("w3.safetensors", "w3.onnx")):
        assert _cli(capsys, "export", "--weights", str(tmp_path / source), "--out", str(tmp_path / target))[0] == 0
    status, _, err = _cli(capsys, "predict", "--backend", "onnxruntime", "--data", str(real_data), *argv)
    assert status != 0 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert {"corrupt": "not a readable ONNX model", "too small": "too small",
            "channels": "3-channel images"}[case] in err
    status, _, err = _cli(capsys, "export", "--weights", str(tmp_path / "bad.onnx"), "--out", str(tmp_path / "x.onnx"))
    assert status != 0 and len(err.strip().splitlines()) == 1 and not (tmp_path / "x.onnx").exists()


def test_onnx_runtime_batches_can_be_read_again(images, real_data):
    loader = ort.load_data_fashion_mnist(4, spec.min_image_size(), real_data, limit_train=1, limit_test=8,
                                         download=False)[1]
    first, second = [y for _, y in loader], [y for _, y in loader]
    assert len(loader) == 2 and len(first) == 2 and all((a == b).all() for a, b in zip(first, second, strict=True))
