"""NiN in MXNet Gluon (d2l.ai, section "Network in Network").

Use it as the book uses ``d2l``::

    from nin import mxnet as nin
    net = nin.NiN()
    net.initialize()

Importing this module calls ``npx.set_np()``, as the book does: Gluon then takes
and returns ``mxnet.np`` arrays.

Gluon's side of the framework differences, written down once here:

- layout: NCHW, as the neutral description (:mod:`nin.spec`); kernels are O,I,kH,kW.
- padding: integers, as the book gives them.
- activation: ``activation='relu'`` inside each ``Conv2D``.
- input channels: inferred at the first call (deferred initialization); ``NiN``
  keeps ``in_channels`` to refuse other inputs with a clear error.
- global pooling: ``nn.GlobalAvgPool2D`` keeps 1x1, then ``nn.Flatten``.
- blocks are ``HybridSequential`` rather than the book's ``Sequential``, so that
  ``net.hybridize()`` works; they compute the same.
"""

from __future__ import annotations

import numpy

from nin import missing_framework, spec

# MXNet 1.9.1, the last release, still uses ``numpy.bool``, which numpy 1.24 to 1.26
# removed (numpy 2 brought it back): give it back before MXNet is imported.
if "bool" not in vars(numpy):
    numpy.bool = numpy.bool_

try:
    from mxnet import np, npx
    from mxnet.gluon import nn
except ImportError as err:
    raise missing_framework("mxnet") from err

npx.set_np()

__all__ = ["nin_block", "NiN", "summary"]


def nin_block(num_channels: int, kernel_size: int, strides: int, padding: int) -> nn.HybridSequential:
    """A NiN block: one convolution, then two 1x1 convolutions, each followed by ReLU."""
    blk = nn.HybridSequential()
    blk.add(nn.Conv2D(num_channels, kernel_size, strides, padding, activation="relu"))
    for _ in range(spec.NUM_1X1):
        blk.add(nn.Conv2D(num_channels, kernel_size=1, activation="relu"))
    return blk


class NiN(nn.HybridSequential):
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
                self.add(nin_block(layer.out_channels, layer.kernel_size, layer.strides, layer.padding))
            elif isinstance(layer, spec.MaxPool):
                self.add(nn.MaxPool2D(pool_size=layer.pool_size, strides=layer.strides))
            elif isinstance(layer, spec.Dropout):
                self.add(nn.Dropout(layer.rate))
            elif isinstance(layer, spec.GlobalAvgPool):
                self.add(nn.GlobalAvgPool2D())
            elif isinstance(layer, spec.Flatten):
                self.add(nn.Flatten())
        self.num_classes, self.in_channels = num_classes, in_channels

    def forward(self, X):
        if isinstance(X, np.ndarray):  # not when traced as a symbol inside a larger hybrid block
            spec.check_channels(X.shape[1], self.in_channels)
            spec.check_image_size(X.shape[-2], X.shape[-1], self.num_classes)
        return super().forward(X)


def summary(net: NiN, input_shape=(1, spec.IN_CHANNELS, spec.BOOK_RESIZE, spec.BOOK_RESIZE)) -> list[dict]:
    """The book's per-layer table, computed by running ``net`` on a random batch.

    ``input_shape`` is channels-first N,C,H,W in every backend. Each row has the layer's
    ``name``, ``kind`` (see :data:`nin.spec.KINDS`), channels-first ``shape``, the
    ``native_shape`` the framework itself produced (in its own layout, see above) and its
    number of ``params``. A Gluon ``net`` must be initialized first, as in the book.
    """
    spec.check_input_shape(input_shape, net.num_classes)
    spec.check_channels(input_shape[1], net.in_channels)
    X = np.random.uniform(size=tuple(input_shape))
    rows = []
    for layer in net:
        X = layer(X)
        rows.append({
            "name": layer.name,
            "kind": _KINDS[type(layer)],
            "shape": list(X.shape),
            "native_shape": list(X.shape),
            "params": sum(p.data().size for p in layer.collect_params().values()),
        })
    return rows


_KINDS = {nn.HybridSequential: "nin_block", nn.MaxPool2D: "maxpool", nn.Dropout: "dropout",
          nn.GlobalAvgPool2D: "global_avg_pool", nn.Flatten: "flatten"}
