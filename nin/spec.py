"""The book's NiN as data, and the arithmetic of its shapes and parameters.

This module imports no framework. It is the reference that every backend is
checked against: the backends build their layers from :func:`architecture` and
the tests compare what the frameworks compute with :func:`layer_table`.

Shapes here are always channels-first: ``(N, C, H, W)`` for images and
``(N, F)`` after flattening (d2l.ai, section "Network in Network").
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass

#: Defaults of the book's model and of every backend's ``NiN`` builder.
NUM_CLASSES = 10
IN_CHANNELS = 1
DROPOUT = 0.5
#: The input size the book resizes Fashion-MNIST's 28x28 images to.
BOOK_RESIZE = 224
#: The 1x1 convolutions that follow the first convolution of a block: the book's, and the variants.
NUM_1X1 = 2
NUM_1X1_CHOICES = (0, 1, 2)
#: How the last block reduces 384 channels to the class count: the book's, and exercise 4's.
HEAD = "one-step"
HEADS = ("one-step", "gradual")

#: The kinds of top-level layer, as they appear in summaries.
KINDS = ("nin_block", "maxpool", "dropout", "global_avg_pool", "flatten")


@dataclass(frozen=True)
class NinBlock:
    """A k x k convolution followed by 1x1 convolutions, each with ReLU.

    ``channels`` are the output channels of each convolution in turn: the book's blocks
    keep one width, ``(c, c, c)``; the gradual head narrows step by step.
    """

    channels: tuple[int, ...]
    kernel_size: int
    strides: int
    padding: int
    kind = "nin_block"

    @property
    def out_channels(self) -> int:
        return self.channels[-1]

    @property
    def num_1x1(self) -> int:
        return len(self.channels) - 1

    def convs(self, in_channels: int) -> list[tuple[int, int, int, int, int]]:
        """The block's convolutions as ``(in, out, kernel, stride, padding)``."""
        ins = (in_channels, *self.channels[:-1])
        return [(i, o, self.kernel_size, self.strides, self.padding) if n == 0 else (i, o, 1, 1, 0)
                for n, (i, o) in enumerate(zip(ins, self.channels, strict=True))]

    def output_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        n, _, h, w = shape
        return (n, self.out_channels, _conv_size(h, self.kernel_size, self.strides, self.padding),
                _conv_size(w, self.kernel_size, self.strides, self.padding))

    def params(self, in_channels: int) -> int:
        return sum(k * k * i * o + o for i, o, k, _, _ in self.convs(in_channels))


@dataclass(frozen=True)
class MaxPool:
    """Max pooling without padding; a partial last window is dropped (floor mode)."""

    pool_size: int = 3
    strides: int = 2
    kind = "maxpool"

    def output_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        n, c, h, w = shape
        return (n, c, _conv_size(h, self.pool_size, self.strides, 0),
                _conv_size(w, self.pool_size, self.strides, 0))

    def params(self, in_channels: int) -> int:
        return 0


@dataclass(frozen=True)
class Dropout:
    """Dropout; the rate is the model builder's ``dropout`` argument."""

    rate: float = DROPOUT
    kind = "dropout"

    def output_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        return shape

    def params(self, in_channels: int) -> int:
        return 0


@dataclass(frozen=True)
class GlobalAvgPool:
    """Average over the whole height and width, keeping them as 1x1."""

    kind = "global_avg_pool"

    def output_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        n, c, _, _ = shape
        return (n, c, 1, 1)

    def params(self, in_channels: int) -> int:
        return 0


@dataclass(frozen=True)
class Flatten:
    """``(N, C, 1, 1)`` to ``(N, C)``: the logits."""

    kind = "flatten"

    def output_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        n, *rest = shape
        size = 1
        for d in rest:
            size *= d
        return (n, size)

    def params(self, in_channels: int) -> int:
        return 0


Layer = NinBlock | MaxPool | Dropout | GlobalAvgPool | Flatten


