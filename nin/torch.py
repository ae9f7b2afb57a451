"""NiN in PyTorch (d2l.ai, section "Network in Network").

Use it as the book uses ``d2l``::

    from nin import torch as nin
    net = nin.NiN()

PyTorch's side of the framework differences, written down once here:

- layout: NCHW, as the neutral description (:mod:`nin.spec`); kernels are O,I,kH,kW.
- padding: integers, as the book gives them.
- activation: separate ``nn.ReLU`` layers after each convolution.
- input channels: given (``in_channels``), since ``nn.Conv2d`` needs them.
- global pooling: ``nn.AdaptiveAvgPool2d((1, 1))`` keeps 1x1, then ``nn.Flatten``.
"""

from __future__ import annotations

from nin import missing_framework, spec

try:
    import torch
    from torch import nn
except ImportError as err:
    raise missing_framework("torch") from err

__all__ = ["nin_block", "NiN", "summary"]


def nin_block(in_channels: int, out_channels: int, kernel_size: int, strides: int,
              padding: int) -> nn.Sequential:
    """A NiN block: one convolution, then two 1x1 convolutions, each followed by ReLU."""
    layers = [nn.Conv2d(in_channels, out_channels, kernel_size, strides, padding), nn.ReLU()]
    for _ in range(spec.NUM_1X1):
        layers += [nn.Conv2d(out_channels, out_channels, kernel_size=1), nn.ReLU()]
    return nn.Sequential(*layers)


class NiN(nn.Sequential):
    """The book's NiN: four NiN blocks, three max-poolings, dropout, global average pooling.

    Args:
        num_classes: output channels of the last block, one logit each.
        in_channels: channels of the input images (1 for Fashion-MNIST).
        dropout: the dropout rate before the last block.

    Images smaller than :func:`nin.spec.min_image_size` are refused with a ``ValueError``.
    """

    def __init__(self, num_classes: int = spec.NUM_CLASSES, in_channels: int = spec.IN_CHANNELS,
                 dropout: float = spec.DROPOUT):
        spec.check_positive_int("in_channels", in_channels)
        layers, channels = [], in_channels
        for layer in spec.architecture(num_classes, dropout):
            if isinstance(layer, spec.NinBlock):
                layers.append(nin_block(channels, layer.out_channels, layer.kernel_size,
                                        layer.strides, layer.padding))
                channels = layer.out_channels
            elif isinstance(layer, spec.MaxPool):
                layers.append(nn.MaxPool2d(layer.pool_size, stride=layer.strides))
            elif isinstance(layer, spec.Dropout):
                layers.append(nn.Dropout(layer.rate))
            elif isinstance(layer, spec.GlobalAvgPool):
                layers.append(nn.AdaptiveAvgPool2d((1, 1)))
            elif isinstance(layer, spec.Flatten):
                layers.append(nn.Flatten())
        super().__init__(*layers)
        self.num_classes, self.in_channels = num_classes, in_channels

    def forward(self, X: torch.Tensor) -> torch.Tensor:
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
    X = torch.rand(size=tuple(input_shape))
    rows = []
    with torch.no_grad():
        for layer in net:
            X = layer(X)
            rows.append({
                "name": layer.__class__.__name__,
                "kind": _KINDS[type(layer)],
                "shape": list(X.shape),
                "native_shape": list(X.shape),
                "params": sum(p.numel() for p in layer.parameters()),
            })
    return rows


_KINDS = {nn.Sequential: "nin_block", nn.MaxPool2d: "maxpool", nn.Dropout: "dropout",
          nn.AdaptiveAvgPool2d: "global_avg_pool", nn.Flatten: "flatten"}
