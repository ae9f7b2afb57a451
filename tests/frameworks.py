"""What the tests do the same way in every framework, written once per framework.

Inputs are numpy arrays in the neutral channels-first layout; each function converts
them to the framework's own tensors and layout, runs the framework, and converts back.
"""

from __future__ import annotations

import numpy as np


def forward(name: str, net, X: np.ndarray) -> np.ndarray:
    """Logits of ``net`` for the NCHW batch ``X``, in inference mode."""
    return _FORWARD[name](net, X)


def gradients(name: str, net, X: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray | None]:
    """Each parameter's gradient of the mean cross-entropy, in training mode (``None``: no gradient)."""
    return _GRADIENTS[name](net, X, y)


def num_params(name: str, net) -> int:
    """The framework's own count of the model's parameters."""
    return _NUM_PARAMS[name](net)


def _forward_torch(net, X):
    import torch

    net.eval()
    with torch.no_grad():
        return net(torch.from_numpy(X)).numpy()


def _forward_mxnet(net, X):
    from mxnet import np as mnp

    return net(mnp.array(X)).asnumpy()


def _forward_tf(net, X):
    return net(X.transpose(0, 2, 3, 1), training=False).numpy()


def _gradients_torch(net, X, y):
    import torch

    net.train()
    loss = torch.nn.functional.cross_entropy(net(torch.from_numpy(X)), torch.from_numpy(y))
    loss.backward()
    return {name: None if p.grad is None else p.grad.numpy() for name, p in net.named_parameters()}


def _gradients_mxnet(net, X, y):
    from mxnet import autograd, gluon
    from mxnet import np as mnp

    with autograd.record():
        loss = gluon.loss.SoftmaxCrossEntropyLoss()(net(mnp.array(X)), mnp.array(y)).mean()
    loss.backward()
    return {name: p.grad().asnumpy() for name, p in net.collect_params().items()}


def _gradients_tf(net, X, y):
    import tensorflow as tf

    with tf.GradientTape() as tape:
        logits = net(X.transpose(0, 2, 3, 1), training=True)
        loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(y, logits))
    grads = tape.gradient(loss, net.trainable_variables)
    return {v.path: None if g is None else g.numpy() for v, g in zip(net.trainable_variables, grads, strict=True)}


_FORWARD = {"mxnet": _forward_mxnet, "torch": _forward_torch, "tf": _forward_tf}
_GRADIENTS = {"mxnet": _gradients_mxnet, "torch": _gradients_torch, "tf": _gradients_tf}
_NUM_PARAMS = {
    "mxnet": lambda net: sum(p.data().size for p in net.collect_params().values()),
    "torch": lambda net: sum(p.numel() for p in net.parameters()),
    "tf": lambda net: net.count_params(),
}
