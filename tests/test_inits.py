"""``nin.inits``: the centered init (Kaiming, each filter made zero-mean) and the primed one (centered, its
biases set on a training batch so that each class unit is on for half of it), in each backend."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import forward
from nin import inits, ort, spec


def _initialized(backend_name, backend, how: str, seed: int):
    net = backend.NiN()
    backend.init_weights(net, how, seed)
    return net


def test_centered_init_is_kaiming_with_zero_mean_filters(backend_name, backend):
    kaiming = backend.get_weights(_initialized(backend_name, backend, "kaiming", 0))
    centered = backend.get_weights(_initialized(backend_name, backend, "centered", 0))
    first = "blocks.0.convs.0.weight"
    for name, w in centered.items():
        if name.endswith(".bias"):
            assert not w.any(), name
        elif name == first:  # the image's convolution keeps its Kaiming weights
            assert np.abs(w.mean(axis=(1, 2, 3))).max() > 1e-3, name
        else:
            assert np.abs(w.mean(axis=(1, 2, 3))).max() < 1e-6 * np.abs(w).max(), name
        fan_in = int(np.prod(w.shape[1:]))
        if name.endswith(".weight") and fan_in >= 90:  # Kaiming's scale sqrt(2 / fan_in), with enough samples
            assert w.std() == pytest.approx(np.sqrt(2 / fan_in), rel=0.15), name
    # the same draws as "kaiming" from the same seed, made zero-mean
    for name, w in inits.centered(kaiming).items():
        np.testing.assert_allclose(centered[name], w, atol=1e-6, err_msg=name)


def _kaiming(seed: int) -> dict[str, np.ndarray]:
    """Kaiming-uniform canonical weights (He, for ReLU: bound sqrt(6 / fan_in)) and zero biases, drawn by
    numpy: what every backend's ``init_weights(net, "kaiming", seed)`` draws from (checked above)."""
    rng = np.random.default_rng(seed)
    return {name: (rng.uniform(-1, 1, shape) * np.sqrt(6 / np.prod(shape[1:]))).astype(np.float32)
            if name.endswith(".weight") else np.zeros(shape, np.float32)
            for name, shape in spec.weight_shapes().items()}


@pytest.mark.slow
def test_centered_init_leaves_fewer_class_units_off_at_the_start_and_primed_none(real_data):
    """With Kaiming weights about a third of the class units of the last ReLU are 0 for every image at the
    start; centered, far fewer; primed on a training batch, none, and each is on for a good part of the test
    images. A property of the weights' distribution, not of a framework: each backend draws Kaiming weights
    (test_centered_init_is_kaiming_with_zero_mean_filters) and computes the numpy forward's logits
    (test_primed_biases_turn_each_unit_on_for_half_the_batch, tests/test_equivalence.py), so it is checked
    once, with numpy's draws and forward (nin.inits.logits) on 200 real test images at 96x96, seeds 0-9.
    Measured in each of the five backends before, on 300 images (units off, of 100): Kaiming 27 to 36,
    centered 5 to 11 (at least 3.0 times fewer), primed 0, each on for at least 37% of the images; with
    numpy's draws on 300 images: 41, 5 and 0, each on for at least 40%."""
    train_iter, test_iter = ort.load_data_fashion_mnist(200, 96, real_data, limit_train=128, limit_test=200,
                                                        download=False)
    X, first = (next(iter(it))[0] for it in (test_iter, train_iter))
    off, least_on = {"kaiming": [], "centered": [], "primed": []}, []
    for seed in range(10):
        kaiming = _kaiming(seed)
        draws = {"kaiming": kaiming, "centered": inits.centered(kaiming)}
        for how, tensors in draws.items():
            off[how].append(int((inits.logits(tensors, X, chunk=50) == 0).all(axis=0).sum()))
        on = (inits.logits(inits.primed(draws["centered"], first), X, chunk=50) > 0).mean(axis=0)
        off["primed"].append(int((on == 0).sum()))
        least_on.append(float(on.min()))
    assert sum(off["kaiming"]) >= 20, off
    assert 2 * sum(off["centered"]) <= sum(off["kaiming"]), off
    assert sum(off["primed"]) == 0 and min(least_on) > 0.2, (off, least_on)


def test_primed_biases_turn_each_unit_on_for_half_the_batch(backend, tmp_path):
    """``inits.primed``'s numpy forward is the framework's: on the batch it primed on, each class unit of
    the backend's model is on for half of the images (a median splits 32 values 16/16); the weights stay."""
    net = backend.NiN()
    backend.init_weights(net, "centered", 3)
    before = backend.get_weights(net)
    X = np.random.default_rng(0).random((32, 1, 67, 67), dtype=np.float32)
    after = inits.primed(before, X)
    backend.set_weights(net, after)
    on = (forward(backend, net, X) > 0).sum(axis=0)
    assert ((on >= 15) & (on <= 17)).all(), on
    for name, w in before.items():
        if name.endswith(".weight"):
            np.testing.assert_array_equal(after[name], w, err_msg=name)
        else:
            assert after[name].dtype == w.dtype and np.abs(after[name]).max() > 0, name


def test_primed_run_primes_on_the_first_batch_of_epoch_0_and_keeps_the_order(backend, fake):
    """``train(init="primed")`` is the centered draw, primed on epoch 0's first batch, then the same
    training as a run that starts from those weights (the first batch does not shift the data order)."""
    def loaders():
        return backend.load_data_fashion_mnist(16, 67, fake, seed=5)

    primed = backend.NiN()
    backend.train(primed, *loaders(), 1, 0.05, seed=7, init="primed", quiet=True)
    by_hand = backend.NiN()
    backend.init_weights(by_hand, "centered", 7)
    train_iter, test_iter = loaders()
    first = backend.to_numpy(next(iter(train_iter))[0])
    backend.set_weights(by_hand, inits.primed(backend.get_weights(by_hand), first))
    backend.train(by_hand, train_iter, test_iter, 1, 0.05, seed=7, init=None, quiet=True)
    a, b = backend.get_weights(primed), backend.get_weights(by_hand)
    for name in a:
        np.testing.assert_allclose(a[name], b[name], rtol=1e-5, atol=1e-6, err_msg=name)
