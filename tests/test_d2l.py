"""nin's trainers against the book's own ``d2l.train_ch6``, where d2l imports.

The tox envs ``mxnet`` and ``tf`` install d2l 1.0.3, the English edition's, and ``paddle``
d2l 0.17.6, the last with the Chinese edition's ``d2l.paddle`` (each without its pins on
numpy and matplotlib), and name their backend in ``NIN_D2L``; a backend named there whose d2l cannot import
fails the run. (``d2l.torch`` imports torchvision, which cannot import beside the CPU
PyTorch wheel here; ``test_training.py`` compares PyTorch with the book's loop instead.)
"""

from __future__ import annotations

import inspect
import os

import pytest

import nin
from fakedata import make_set
from nin import book, spec
from test_training import assert_same_weights

D2L = [name for name in os.environ.get("NIN_D2L", "").split(",") if name]


@pytest.mark.parametrize("name", D2L or [pytest.param("", marks=pytest.mark.skip(
    reason="NIN_D2L names no backend: d2l is installed in the mxnet, tf and paddle tox envs only"))])
def test_trainer_ends_with_d2l_train_ch6_weights(name, tmp_path, capsys, monkeypatch):
    from conftest import import_backend

    backend = import_backend(name)
    d2l = _import_d2l(name)
    # The weights are compared, not the test accuracy: d2l's evaluation gives way to nin's, since d2l.paddle's
    # evaluate_accuracy_gpu calls paddle.set_device("gpu:...") unconditionally, which fails on a CPU.
    monkeypatch.setattr(d2l, "evaluate_accuracy_gpu", lambda net, data_iter, device=None: backend.evaluate_accuracy(
        net, data_iter), raising=False)
    make_set(tmp_path, n_train=48, n_test=40)
    # The test split is not shuffled: both trainers see the same batches in the same order.
    # d2l plots every num_batches // 5 batches: it needs at least five (40 images, batches of 8).
    _, batches = backend.load_data_fashion_mnist(8, resize=spec.min_image_size(), root=tmp_path)
    reference = book.module(name)
    reference.seed(7)
    book_net = backend.NiN(dropout=0)  # built right after the seed, as in the book's script
    start = None if reference.INITIALIZES else backend.get_weights(book_net)
    if "net_fn" in inspect.signature(d2l.train_ch6).parameters:  # d2l's TensorFlow version builds the model itself
        def net_fn():
            net = backend.NiN(dropout=0)
            backend.set_weights(net, start)
            return net

        book_net = d2l.train_ch6(net_fn, batches, batches, 1, 0.1, d2l.try_gpu())
    else:
        d2l.train_ch6(book_net, batches, batches, 1, 0.1, d2l.try_gpu())
    nin_net = backend.NiN(dropout=0)
    if start is not None:
        backend.set_weights(nin_net, start)
    backend.train(nin_net, batches, batches, 1, 0.1, seed=7, init="xavier" if start is None else None, quiet=True)
    assert "examples/sec" in capsys.readouterr().out  # d2l printed its closing lines: it did train
    assert_same_weights(nin.backend(name).get_weights(book_net), nin.backend(name).get_weights(nin_net))


def _import_d2l(name):
    import importlib

    try:
        return importlib.import_module(f"d2l.{ {'mxnet': 'mxnet', 'tf': 'tensorflow', 'paddle': 'paddle'}[name] }")
    except ImportError as err:
        pytest.fail(f"NIN_D2L names {name!r}, but d2l cannot import: {err}", pytrace=False)
