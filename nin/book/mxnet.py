"""The book's own code for MXNet Gluon, as d2l.ai writes it: the reference nin's backend is checked against.

``train_ch6`` and ``load_data`` are d2l's training loop and data loader (without plots, and over
images in memory in place of its download); ``gradients``, ``num_params``, ``layer_outputs`` and
``matmul`` ask the framework itself. The same names in every framework: see :func:`nin.book.module`.
"""

from __future__ import annotations

import time

import numpy as np

# MXNet as nin.mxnet imports it (with the numpy shim and thread count it needs)
from nin import spec
from nin.mxnet import autograd, gluon, mx
from nin.mxnet import np as mnp

#: whether ``train_ch6`` draws the model's weights (Xavier) itself, or trains those the model was built with
INITIALIZES = True


def seed(value: int) -> None:
    """Seed the framework's global random generator."""
    mx.random.seed(value)


def train_ch6(net, train_iter, num_epochs: int, lr: float) -> list[float]:
    """d2l's ``train_ch6`` without its plots; returns each epoch's wall time (data loading included)."""
    device = mx.cpu()
    net.initialize(force_reinit=True, ctx=device, init=mx.init.Xavier())
    loss = gluon.loss.SoftmaxCrossEntropyLoss()
    trainer = gluon.Trainer(net.collect_params(), "sgd", {"learning_rate": lr})
    seconds = []
    for _ in range(num_epochs):
        start, metric = time.perf_counter(), [0.0, 0.0, 0]
        for X, y in train_iter:
            X, y = X.as_in_ctx(device), y.as_in_ctx(device)
            with autograd.record():
                y_hat = net(X)
                l = loss(y_hat, y)
            l.backward()
            trainer.step(X.shape[0])
            metric = [metric[0] + float(l.sum()), metric[1] + float((y_hat.argmax(axis=1).astype(y.dtype) == y).sum()),
                      metric[2] + X.shape[0]]
        seconds.append(time.perf_counter() - start)
    return seconds


def load_data(images: np.ndarray, labels: np.ndarray, batch_size: int, resize: int | None):
    """d2l's training iterator over uint8 ``images`` (N,28,28) and ``labels`` in memory."""
    dataset = gluon.data.vision
    trans = [dataset.transforms.ToTensor()]
    if resize:
        trans.insert(0, dataset.transforms.Resize(resize))
    trans = dataset.transforms.Compose(trans)
    mnist_train = gluon.data.ArrayDataset(mnp.array(images[..., None], dtype="uint8"), labels).transform_first(trans)
    return gluon.data.DataLoader(mnist_train, batch_size, shuffle=True, num_workers=4)


def gradients(net, X: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray | None]:
    """Each parameter's gradient of the mean cross-entropy on the NCHW batch ``X``, in training mode
    (``None``: no gradient)."""
    with autograd.record():
        loss = gluon.loss.SoftmaxCrossEntropyLoss()(net(mnp.array(X)), mnp.array(y, dtype="float32")).mean()
    loss.backward()
    return {name: p.grad().asnumpy() for name, p in net.collect_params().items()}


def num_params(net) -> int:
    """Gluon's own count of the model's parameters."""
    return sum(p.data().size for p in net.collect_params().values())


def layer_outputs(net, X) -> list[tuple[str, np.ndarray]]:
    """``(kind, output as N,C,H,W numpy)`` for each top-level layer of ``net`` on the framework's batch
    ``X``, in inference mode (``kind`` as in the backend's ``summary``)."""
    out = []
    for layer, kind in zip(net, spec.LAYER_KINDS, strict=True):  # outside autograd.record(): inference mode
        X = layer(X)
        out.append((kind, X.asnumpy()))
    return out


def matmul(n: int):
    """A function that computes one float32 ``n`` x ``n`` matrix product in the framework and waits for it."""
    a, b = mnp.random.uniform(size=(n, n)), mnp.random.uniform(size=(n, n))
    return lambda: mnp.dot(a, b).wait_to_read()
