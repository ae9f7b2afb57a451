"""The book's own code for Keras on TensorFlow, as d2l.ai writes it: the reference nin's backend is checked against.

``train_ch6`` and ``load_data`` are d2l's training loop and data loader (without plots, and over
images in memory in place of its download); ``gradients``, ``num_params``, ``layer_outputs`` and
``matmul`` ask the framework itself. The same names in every framework: see :func:`nin.book.module`.
"""

from __future__ import annotations

import time

import numpy as np

from nin import spec
from nin.tf import keras, tf  # Keras on TensorFlow, as nin.tf sets it up

#: whether ``train_ch6`` draws the model's weights (Xavier) itself, or trains those the model was built with
INITIALIZES = False


def seed(value: int) -> None:
    """Seed the framework's global random generator."""
    keras.utils.set_random_seed(value)


def train_ch6(net, train_iter, num_epochs: int, lr: float) -> list[float]:
    """d2l's ``train_ch6`` without its plots; returns each epoch's wall time (data loading included)."""
    # d2l's TensorFlow train_ch6 compiles the model and calls fit (its callback plots and times).


    class Timer(tf.keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.seconds = []

        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.seconds.append(time.perf_counter() - self.start)

    optimizer = tf.keras.optimizers.SGD(learning_rate=lr)
    loss = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    net.compile(optimizer=optimizer, loss=loss, metrics=["accuracy"])
    timer = Timer()
    net.fit(train_iter, epochs=num_epochs, verbose=0, callbacks=[timer])
    return timer.seconds


def load_data(images: np.ndarray, labels: np.ndarray, batch_size: int, resize: int | None):
    """d2l's training iterator over uint8 ``images`` (N,28,28) and ``labels`` in memory."""
    process = lambda X, y: (tf.expand_dims(X, axis=3) / 255, tf.cast(y, dtype="int32"))  # noqa: E731
    resize_fn = lambda X, y: (tf.image.resize_with_pad(X, resize, resize) if resize else X, y)  # noqa: E731
    return tf.data.Dataset.from_tensor_slices(process(images, labels)).batch(batch_size).shuffle(
        len(images)).map(resize_fn)


def gradients(net, X: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray | None]:
    """Each parameter's gradient of the mean cross-entropy on the NCHW batch ``X``, in training mode
    (``None``: no gradient)."""
    with tf.GradientTape() as tape:
        logits = net(X.transpose(0, 2, 3, 1), training=True)
        loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(y, logits))
    grads = tape.gradient(loss, net.trainable_variables)
    return {v.path: None if g is None else g.numpy() for v, g in zip(net.trainable_variables, grads, strict=True)}


def num_params(net) -> int:
    """Keras's own count of the model's parameters."""
    return net.count_params()


def layer_outputs(net, X) -> list[tuple[str, np.ndarray]]:
    """``(kind, output as N,C,H,W numpy)`` for each top-level layer of ``net`` on the framework's batch
    ``X``, in inference mode (``kind`` as in the backend's ``summary``)."""
    out = []
    for layer, kind in zip(net.layers, spec.LAYER_KINDS, strict=True):
        X = layer(X, training=False)
        Y = np.asarray(X)
        out.append((kind, Y.transpose(0, 3, 1, 2) if Y.ndim == 4 else Y))
    return out


def matmul(n: int):
    """A function that computes one float32 ``n`` x ``n`` matrix product in the framework and waits for it."""
    a, b = tf.random.uniform((n, n)), tf.random.uniform((n, n))
    return lambda: tf.linalg.matmul(a, b).numpy()
