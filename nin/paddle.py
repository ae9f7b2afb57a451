"""NiN in PaddlePaddle (d2l.ai, section "Network in Network"; the Chinese edition, zh.d2l.ai, has this tab).

Use it as the book uses ``d2l``::

    from nin import paddle as nin
    net = nin.NiN()

PaddlePaddle's side of the framework differences, written down once here:

- layout: NCHW, as the neutral description (:mod:`nin.spec`); kernels are O,I,kH,kW.
- padding: integers, as the book gives them.
- activation: separate ``nn.ReLU`` layers after each convolution.
- input channels: given (``in_channels``), since ``nn.Conv2D`` needs them.
- global pooling: ``nn.AdaptiveAvgPool2D((1, 1))`` keeps 1x1, then ``nn.Flatten``.
- default init: Kaiming-normal kernels (std sqrt(2 / fan_in)), zero biases. The book's ``train_ch6``
  calls ``nn.initializer.XavierUniform(m.weight)``, which builds an initializer and applies it to
  nothing: the book's Paddle runs train from this default, not from Xavier weights.
- the process: imported after TensorFlow, PaddlePaddle crashes it; its import sets ``OMP_NUM_THREADS`` to 1
  and puts its own SIGTERM handler below Python's; the MKL it bundles takes its slowest path on AMD CPUs.
  :mod:`nin.frameworks` refuses the first, undoes the next two (every CPU for PaddlePaddle, Python's handlers
  back), and points MKL at its AVX2 path on AMD CPUs (``MKL_DEBUG_CPU_TYPE=5``, 2x faster training).
"""

from __future__ import annotations

import contextlib
import itertools

import numpy

from nin import api, data, frameworks, inits, spec

with frameworks.importing("paddle"):  # before TensorFlow; then its threads and signal handlers (nin.frameworks)
    import paddle
    from paddle import nn
    from paddle.nn import functional as F

#: the precisions ``train`` offers
PRECISIONS = ("float32",)

__all__ = api.BOOK_NAMES


def nin_block(in_channels: int, out_channels, kernel_size: int, strides: int, padding: int,
              num_1x1: int = spec.NUM_1X1) -> nn.Sequential:
    """A NiN block: one convolution, then ``num_1x1`` (the book's two) 1x1 convolutions, each followed by ReLU.

    The block's width may also be a sequence: each convolution's own output channels (the gradual head).
    """
    channels = spec.block_channels(out_channels, num_1x1)
    layers = [nn.Conv2D(in_channels, channels[0], kernel_size, strides, padding), nn.ReLU()]
    for i, o in itertools.pairwise(channels):
        layers += [nn.Conv2D(i, o, kernel_size=1), nn.ReLU()]
    return nn.Sequential(*layers)


class NiN(nn.Sequential):
    """The book's NiN as an ``nn.Sequential`` of ten layers, with ``in_channels`` (the images' channels, which
    ``nn.Conv2D`` needs) and the exercises' variants: ``num_1x1`` 1x1 convolutions per block, and the last
    block's ``head`` (:func:`nin.spec.head_channels`). Inputs are N,C,H,W; images smaller than
    :func:`nin.spec.min_image_size` get a ``ValueError``.
    """

    def __init__(self, num_classes: int = spec.NUM_CLASSES, in_channels: int = spec.IN_CHANNELS,
                 dropout: float = spec.DROPOUT, num_1x1: int = spec.NUM_1X1, head: str = spec.HEAD):
        spec.check_positive_int("in_channels", in_channels)
        spec.check_model(num_classes, dropout, num_1x1, head)
        super().__init__(
            nin_block(in_channels, 96, kernel_size=11, strides=4, padding=0, num_1x1=num_1x1),
            nn.MaxPool2D(3, stride=2),
            nin_block(96, 256, kernel_size=5, strides=1, padding=2, num_1x1=num_1x1),
            nn.MaxPool2D(3, stride=2),
            nin_block(256, 384, kernel_size=3, strides=1, padding=1, num_1x1=num_1x1),
            nn.MaxPool2D(3, stride=2),
            nn.Dropout(dropout),
            # 标签类别数是10: there are 10 label classes (num_classes); the gradual head narrows to them step by step
            nin_block(384, spec.head_channels(num_classes, num_1x1, head), kernel_size=3, strides=1, padding=1,
                      num_1x1=num_1x1),
            nn.AdaptiveAvgPool2D((1, 1)),
            nn.Flatten())
        self.num_classes, self.in_channels, self.num_1x1, self.head = num_classes, in_channels, num_1x1, head

    def forward(self, X: paddle.Tensor) -> paddle.Tensor:
        spec.check_channels(X.shape[1], self.in_channels)
        spec.check_image_size(X.shape[-2], X.shape[-1], self.num_classes)
        return super().forward(X)


