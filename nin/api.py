"""The book's functions, written once for every backend.

A backend module (``nin/mxnet.py``, ``nin/torch.py``, ``nin/tf.py``, ``nin/jax.py``) holds what its framework
writes its own way: ``nin_block``, ``NiN``, ``summary``, and the small hooks of :class:`Backend`
(the same names and signatures in every backend; ``tests/test_contract.py`` checks them). The
rest, the same in every framework, is here, and each backend binds it under the book's names::

    load_data_fashion_mnist, train, evaluate_accuracy, predict, save_weights, load_weights = api.bind(__name__)

Every function here takes the backend module first; the bound ones do not.
"""

from __future__ import annotations

import functools
import inspect
import sys
from types import ModuleType
from typing import Protocol

import numpy as np

from nin import data, training, weights


class NoExporter(ValueError):
    """A backend's ``to_onnx`` hook where the framework's own ONNX exporter cannot run here."""


#: what every backend module offers under the book's names, in its ``__all__``
BOOK_NAMES = ("nin_block", "NiN", "summary", "load_data_fashion_mnist", "train", "evaluate_accuracy", "predict",
              "save_weights", "load_weights")

class Backend(Protocol):
    """The contract of a backend module (``nin/<name>.py``): beside the book's names (:data:`BOOK_NAMES`), these
    small hooks, with these signatures, through which the code written once (here, :mod:`nin.training`,
    :mod:`nin.export`) reaches the framework. ``tests/test_contract.py`` checks every backend against it."""

    #: the precisions ``train`` offers: float32 everywhere, bfloat16 where the backend has it
    PRECISIONS: tuple[str, ...]

    def default_device(self):
        """The device training runs on when none is given: a GPU if there is one, else the CPU."""

    def from_numpy(self, X):
        """A numpy batch as the framework's tensor: images N,C,H,W into the model's layout."""

    def to_numpy(self, X):
        """The framework's tensor as numpy: images back to N,C,H,W."""

    def loader(self, split, sampler, resize):
        """Batches ``(X, y)`` of a :data:`nin.data.Split`, in the sampler's order, resized."""

    def init_weights(self, net, init, seed) -> None:
        """Seed the framework, then draw the weights of one of :data:`nin.inits.WEIGHT_INITS` (None: keep them)."""

    def get_weights(self, net) -> dict:
        """The weights as canonical numpy arrays (:func:`nin.spec.weight_shapes`)."""

    def set_weights(self, net, tensors) -> None:
        """Canonical weights in; all are checked before any is set."""

    def seed_epoch(self, net, seed) -> None:
        """Seed the random generators an epoch draws from (dropout)."""

    def trainer(self, net, device, precision, clip, world):
        """A context manager giving ``step(X, y, lr, total) -> (loss sum, correct, examples)`` on batch ``X``, which
        is this worker's part of a batch of ``total`` examples (all of it in one process): the weights move
        along the gradient of the whole batch's mean loss, combined over the workers of ``world`` (a
        :class:`nin.workers.World`; None: one process) by the framework's engine. ``clip``: None, or the
        largest norm of that gradient."""

    def logits(self, net, X, device=None):
        """The logits of batch ``X`` as numpy, in inference mode."""

    def to_onnx(self, net, path, opset) -> None:
        """The framework's own ONNX exporter, N,C,H,W input (:class:`NoExporter` where it cannot run)."""

    def join(self, world) -> None:
        """Start this worker's part of the framework's distributed engine, for the :class:`nin.workers.World`
        ``world``: once, in a process started by :func:`nin.workers.launch`, before any other framework call."""

    def all_sum(self, values) -> np.ndarray:
        """The sums of the float64 ``values`` over every worker, through the engine (after :meth:`join`)."""


#: the hooks of :class:`Backend`, in order
HOOKS = ("PRECISIONS", *(name for name in vars(Backend) if not name.startswith("_") and callable(vars(Backend)[name])))


def load_data_fashion_mnist(backend: ModuleType, batch_size: int, resize: int | None = None, root=None, *,
                            limit_train: int | None = None, limit_test: int | None = None,
                            seed: int | None = None, download: bool = True, world=None):
    """Fashion-MNIST as the book's ``d2l.load_data_fashion_mnist``: ``(train_iter, test_iter)``.

    Batches ``(X, y)`` hold float32 images in [0, 1], in the layout the model takes, resized
    bilinearly to ``resize`` x ``resize`` a whole batch at a time, and integer labels.
    The training batches are shuffled anew each epoch (see :class:`nin.data.BatchSampler`);
    the test batches are not. Files come from ``root``, ``$NIN_DATA`` or the cache directory
    (:func:`nin.data.load_fashion_mnist`); ``limit_train`` and ``limit_test`` keep the first examples.
    A worker of data-parallel training (``world``, a :class:`nin.workers.World`) gets its part of each batch.
    """
    train_split, test_split = data.load_splits(root, resize, limit_train, limit_test, download)
    return (backend.loader(train_split, data.BatchSampler(len(train_split[0]), batch_size, True, seed, world), resize),
            backend.loader(test_split, data.BatchSampler(len(test_split[0]), batch_size, False, world=world), resize))


def evaluate_accuracy(backend: ModuleType, net, data_iter, device=None) -> float:
    """The fraction of examples in ``data_iter`` that ``net`` classifies right, in evaluation mode."""
    correct, examples = training.counts(backend, net, data_iter, device)
    return correct / examples


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


BOOK_FUNCTIONS = (load_data_fashion_mnist, training.train, evaluate_accuracy, predict, save_weights, load_weights)


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
