"""The book's functions, written once for every backend.

A backend module (``nin/mxnet.py``, ``nin/torch.py``, ``nin/tf.py``, ``nin/jax.py``) holds what its framework
writes its own way: ``nin_block``, ``NiN``, ``summary``, and the small hooks of :data:`HOOKS`
(the same names and signatures in every backend; ``tests/test_parity.py`` checks them). The
rest, the same in every framework, is here, and each backend binds it under the book's names::

    load_data_fashion_mnist, train, evaluate_accuracy, predict, save_weights, load_weights = api.bind(__name__)

Every function here takes the backend module first; the bound ones do not.
"""

from __future__ import annotations

import functools
import inspect
import sys
from types import ModuleType

import numpy as np

from nin import data, training, weights

#: the hooks every backend module implements, with one signature everywhere
HOOKS = {
    "PRECISIONS": "the precisions ``train`` offers: float32 everywhere, bfloat16 where the backend has it",
    "default_device": "() -> the device training runs on when none is given: a GPU if there is one, else the CPU",
    "from_numpy": "(X) -> a numpy batch as the framework's tensor: images N,C,H,W into the model's layout",
    "to_numpy": "(X) -> the framework's tensor as numpy: images back to N,C,H,W",
    "loader": "(split, sampler, resize) -> batches (X, y) of a data.Split, in the sampler's order, resized",
    "init_weights": ("(net, init, seed) -> None: seed the framework, then the weights of training.WEIGHT_INITS "
                     "(None: keep)"),
    "get_weights": "(net) -> the weights as canonical numpy arrays (nin.spec.weight_shapes)",
    "set_weights": "(net, tensors) -> None: canonical weights in; all are checked before any is set",
    "seed_epoch": "(net, seed) -> None: seed the random generators an epoch draws from (dropout)",
    "trainer": ("(net, device, precision, clip) -> a context manager giving step(X, y, lr) -> (loss sum, correct, "
                "examples); clip: None, or the largest norm of the mean loss's gradient"),
    "logits": "(net, X, device=None) -> the logits of batch X as numpy, in inference mode",
    "to_onnx": "(net, path, opset) -> None: the framework's own ONNX exporter, N,C,H,W input "
               "(ValueError where it cannot run)",
}


def load_data_fashion_mnist(backend: ModuleType, batch_size: int, resize: int | None = None, root=None, *,
                            limit_train: int | None = None, limit_test: int | None = None,
                            seed: int | None = None, download: bool = True):
    """Fashion-MNIST as the book's ``d2l.load_data_fashion_mnist``: ``(train_iter, test_iter)``.

    Batches ``(X, y)`` hold float32 images in [0, 1], in the layout the model takes, resized
    bilinearly to ``resize`` x ``resize`` a whole batch at a time, and integer labels.
    The training batches are shuffled anew each epoch (see :class:`nin.data.BatchSampler`);
    the test batches are not. Files come from ``root``, ``$NIN_DATA`` or the cache directory
    (:func:`nin.data.load_fashion_mnist`); ``limit_train`` and ``limit_test`` keep the first examples.
    """
    train_split, test_split = data.load_splits(root, resize, limit_train, limit_test, download)
    return (backend.loader(train_split, data.BatchSampler(len(train_split[0]), batch_size, True, seed), resize),
            backend.loader(test_split, data.BatchSampler(len(test_split[0]), batch_size, False), resize))