def architecture(num_classes: int = NUM_CLASSES, dropout: float = DROPOUT, num_1x1: int = NUM_1X1,
                 head: str = HEAD) -> tuple[Layer, ...]:
    """The book's NiN: ten top-level layers, in the book's order.

    Args:
        num_classes: output channels of the last block, one logit each.
        dropout: the dropout rate before the last block.
        num_1x1: 1x1 convolutions per block (the book's 2; 1 or 0 for exercise 2).
        head: how the last block goes from 384 channels to ``num_classes``: the book's
            ``"one-step"`` (its first convolution does it all), or ``"gradual"`` (exercise 4:
            each of its convolutions narrows by the same factor, 384 -> 114 -> 34 -> 10).
    """
    check_model(num_classes, dropout, num_1x1, head)

    def block(channels, kernel_size, strides, padding):
        return NinBlock(block_channels(channels, num_1x1), kernel_size, strides, padding)

    return (
        block(96, kernel_size=11, strides=4, padding=0),
        MaxPool(pool_size=3, strides=2),
        block(256, kernel_size=5, strides=1, padding=2),
        MaxPool(pool_size=3, strides=2),
        block(384, kernel_size=3, strides=1, padding=1),
        MaxPool(pool_size=3, strides=2),
        Dropout(dropout),
        # One output channel per class, then global average pooling: no dense layer.
        block(head_channels(num_classes, num_1x1, head), kernel_size=3, strides=1, padding=1),
        GlobalAvgPool(),
        Flatten(),
    )


def check_model(num_classes: int = NUM_CLASSES, dropout: float = DROPOUT, num_1x1: int = NUM_1X1,
                head: str = HEAD) -> None:
    """Refuse the arguments of a ``NiN`` that :func:`architecture` cannot build, saying which."""
    check_positive_int("num_classes", num_classes)
    if isinstance(dropout, bool) or not isinstance(dropout, int | float) or not 0 <= dropout < 1:
        raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
    if isinstance(num_1x1, bool) or num_1x1 not in NUM_1X1_CHOICES:
        raise ValueError(f"num_1x1 must be one of {', '.join(map(str, NUM_1X1_CHOICES))}, got {num_1x1!r}")
    if head not in HEADS:
        raise ValueError(f"head must be one of {', '.join(HEADS)}, got {head!r}")


def head_channels(num_classes: int = NUM_CLASSES, num_1x1: int = NUM_1X1, head: str = HEAD):
    """The last block's width: ``num_classes`` (the book's one-step head), or for the gradual head
    (exercise 4) the output channels of each of its convolutions, narrowing from 384 by one factor."""
    return num_classes if head == "one-step" else _geometric(384, num_classes, 1 + num_1x1)


#: the kind of each of the ten top-level layers of :func:`architecture`, in order: every backend's ``NiN``
#: has its layers in this order (``tests/test_spec.py`` checks it against :func:`architecture`)
LAYER_KINDS = ("nin_block", "maxpool", "nin_block", "maxpool", "nin_block", "maxpool", "dropout", "nin_block",
               "global_avg_pool", "flatten")


def channels_first(shape) -> list[int]:
    """A channels-last shape (N,H,W,C) as channels-first (N,C,H,W); 2-D shapes (after the flatten) are the same."""
    shape = list(shape)
    return [shape[0], shape[3], shape[1], shape[2]] if len(shape) == 4 else shape


def walk(on: dict, num_classes: int = NUM_CLASSES, num_1x1: int = NUM_1X1, head: str = HEAD,
         in_channels: int = IN_CHANNELS) -> list:
    """Walk the architecture in order, for the framework-free code that follows it layer by layer (the ONNX
    export, the primed init's numpy forward pass): call ``on[layer.kind](layer, convs)`` for each layer whose
    kind ``on`` names, where ``convs`` lists a NiN block's convolutions as ``(canonical name, in, out, kernel,
    stride, padding)`` (empty for the other kinds). Returns what the calls returned, in order."""
    results, channels, b = [], in_channels, 0
    for layer in architecture(num_classes, num_1x1=num_1x1, head=head):
        convs = []
        if isinstance(layer, NinBlock):
            convs = [(f"blocks.{b}.convs.{c}", *conv) for c, conv in enumerate(layer.convs(channels))]
            channels, b = layer.out_channels, b + 1
        if layer.kind in on:
            results.append(on[layer.kind](layer, convs))
    return results