def summary(net: NiN, input_shape=(1, spec.IN_CHANNELS, spec.BOOK_RESIZE, spec.BOOK_RESIZE)) -> list[dict]:
    """The book's per-layer table, computed by running ``net`` on a random batch of ``input_shape`` (N,C,H,W).

    Each row has the layer's ``name``, ``kind`` (see :data:`nin.spec.KINDS`), ``shape``, the same
    ``native_shape`` (PaddlePaddle is channels-first too) and its number of ``params``.
    """
    spec.check_input_shape(input_shape, net.num_classes)
    spec.check_channels(input_shape[1], net.in_channels)
    X = paddle.rand(shape=list(input_shape))
    rows = []
    with paddle.no_grad():
        for layer, kind in zip(net, spec.LAYER_KINDS, strict=True):
            X = layer(X)
            rows.append({
                "name": layer.__class__.__name__,
                "kind": kind,
                "shape": list(X.shape),
                "native_shape": list(X.shape),
                "params": sum(int(numpy.prod(p.shape)) for p in layer.parameters()),
            })
    return rows


load_data_fashion_mnist, train, evaluate_accuracy, predict, save_weights, load_weights = api.bind(__name__)


# The hooks of the protocol nin.api.Backend: what training, evaluation and weights files need from PaddlePaddle.

def default_device() -> str:
    return "gpu:0" if paddle.device.cuda.device_count() > 0 else "cpu"


def from_numpy(X: numpy.ndarray) -> paddle.Tensor:
    return paddle.to_tensor(numpy.ascontiguousarray(X))  # NCHW already


def to_numpy(X: paddle.Tensor) -> numpy.ndarray:
    return X.numpy()


def loader(split: data.Split, sampler: data.BatchSampler, resize: int | None):
    return data.Batches(split, sampler, resize, _batch)


def init_weights(net: NiN, init: str | None, seed: int) -> None:
    """The book's Xavier-uniform convolution weights (what its ``train_ch6`` means to draw; see the module's
    docstring), or Kaiming-uniform weights for ReLU with zero biases ("centered": then made zero-mean,
    :func:`nin.inits.centered`); None keeps the weights. Biases stay as built (zero) for "xavier"."""
    paddle.seed(seed)
    if init is None:
        return
    initializer = nn.initializer.XavierUniform() if init == "xavier" else nn.initializer.KaimingUniform()
    for _, conv in _convs(net):
        initializer(conv.weight)
        if init != "xavier":
            nn.initializer.Constant(0.0)(conv.bias)
    if init == "centered":
        set_weights(net, inits.centered(get_weights(net)))


def get_weights(net: NiN) -> dict[str, numpy.ndarray]:
    """The weights in the canonical layout: kernels O,I,kH,kW, as PaddlePaddle keeps them."""
    tensors = {}
    for name, conv in _convs(net):
        tensors[f"{name}.weight"] = conv.weight.numpy().copy()
        tensors[f"{name}.bias"] = conv.bias.numpy().copy()
    return tensors


