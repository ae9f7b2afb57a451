"""NiN in Keras on TensorFlow (d2l.ai, section "Network in Network").

Use it as the book uses ``d2l``::

    from nin import tf as nin
    net = nin.NiN()

Keras's side of the framework differences, written down once here:

- layout: NHWC (channels last); kernels are kH,kW,I,O. Everything this module
  takes or reports in the neutral description's channels-first layout
  (``input_shape``, summary ``shape``) is converted here, and only here.
- padding: ``'valid'`` or ``'same'`` rather than integers. NiN only pads by
  ``(kernel_size - 1) // 2`` at stride 1 with odd kernels, which is exactly
  ``'same'``; no padding is ``'valid'`` (see :func:`_keras_padding`).
- activation: ``activation='relu'`` inside each ``Conv2D``.
- input channels: inferred at build; ``NiN`` builds itself for ``in_channels``.
- global pooling: ``GlobalAveragePooling2D(keepdims=True)`` keeps 1x1, then
  ``Flatten``; the book's ``Reshape((1, 1, 10))`` is not needed.
"""

from __future__ import annotations

import os

from nin import missing_framework, spec

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
try:
    import tensorflow as tf
    from tensorflow import keras
except ImportError as err:
    raise missing_framework("tf") from err
if keras.backend.backend() != "tensorflow":
    raise ImportError(f"the 'tf' backend needs Keras on TensorFlow, but Keras runs on "
                      f"{keras.backend.backend()!r}: unset KERAS_BACKEND or set it to 'tensorflow'")

__all__ = ["nin_block", "NiN", "summary"]


def nin_block(num_channels: int, kernel_size: int, strides: int, padding: str) -> keras.Sequential:
    """A NiN block: one convolution, then two 1x1 convolutions, each followed by ReLU."""
    layers = [keras.layers.Conv2D(num_channels, kernel_size, strides=strides, padding=padding,
                                  activation="relu")]
    for _ in range(spec.NUM_1X1):
        layers.append(keras.layers.Conv2D(num_channels, kernel_size=1, activation="relu"))
    return keras.Sequential(layers)


class NiN(keras.Sequential):
    """The book's NiN: four NiN blocks, three max-poolings, dropout, global average pooling.

    Args:
        num_classes: output channels of the last block, one logit each.
        in_channels: channels of the input images (1 for Fashion-MNIST).
        dropout: the dropout rate before the last block.

    Images smaller than :func:`nin.spec.min_image_size` are refused with a ``ValueError``.
    """

    def __init__(self, num_classes: int = spec.NUM_CLASSES, in_channels: int = spec.IN_CHANNELS,
                 dropout: float = spec.DROPOUT):
        super().__init__()
        spec.check_positive_int("in_channels", in_channels)
        for layer in spec.architecture(num_classes, dropout):
            if isinstance(layer, spec.NinBlock):
                self.add(nin_block(layer.out_channels, layer.kernel_size, layer.strides,
                                   _keras_padding(layer)))
            elif isinstance(layer, spec.MaxPool):
                self.add(keras.layers.MaxPool2D(pool_size=layer.pool_size, strides=layer.strides))
            elif isinstance(layer, spec.Dropout):
                self.add(keras.layers.Dropout(layer.rate))
            elif isinstance(layer, spec.GlobalAvgPool):
                self.add(keras.layers.GlobalAveragePooling2D(keepdims=True))
            elif isinstance(layer, spec.Flatten):
                self.add(keras.layers.Flatten())
        self.num_classes, self.in_channels = num_classes, in_channels
        self.build((None, None, None, in_channels))

    def call(self, inputs, training=None, mask=None, **kwargs):
        _, height, width, channels = inputs.shape
        if None not in (height, width, channels):  # unknown while Keras traces a graph
            spec.check_channels(channels, self.in_channels)
            spec.check_image_size(height, width, self.num_classes)
        return super().call(inputs, training=training, mask=mask, **kwargs)


def summary(net: NiN, input_shape=(1, spec.IN_CHANNELS, spec.BOOK_RESIZE, spec.BOOK_RESIZE)) -> list[dict]:
    """The book's per-layer table, computed by running ``net`` on a random batch.

    ``input_shape`` is channels-first N,C,H,W in every backend. Each row has the layer's
    ``name``, ``kind`` (see :data:`nin.spec.KINDS`), channels-first ``shape``, the
    ``native_shape`` the framework itself produced (in its own layout, see above) and its
    number of ``params``. A Gluon ``net`` must be initialized first, as in the book.
    """
    spec.check_input_shape(input_shape, net.num_classes)
    spec.check_channels(input_shape[1], net.in_channels)
    n, c, h, w = input_shape
    X = tf.random.uniform((n, h, w, c))
    rows = []
    for layer in net.layers:
        X = layer(X)
        rows.append({
            "name": layer.__class__.__name__,
            "kind": _KINDS[type(layer)],
            "shape": _channels_first(X.shape),
            "native_shape": list(X.shape),
            "params": layer.count_params(),
        })
    return rows


def _keras_padding(block: spec.NinBlock) -> str:
    """The neutral description's integer padding as Keras's ``'valid'`` or ``'same'``."""
    if block.padding == 0:
        return "valid"
    if block.strides == 1 and block.kernel_size % 2 == 1 and block.padding == block.kernel_size // 2:
        return "same"
    raise ValueError(f"Keras cannot pad {block.padding} around a {block.kernel_size}x"
                     f"{block.kernel_size} convolution at stride {block.strides} with 'valid' or 'same'")


def _channels_first(shape) -> list[int]:
    """NHWC to NCHW; 2-D shapes (after Flatten) are the same in both layouts."""
    shape = list(shape)
    return [shape[0], shape[3], shape[1], shape[2]] if len(shape) == 4 else shape


_KINDS = {keras.Sequential: "nin_block", keras.layers.MaxPool2D: "maxpool",
          keras.layers.Dropout: "dropout", keras.layers.GlobalAveragePooling2D: "global_avg_pool",
          keras.layers.Flatten: "flatten"}