def named_convs(blocks) -> list[tuple[str, object]]:
    """``(canonical name, convolution)`` for each convolution of ``blocks`` (each block: its convolutions, in
    order), in model order: the names of :func:`weight_shapes`, which a backend's ``_convs`` gives its layers."""
    return [(f"blocks.{b}.convs.{c}", conv) for b, convs in enumerate(blocks) for c, conv in enumerate(convs)]


def block_channels(num_channels, num_1x1: int = NUM_1X1) -> tuple[int, ...]:
    """The output channels of each convolution of a block: ``num_channels`` repeated for the first
    convolution and its ``num_1x1`` 1x1 ones, or, given a sequence, that sequence (of length
    ``1 + num_1x1``: the gradual head's narrowing block)."""
    if isinstance(num_channels, int):
        check_positive_int("num_channels", num_channels)
        return (num_channels,) * (1 + num_1x1)
    channels = tuple(num_channels)
    if len(channels) != 1 + num_1x1:
        raise ValueError(f"a block with num_1x1={num_1x1} has {1 + num_1x1} convolutions, "
                         f"but {len(channels)} widths were given: {channels}")
    for c in channels:
        check_positive_int("num_channels", c)
    return channels


def _geometric(start: int, end: int, steps: int) -> tuple[int, ...]:
    """``steps`` widths from ``start`` (excluded) to ``end`` (included), each the same factor apart."""
    return tuple(round(start * (end / start) ** (i / steps)) for i in range(1, steps)) + (end,)


@dataclass(frozen=True)
class LayerRow:
    """One row of a summary: what a layer outputs and how many parameters it holds."""

    kind: str
    shape: tuple[int, ...]
    params: int


def layer_table(input_shape: tuple[int, int, int, int] = (1, IN_CHANNELS, BOOK_RESIZE, BOOK_RESIZE),
                num_classes: int = NUM_CLASSES, num_1x1: int = NUM_1X1, head: str = HEAD) -> list[LayerRow]:
    """Each layer's channels-first output shape and parameter count for ``input_shape``.

    Raises:
        ValueError: if the shape is malformed or the images are smaller than NiN accepts.
    """
    check_input_shape(input_shape, num_classes)
    return _rows(tuple(input_shape), architecture(num_classes, num_1x1=num_1x1, head=head))


def total_params(in_channels: int = IN_CHANNELS, num_classes: int = NUM_CLASSES, num_1x1: int = NUM_1X1,
                 head: str = HEAD) -> int:
    """The model's parameter count; it does not depend on the image size."""
    check_positive_int("in_channels", in_channels)
    channels, total = in_channels, 0
    for layer in architecture(num_classes, num_1x1=num_1x1, head=head):
        total += layer.params(channels)
        if isinstance(layer, NinBlock):
            channels = layer.out_channels
    return total


def weight_shapes(in_channels: int = IN_CHANNELS, num_classes: int = NUM_CLASSES, num_1x1: int = NUM_1X1,
                  head: str = HEAD) -> dict[str, tuple[int, ...]]:
    """The canonical name and shape of every weight, in every backend's weights files.

    ``blocks.{b}.convs.{c}.weight`` is ``(out, in, kH, kW)`` and ``blocks.{b}.convs.{c}.bias``
    is ``(out,)``, for the ``b``-th NiN block and its ``c``-th convolution, in model order.
    """
    check_positive_int("in_channels", in_channels)
    shapes = {}
    blocks = [layer for layer in architecture(num_classes, num_1x1=num_1x1, head=head)
              if isinstance(layer, NinBlock)]
    channels = in_channels
    for b, block in enumerate(blocks):
        for c, (i, o, k, _, _) in enumerate(block.convs(channels)):
            shapes[f"blocks.{b}.convs.{c}.weight"] = (o, i, k, k)
            shapes[f"blocks.{b}.convs.{c}.bias"] = (o,)
        channels = block.out_channels
    return shapes