def set_weights(net: NiN, tensors: dict[str, numpy.ndarray]) -> None:
    spec.check_weights(tensors, net.in_channels, net.num_classes, net.num_1x1, net.head)
    for name, conv in _convs(net):
        conv.weight.set_value(tensors[f"{name}.weight"])
        conv.bias.set_value(tensors[f"{name}.bias"])


def seed_epoch(net: NiN, seed: int) -> None:
    paddle.seed(seed)


@contextlib.contextmanager
def trainer(net: NiN, device, precision: str, clip: float | None = None, world=None):
    """The book's step: plain SGD on the mean cross-entropy; ``clip`` through ``nn.ClipGradByGlobalNorm``.
    Data-parallel: ``paddle.DataParallel``, which averages the workers' gradients during the backward pass (before
    the optimizer clips them); each worker's loss is its part's sum over the whole batch, times the workers."""
    paddle.device.set_device(device)
    workers = world.size if world else 1
    model = paddle.DataParallel(net) if workers > 1 else net
    optimizer = paddle.optimizer.SGD(learning_rate=0.0, parameters=net.parameters(),
                                     grad_clip=nn.ClipGradByGlobalNorm(clip) if clip else None)
    loss = nn.CrossEntropyLoss()

    def step(X, y, lr, total):
        net.train()
        optimizer.set_lr(lr)
        optimizer.clear_grad()
        y_hat = model(X)
        l = loss(y_hat, y)
        scale = X.shape[0] * workers / total  # the part's mean to its sum over the batch, times the workers
        (l * scale if scale != 1 else l).backward()  # one process: the mean, as it was
        optimizer.step()
        with paddle.no_grad():
            return float(l) * X.shape[0], int((y_hat.argmax(axis=1) == y).sum()), X.shape[0]

    yield step


def logits(net: NiN, X: paddle.Tensor, device=None) -> numpy.ndarray:
    net.eval()
    with paddle.no_grad():
        return net(X).numpy()


def to_onnx(net: NiN, path, opset: int) -> None:
    """PaddlePaddle exports ONNX through the separate ``paddle2onnx`` package, which nin does not take: refused."""
    raise api.NoExporter("PaddlePaddle's ONNX export needs the paddle2onnx package, which nin does not install; "
                         "nin's exporter (nin.export) builds the same ONNX model from the weights file, with no "
                         "framework")


def join(world) -> None:
    """``paddle.distributed.init_parallel_env`` on gloo (CPUs), which reads its world from ``PADDLE_*`` variables
    (:func:`nin.frameworks.engine_env`): rank 0's TCP store at the coordinator's address, which the other ranks
    retry until it listens."""
    paddle.distributed.init_parallel_env()


def all_sum(values) -> numpy.ndarray:
    total = paddle.to_tensor(numpy.asarray(values, dtype=numpy.float64))
    paddle.distributed.all_reduce(total)  # the sum
    return total.numpy()


def _batch(images: numpy.ndarray, labels: numpy.ndarray, resize: int | None) -> tuple[paddle.Tensor, paddle.Tensor]:
    """A batch of :class:`nin.data.Batches`: one ``F.interpolate`` of the gathered images.

    ``F.interpolate(..., "bilinear", align_corners=False)`` (``align_mode=0``) samples at half-pixel
    centres, as PyTorch's does.
    """
    X = paddle.to_tensor(images).unsqueeze(1).astype("float32") / 255  # NCHW
    if resize:
        X = F.interpolate(X, size=(resize, resize), mode="bilinear", align_corners=False)
    return X, paddle.to_tensor(labels.astype(numpy.int64))


def _convs(net):
    """``(canonical name, Conv2D)`` for each convolution, in model order (see :func:`nin.spec.weight_shapes`)."""
    return spec.named_convs([m for m in block if isinstance(m, nn.Conv2D)] for block in net
                            if isinstance(block, nn.Sequential))
