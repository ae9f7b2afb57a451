"""All three frameworks in one process: their summaries agree layer by layer."""

import json

import pytest

import nin
from nin import cli, spec

pytestmark = pytest.mark.cross


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
def test_three_summaries_agree_layer_by_layer(all_backends, capsys, input_shape, num_classes, variant):
    summaries = {b: _summary(capsys, b, input_shape, num_classes, *variant) for b in all_backends}
    mx, pt, tf = (summaries[b] for b in ("mxnet", "torch", "tf"))
    assert len(mx["layers"]) == len(pt["layers"]) == len(tf["layers"]) == 10
    for i, (a, b, c) in enumerate(zip(mx["layers"], pt["layers"], tf["layers"], strict=True)):
        for key in ("kind", "shape", "params"):
            assert a[key] == b[key] == c[key], f"layer {i}: {key} differs: {a[key]} {b[key]} {c[key]}"
        # Gluon and PyTorch produce NCHW themselves; Keras produces NHWC.
        assert a["native_shape"] == b["native_shape"] == a["shape"]
        nchw = c["native_shape"] if len(c["native_shape"]) == 2 else [c["native_shape"][j] for j in (0, 3, 1, 2)]
        assert nchw == c["shape"]
    model = {"num_1x1": mx["num_1x1"], "head": mx["head"]}
    assert mx["total_params"] == pt["total_params"] == tf["total_params"] == spec.total_params(
        input_shape[1], num_classes, **model)


def test_three_loaders_give_the_same_batches(all_backends, tmp_path):
    """The same files, the same seed: the same images (resized by each framework's own bilinear
    op), labels and shuffled order in all three frameworks."""
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
    for name in ("mxnet", "tf"):
        for (X, y), (X_ref, y_ref) in zip(batches[name], reference, strict=True):
            np.testing.assert_array_equal(y, y_ref)
            np.testing.assert_allclose(X, X_ref, atol=1e-5, err_msg=f"{name} resizes differently")


def test_a_run_goes_on_in_another_framework(all_backends, tmp_path, capsys):
    from fakedata import make_set
    from nin import training

    make_set(tmp_path / "data", n_train=32, n_test=16)
    out = str(tmp_path / "run")
    common = ["--data", str(tmp_path / "data"), "--resize", "67", "--batch-size", "16", "--quiet"]
    assert cli.main(["train", "--backend", "torch", "--epochs", "1", "--out", out, "--seed", "1", *common]) == 0
    for epochs, backend in ((2, "tf"), (3, "mxnet")):
        assert cli.main(["train", "--resume", out, "--backend", backend, "--epochs", str(epochs), "--quiet"]) == 0
        _, meta = training.Run(out, backend).load()
        assert meta["backend"] == backend and [r["epoch"] for r in meta["history"]] == list(range(epochs))
