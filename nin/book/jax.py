"""The book's own code for JAX with Flax NNX, as d2l.ai writes it: the reference nin's backend is checked against.

``train_ch6`` and ``load_data`` are d2l's training loop and data loader (without plots, and over
images in memory in place of its download); ``gradients``, ``num_params``, ``layer_outputs`` and
``matmul`` ask the framework itself. The same names in every framework: see :func:`nin.book.module`.
"""

from __future__ import annotations

import time

import numpy as np

from nin import spec
from nin.jax import jax, jnp, nnx, optax  # JAX and Flax NNX, as nin.jax imports them

#: whether ``train_ch6`` draws the model's weights (Xavier) itself, or trains those the model was built with
INITIALIZES = False


def seed(value: int) -> None:
    """Seed the framework's global random generator: JAX has none (every draw takes an explicit key, and a
    model draws from the ``nnx.Rngs`` it is built with), so there is nothing to seed."""


def train_ch6(net, train_iter, num_epochs: int, lr: float) -> list[float]:
    """d2l's ``train_ch6`` without its plots; returns each epoch's wall time (data loading included)."""
    # d2l's JAX code trains the weights the model was built with: optax SGD on the mean cross-entropy,
    # one jitted step that computes the loss, its gradients and the update.
    optimizer = optax.sgd(lr)
    opt_state = optimizer.init(nnx.state(net, nnx.Param))

    @nnx.jit
    def train_step(net, opt_state, X, y):
        def loss(net):
            y_hat = net(X)
            return optax.softmax_cross_entropy_with_integer_labels(y_hat, y).mean(), y_hat

        (l, y_hat), grads = nnx.value_and_grad(loss, has_aux=True)(net)
        params = nnx.state(net, nnx.Param)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        nnx.update(net, optax.apply_updates(params, updates))
        return opt_state, l, y_hat

    net.train()
    seconds = []
    for _ in range(num_epochs):
        start, metric = time.perf_counter(), [0.0, 0.0, 0]
        for X, y in train_iter:
            opt_state, l, y_hat = train_step(net, opt_state, X, y)
            metric = [metric[0] + float(l * X.shape[0]), metric[1] + float((y_hat.argmax(axis=1) == y).sum()),
                      metric[2] + X.shape[0]]
        seconds.append(time.perf_counter() - start)
    return seconds


def load_data(images: np.ndarray, labels: np.ndarray, batch_size: int, resize: int | None):
    """d2l's training iterator over uint8 ``images`` (N,28,28) and ``labels`` in memory."""
    # d2l's JAX loader is a tf.data pipeline (expand_dims, / 255, resize_with_pad, batch, shuffle) read
    # as numpy; here the same steps in numpy and jax.image.resize, so that JAX needs no TensorFlow.
    # resize_with_pad of a square image to a square is a plain bilinear resize.

    class FashionMNIST:
        def __len__(self):
            return -(-len(images) // batch_size)

        def __iter__(self):
            order = np.random.permutation(len(images))
            for start in range(0, len(images), batch_size):
                batch = order[start:start + batch_size]
                X = jnp.asarray(images[batch][..., None], dtype=jnp.float32) / 255
                if resize:
                    X = jax.image.resize(X, (len(batch), resize, resize, 1), method="bilinear")
                yield X, jnp.asarray(labels[batch], dtype=jnp.int32)

    return FashionMNIST()


def gradients(net, X: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray | None]:
    """Each parameter's gradient of the mean cross-entropy on the NCHW batch ``X``, in training mode
    (``None``: no gradient)."""
    net.train()

    def loss(net):
        logits = net(jnp.asarray(X.transpose(0, 2, 3, 1)))
        return optax.softmax_cross_entropy_with_integer_labels(logits, jnp.asarray(y)).mean()

    grads = nnx.grad(loss)(net)
    return {jax.tree_util.keystr(path): np.asarray(g) for path, g in jax.tree_util.tree_leaves_with_path(grads)}


def num_params(net) -> int:
    """Flax's own count of the model's parameters (the sizes of its ``nnx.Param`` variables)."""
    return sum(p.size for p in jax.tree.leaves(nnx.state(net, nnx.Param)))


def layer_outputs(net, X) -> list[tuple[str, np.ndarray]]:
    """``(kind, output as N,C,H,W numpy)`` for each top-level layer of ``net`` on the framework's batch
    ``X``, in inference mode (``kind`` as in the backend's ``summary``)."""
    net.eval()
    out = []
    for layer, kind in zip(net.layers, spec.LAYER_KINDS, strict=True):
        X = layer(X)
        Y = np.asarray(X)
        out.append((kind, Y.transpose(0, 3, 1, 2) if Y.ndim == 4 else Y))
    return out


def matmul(n: int):
    """A function that computes one float32 ``n`` x ``n`` matrix product in the framework and waits for it."""
    a, b = jax.random.uniform(jax.random.key(0), (n, n)), jax.random.uniform(jax.random.key(1), (n, n))
    product = jax.jit(jnp.matmul)
    return lambda: product(a, b).block_until_ready()