def train(backend: ModuleType, net, train_iter, test_iter, num_epochs: int, lr: float, device=None, *,
          seed: int | None = None, init: str | None = "xavier", run: training.Run | None = None,
          resume: bool = False, quiet: bool = False, precision: str = "float32", schedule: str = "constant",
          warmup: float = 0, clip: float | None = None) -> list[dict]:
    """Train ``net`` as the book's ``d2l.train_ch6`` does, and return one record per epoch.

    The book's way: ``init`` for the convolution weights ("xavier", the book's; "kaiming"; "centered";
    "primed", centered with biases from the first batch; or None to keep the model's weights), plain
    SGD at ``lr``, mean cross-entropy; per epoch the
    train loss, train accuracy, test accuracy and examples per second; at the end the book's
    two lines (unless ``quiet``).
    Beyond the book: ``seed`` makes a run repeatable (see :mod:`nin.training`), a progress bar
    shows live loss and accuracy, and with ``run`` (a :class:`nin.training.Run`) a checkpoint
    is written after every epoch; ``resume=True`` continues from it up to ``num_epochs``.
    ``precision="bfloat16"`` computes in bfloat16 (weights and updates stay float32) in the backends
    whose ``PRECISIONS`` offer it; the default, "float32", is the book's math. ``schedule`` and
    ``warmup`` set the learning rate of each step (:func:`nin.training.learning_rate`); "constant"
    with no warm-up is the book's. ``clip`` scales down a step whose gradient norm is larger (None, the
    book's: plain SGD). A loss (or, with ``run``, a weight) that is NaN or infinite stops
    the run with :class:`nin.training.Diverged`, before anything non-finite is saved.
    """
    training.check_budget(num_epochs, lr)
    training.check_init(init)
    training.check_precision(precision, backend.PRECISIONS)
    training.check_schedule(schedule, warmup)
    training.check_clip(clip)
    device = device or backend.default_device()
    if resume:
        state = run.resume()
        backend.set_weights(net, state.weights)
        seed, init, history, start = state.seed, state.init, state.history, state.next_epoch
    else:
        seed = training.new_seed() if seed is None else training.check_seed(seed)
        backend.init_weights(net, training.weight_init(init), seed)
        if init == "primed":  # the biases from the first batch of epoch 0 (the sampler replays it below)
            data.set_epoch(train_iter, 0)
            first = backend.to_numpy(next(iter(train_iter))[0])
            backend.set_weights(net, training.primed(backend.get_weights(net), first))
        history, start = [], 0
    with backend.trainer(net, device, precision, clip) as step, training.stoppable():
        for epoch in range(start, num_epochs):
            backend.seed_epoch(net, training.epoch_seed(seed, epoch))
            data.set_epoch(train_iter, epoch)
            meter, bar = training.Meter(), training.progress(train_iter, epoch, num_epochs, quiet)
            for i, (X, y) in enumerate(bar):
                rate = training.learning_rate(lr, schedule, warmup, num_epochs, epoch, i, len(train_iter))
                meter.add(*step(X, y, rate))
                training.check_finite(meter, epoch, i, rate)  # a NaN or infinite loss stops the run
                training.show(bar, meter)
                training.check_stop()  # a stop asked by a signal (the CLI's SIGTERM or Ctrl-C) happens here
            meter.stop()
            history.append(meter.record(epoch, evaluate_accuracy(backend, net, test_iter, device)))
            if run is not None:
                tensors = backend.get_weights(net)
                training.check_finite_weights(tensors, epoch, i, rate)  # the last good checkpoint stays
                run.save(tensors, epoch=epoch, seed=seed, init=init, lr=lr, history=history)
    if not quiet and history:
        print(training.book_lines(history, str(device)))
    return history


def evaluate_accuracy(backend: ModuleType, net, data_iter, device=None) -> float:
    """The fraction of examples in ``data_iter`` that ``net`` classifies right, in evaluation mode."""
    pairs = list(_predictions(backend, net, data_iter, device))
    return sum(int((y_hat == y).sum()) for y_hat, y in pairs) / sum(len(y) for _, y in pairs)


def predict(backend: ModuleType, net, data_iter, device=None) -> np.ndarray:
    """The class ``net`` predicts for each example of ``data_iter``, in evaluation mode, in order."""
    return np.concatenate([y_hat for y_hat, _ in _predictions(backend, net, data_iter, device)])


def save_weights(backend: ModuleType, net, path) -> None:
    """Save the weights as a safetensors file that every backend's ``load_weights`` reads.

    Names and layouts are canonical (:func:`nin.spec.weight_shapes`: kernels O,I,kH,kW), whatever
    the framework keeps; the file is written atomically.
    """
    weights.save(backend.get_weights(net), path, net_args(net))


def load_weights(backend: ModuleType, net, path) -> None:
    """Load weights saved by any backend's ``save_weights`` (or a training checkpoint).

    A file that does not fit ``net`` (other class count or input channels, missing or extra
    tensors, other shapes or dtypes) is refused with a ``ValueError`` that says what differs,
    and ``net`` is left unchanged.
    """
    tensors, _ = weights.load(path)
    backend.set_weights(net, tensors)


def net_args(net) -> dict:
    """The arguments ``NiN`` was built with (all but ``dropout``), as weights files record them."""
    return {"num_classes": net.num_classes, "in_channels": net.in_channels, "num_1x1": net.num_1x1,
            "head": net.head}


def _predictions(backend: ModuleType, net, data_iter, device):
    """``(predicted classes, labels)`` as numpy arrays, batch by batch."""
    for X, y in data_iter:
        yield backend.logits(net, X, device).argmax(axis=1), backend.to_numpy(y)
        training.check_stop()


BOOK_FUNCTIONS = (load_data_fashion_mnist, train, evaluate_accuracy, predict, save_weights, load_weights)


def bind(module_name: str, functions: tuple = BOOK_FUNCTIONS) -> tuple:
    """``functions`` (all of :data:`BOOK_FUNCTIONS` by default) for the backend module ``module_name``, without
    the backend argument: what the book calls ``d2l.train_ch6`` and the like, as that module's own."""
    def bound(function):
        @functools.wraps(function)
        def call(*args, **kwargs):
            return function(sys.modules[module_name], *args, **kwargs)

        signature = inspect.signature(function)
        call.__signature__ = signature.replace(parameters=list(signature.parameters.values())[1:])
        call.__module__ = module_name
        return call

    return tuple(bound(function) for function in functions)
