"""Same weights, same numbers, in one process: logits, one SGD step, and predictions agree across
all the frameworks when they share one weights file."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import nin
from conftest import forward
from fakedata import make_class_set, make_set
from nin import weights

pytestmark = pytest.mark.cross


def _kaiming_weights(all_backends, name, path, seed=0):
    """``name``'s own seeded Kaiming weights, saved to ``path`` (logits far from zero)."""
    backend = all_backends[name]
    net = backend.NiN()
    nin.backend(name).init_weights(net, "kaiming", seed)
    backend.save_weights(net, path)


@pytest.mark.parametrize("source", list(nin.BACKENDS))
def test_same_weights_give_the_same_logits(all_backends, tmp_path, source):
    path = tmp_path / f"{source}.safetensors"
    _kaiming_weights(all_backends, source, path)
    X = np.random.default_rng(0).uniform(size=(2, 1, 224, 224)).astype(np.float32)
    logits = {}
    for name, backend in all_backends.items():
        net = backend.NiN()
        backend.load_weights(net, path)
        logits[name] = forward(nin.backend(name), net, X)
    scale = np.abs(logits[source]).max()
    assert scale > 1e-2 and len({tuple(row) for row in logits[source]}) == 2  # real, distinct logits
    for a, b in itertools.combinations(logits, 2):
        diff = np.abs(logits[a] - logits[b]).max()
        assert diff <= 1e-4 * scale, f"{a} vs {b}: logits differ by {diff:.3g} (largest logit {scale:.3g})"


def test_one_sgd_step_updates_the_weights_alike(all_backends, tmp_path):
    make_set(tmp_path / "data", n_train=8, n_test=8)
    path = tmp_path / "start.safetensors"
    _kaiming_weights(all_backends, "torch", path)
    updated = {}
    for name, backend in all_backends.items():
        _, batch = backend.load_data_fashion_mnist(8, resize=96, root=tmp_path / "data")  # one batch of 8
        net = backend.NiN(dropout=0)
        backend.load_weights(net, path)
        backend.train(net, batch, batch, 1, 0.1, init=None, seed=0, quiet=True)
        updated[name] = nin.backend(name).get_weights(net)
    start, _ = weights.load(path)

    def flat(tensors):
        return np.concatenate([tensors[k].ravel().astype(np.float64) for k in start])

    w0 = flat(start)
    for a, b in itertools.combinations(updated, 2):
        wa, wb = flat(updated[a]), flat(updated[b])
        # The updated weights agree within 1e-5, relative to the weights (norm over the model) ...
        assert np.linalg.norm(wa - wb) <= 1e-5 * np.linalg.norm(wa), (a, b)
        # ... and so do the updates themselves, within 1e-3: the loss reduction and the update rule
        # are the same (a sum instead of a mean, or another lr, would be off by a factor of 8 or more).
        assert np.linalg.norm(wa - wb) <= 1e-3 * np.linalg.norm(wa - w0), (a, b)
    assert np.linalg.norm(flat(updated["torch"]) - w0) > 1e-3  # the step did move the weights


@pytest.mark.parametrize("trainer", list(nin.BACKENDS))
def test_trained_in_one_framework_predicts_alike_in_the_others(all_backends, tmp_path, trainer):
    """Short runs of NiN sit on the 2.303 plateau and predict one class for all images, so
    the predicted classes agreeing would prove little alone: the logits are compared too."""
    make_class_set(tmp_path / "data", n_train=128, n_test=1000)
    backend = all_backends[trainer]
    # the trainer's own test pass after each epoch on 64 images: the 1,000 are for the comparison below
    train_iter, test_iter = backend.load_data_fashion_mnist(32, resize=67, root=tmp_path / "data", seed=1,
                                                            limit_test=64)
    net = backend.NiN()
    backend.train(net, train_iter, test_iter, 2, 0.05, seed=1, init="kaiming", quiet=True)
    backend.save_weights(net, tmp_path / "trained.safetensors")
    X = next(iter(test_iter))[0]
    X = nin.backend(trainer).to_numpy(X)[:8]
    classes, logits = {}, {}
    for name, other in all_backends.items():
        _, test_iter = other.load_data_fashion_mnist(250, resize=67, root=tmp_path / "data")
        evaluated = other.NiN()
        other.load_weights(evaluated, tmp_path / "trained.safetensors")
        classes[name] = other.predict(evaluated, test_iter)
        logits[name] = forward(nin.backend(name), evaluated, X)
    assert len(classes[trainer]) == 1000
    scale = np.abs(logits[trainer]).max()
    for name in classes:
        agreement = float((classes[name] == classes[trainer]).mean())
        assert agreement >= 0.999, f"{name} agrees with {trainer} on {agreement:.2%} of 1000 images"
        assert np.abs(logits[name] - logits[trainer]).max() <= 1e-4 * scale, name