def check_weights(tensors: dict, in_channels: int, num_classes: int, num_1x1: int = NUM_1X1,
                  head: str = HEAD) -> None:
    """Refuse weights whose names, shapes or dtype do not fit the model, saying which differ."""
    expected = weight_shapes(in_channels, num_classes, num_1x1, head)
    missing = [name for name in expected if name not in tensors]
    extra = [name for name in tensors if name not in expected]
    wrong = [f"{name} is {tuple(tensors[name].shape)}, the model's is {shape}" for name, shape in expected.items()
             if name in tensors and tuple(tensors[name].shape) != shape]
    dtypes = sorted({str(t.dtype) for t in tensors.values()} - {"float32"})
    problems = ([f"missing: {', '.join(missing)}"] if missing else []) + (
        [f"unexpected: {', '.join(extra)}"] if extra else []) + wrong + (
        [f"dtype {', '.join(dtypes)} where float32 is expected"] if dtypes else [])
    if problems:
        raise ValueError(f"these weights do not fit NiN(num_classes={num_classes}, in_channels={in_channels}, "
                         f"num_1x1={num_1x1}, head={head!r}): " + "; ".join(problems))


def min_image_size(num_classes: int = NUM_CLASSES) -> int:
    """The smallest height (and width) for which every layer has an output of at least 1."""
    layers = architecture(num_classes)
    size = 1
    while not _fits(layers, size):
        size += 1
    return size


def check_input_shape(input_shape, num_classes: int = NUM_CLASSES) -> None:
    """Refuse, with a message that says what to do, an input NiN cannot take.

    ``input_shape`` is channels-first ``(N, C, H, W)``.
    """
    check_positive_int("num_classes", num_classes)
    shape = tuple(input_shape)
    if len(shape) != 4:
        raise ValueError(f"input shape must be N,C,H,W (4 numbers), got {','.join(map(str, shape))}")
    for name, d in zip("NCHW", shape, strict=True):
        check_positive_int(f"input shape {name}", d)
    check_image_size(shape[2], shape[3], num_classes)


def check_image_size(height: int, width: int, num_classes: int = NUM_CLASSES) -> None:
    """Refuse images too small for NiN's convolutions and poolings, before any framework sees them."""
    smallest = min_image_size(num_classes)
    if height < smallest or width < smallest:
        raise ValueError(
            f"images of {height}x{width} are too small for NiN: it needs at least "
            f"{smallest}x{smallest}. Resize them first, as the book does with resize={BOOK_RESIZE} "
            f"(Fashion-MNIST's 28x28 images must be resized)."
        )


def check_channels(channels: int, in_channels: int) -> None:
    """Refuse images whose channel count is not the model's ``in_channels``."""
    if channels != in_channels:
        raise ValueError(f"this NiN takes images with {in_channels} channel(s), got {channels}; "
                         f"build it with NiN(in_channels={channels}) for such images")


def _rows(shape: tuple[int, ...], layers) -> list[LayerRow]:
    rows = []
    for layer in layers:
        params = layer.params(shape[1])
        shape = layer.output_shape(shape)
        rows.append(LayerRow(layer.kind, shape, params))
    return rows


def _fits(layers, size: int) -> bool:
    shape: tuple[int, ...] = (1, 1, size, size)
    for layer in layers:
        shape = layer.output_shape(shape)
        if min(shape[1:]) < 1:
            return False
    return True


def _conv_size(size: int, kernel: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - kernel) // stride + 1


def check_positive_int(name: str, value) -> None:
    """Refuse anything but a positive integer (a numpy one too; not a boolean) for ``name``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
