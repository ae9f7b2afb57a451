"""All the frameworks in one process: their summaries agree layer by layer, their loaders give the same
batches, and a run goes on from one framework to the next."""

import json

import pytest

import nin
from nin import cli, runs, spec

pytestmark = pytest.mark.cross
NATIVE_LAYOUT = {"mxnet": "NCHW", "torch": "NCHW", "tf": "NHWC", "jax": "NHWC", "paddle": "NCHW"}


def _summary(capsys, backend, input_shape, num_classes, *variant):
    status = cli.main(["summary", "--backend", backend, "--json", "--input-shape", ",".join(map(str, input_shape)),
                       "--num-classes", str(num_classes), *variant])
    assert status == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("input_shape, num_classes, variant", [
    ((1, 1, 224, 224), 10, ()), ((2, 3, 101, 150), 100, ()), ((3, 1, 67, 67), 10, ()),
    ((1, 1, 224, 224), 10, ("--num-1x1", "1")), ((1, 1, 96, 96), 10, ("--num-1x1", "0")),
    ((1, 1, 224, 224), 10, ("--head", "gradual")), ((1, 3, 96, 96), 100, ("--num-1x1", "1", "--head", "gradual")),
])
def test_summaries_agree_layer_by_layer(all_backends, capsys, input_shape, num_classes, variant):
    summaries = {b: _summary(capsys, b, input_shape, num_classes, *variant) for b in all_backends}
    reference = summaries["torch"]
    for name, summary in summaries.items():
        assert len(summary["layers"]) == 10, name
        for i, (a, ref) in enumerate(zip(summary["layers"], reference["layers"], strict=True)):
            for key in ("kind", "shape", "params"):
                assert a[key] == ref[key], f"{name}, layer {i}: {key} differs: {a[key]} against torch's {ref[key]}"
            # Gluon and PyTorch produce NCHW themselves; Keras and JAX produce NHWC.
            native = a["native_shape"]
            nchw = native if len(native) == 2 or NATIVE_LAYOUT[name] == "NCHW" else [native[j] for j in (0, 3, 1, 2)]
            assert nchw == a["shape"], f"{name}, layer {i}: native shape {native}"
        assert summary["total_params"] == spec.total_params(input_shape[1], num_classes, num_1x1=reference["num_1x1"],
                                                            head=reference["head"]), name


def test_loaders_give_the_same_batches(all_backends, tmp_path):
    """The same files, the same seed: the same images (resized by each framework's own bilinear
    op), labels and shuffled order in every framework."""
    import numpy as np

    from fakedata import make_set

    make_set(tmp_path, n_train=40, n_test=24)
    batches = {}
    for name, backend in all_backends.items():
        train_iter, test_iter = backend.load_data_fashion_mnist(16, resize=96, root=tmp_path, seed=4)
        batches[name] = [(nin.backend(name).to_numpy(X), nin.backend(name).to_numpy(y))
                         for loader in (train_iter, test_iter) for X, y in loader]
    reference = batches["torch"]
    assert [X.shape for X, _ in reference] == [(16, 1, 96, 96), (16, 1, 96, 96), (8, 1, 96, 96),
                                              (16, 1, 96, 96), (8, 1, 96, 96)]
    for name in (name for name in batches if name != "torch"):
        for (X, y), (X_ref, y_ref) in zip(batches[name], reference, strict=True):
            np.testing.assert_array_equal(y, y_ref)
            np.testing.assert_allclose(X, X_ref, atol=1e-5, err_msg=f"{name} resizes differently")


def test_a_run_goes_on_in_another_framework(all_backends, tmp_path, capsys):
    from fakedata import make_set

    make_set(tmp_path / "data", n_train=32, n_test=16)
    out = str(tmp_path / "run")
    common = ["--data", str(tmp_path / "data"), "--resize", "67", "--batch-size", "16", "--quiet"]
    assert cli.main(["train", "--backend", "torch", "--epochs", "1", "--out", out, "--seed", "1", *common]) == 0
    for epochs, backend in ((2, "tf"), (3, "mxnet"), (4, "jax")):
        assert cli.main(["train", "--resume", out, "--backend", backend, "--epochs", str(epochs), "--quiet"]) == 0
        _, meta = runs.Run(out, backend).load()
        assert meta["backend"] == backend and [r["epoch"] for r in meta["history"]] == list(range(epochs))
