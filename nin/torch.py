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

import itertools

import numpy

from nin import data, missing_framework, spec, training, weights

try:
    import torch
    from torch import nn
    from torch.nn import functional as F
except ImportError as err:
    raise missing_framework("torch") from err

#: the precisions ``train`` offers (bfloat16 through ``torch.autocast``)
PRECISIONS = ("float32", "bfloat16")

__all__ = ["nin_block", "NiN", "summary", "load_data_fashion_mnist", "train", "evaluate_accuracy", "predict",
           "save_weights", "load_weights"]


def nin_block(in_channels: int, out_channels, kernel_size: int, strides: int, padding: int,
              num_1x1: int = spec.NUM_1X1) -> nn.Sequential:
    """A NiN block: one convolution, then ``num_1x1`` (the book's two) 1x1 convolutions, each followed by ReLU.

    The block's width may also be a sequence: each convolution's own output channels (the gradual head).
    """
    channels = spec.block_channels(out_channels, num_1x1)
    layers = [nn.Conv2d(in_channels, channels[0], kernel_size, strides, padding), nn.ReLU()]
    for i, o in itertools.pairwise(channels):
        layers += [nn.Conv2d(i, o, kernel_size=1), nn.ReLU()]
    return nn.Sequential(*layers)


class NiN(nn.Sequential):
    """The book's NiN: four NiN blocks, three max-poolings, dropout, global average pooling.

    Args:
        num_classes: output channels of the last block, one logit each.
        in_channels: channels of the input images (1 for Fashion-MNIST).
        dropout: the dropout rate before the last block.
        num_1x1: 1x1 convolutions per block: the book's 2, or 1 or 0 (exercise 2).
        head: ``"one-step"`` (the book's last block goes from 384 channels to ``num_classes`` in its
            first convolution) or ``"gradual"`` (exercise 4; see :func:`nin.spec.architecture`).

    Images smaller than :func:`nin.spec.min_image_size` are refused with a ``ValueError``.
    """

    def __init__(self, num_classes: int = spec.NUM_CLASSES, in_channels: int = spec.IN_CHANNELS,
                 dropout: float = spec.DROPOUT, num_1x1: int = spec.NUM_1X1, head: str = spec.HEAD):
        spec.check_positive_int("in_channels", in_channels)
        layers, channels = [], in_channels
        for layer in spec.architecture(num_classes, dropout, num_1x1, head):
            if isinstance(layer, spec.NinBlock):
                layers.append(nin_block(channels, layer.channels, layer.kernel_size, layer.strides,
                                        layer.padding, layer.num_1x1))
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
        self.num_classes, self.in_channels, self.num_1x1, self.head = num_classes, in_channels, num_1x1, head

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


def load_data_fashion_mnist(batch_size: int, resize: int | None = None, root=None, *, limit_train: int | None = None,
                            limit_test: int | None = None, seed: int | None = None, download: bool = True):
    """Fashion-MNIST as the book's ``d2l.load_data_fashion_mnist``: ``(train_iter, test_iter)``.

    Batches ``(X, y)`` hold float32 images in [0, 1], in the layout the model takes (NHWC in
    Keras, NCHW elsewhere), resized bilinearly to ``resize`` x ``resize`` a whole batch at a time, and integer labels.
    The training batches are shuffled anew each epoch (see :class:`nin.data.BatchSampler`);
    the test batches are not. Files come from ``root``, ``$NIN_DATA`` or the cache directory
    (:func:`nin.data.load_fashion_mnist`); ``limit_train`` and ``limit_test`` keep the first examples.
    """
    train, test = data.load_splits(root, resize, limit_train, limit_test, download)
    return (_loader(train, data.BatchSampler(len(train[0]), batch_size, True, seed), resize),
            _loader(test, data.BatchSampler(len(test[0]), batch_size, False), resize))


def train(net, train_iter, test_iter, num_epochs: int, lr: float, device=None, *, seed: int | None = None,
          init: str = "xavier", run: training.Run | None = None, resume: bool = False,
          quiet: bool = False, precision: str = "float32", schedule: str = "constant",
          warmup: float = 0) -> list[dict]:
    """Train ``net`` as the book's ``d2l.train_ch6`` does, and return one record per epoch.

    The book's way: ``init`` for the convolution weights ("xavier", the book's; "kaiming"; "centered"; or
    None to keep the model's weights), plain SGD at ``lr``, mean cross-entropy; per epoch the
    train loss, train accuracy, test accuracy and examples per second; at the end the book's
    two lines (unless ``quiet``).
    Beyond the book: ``seed`` makes a run repeatable (see :mod:`nin.training`), a progress bar
    shows live loss and accuracy, and with ``run`` (a :class:`nin.training.Run`) a checkpoint
    is written after every epoch; ``resume=True`` continues from it up to ``num_epochs``.
    ``precision="bfloat16"`` computes in bfloat16 where the hardware has it (weights and updates
    stay float32); the default, "float32", is the book's math. ``schedule`` and ``warmup`` set the
    learning rate of each step (:func:`nin.training.learning_rate`); "constant" with no warm-up is the book's.
    """
    training.check_budget(num_epochs, lr)
    training.check_init(init)
    training.check_precision(precision)
    training.check_schedule(schedule, warmup)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    history, start = [], 0
    if resume:
        tensors, seed, init, history, start = run.resume()
        _set_weights(net, tensors)
    else:
        seed = training.new_seed() if seed is None else seed
        torch.manual_seed(seed)
        _init_weights(net, init)
    # channels_last keeps activations NHWC in memory, the layout oneDNN's CPU kernels run fastest in
    # (no conversion at every convolution); the math, and the NCHW shapes PyTorch shows, are unchanged.
    net.to(device, memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(net.parameters(), lr=lr)
    loss = nn.CrossEntropyLoss()
    for epoch in range(start, num_epochs):
        torch.manual_seed(training.epoch_seed(seed, epoch))
        data.set_epoch(train_iter, epoch)
        meter, bar = training.Meter(), training.progress(train_iter, epoch, num_epochs, quiet)
        net.train()
        for i, (X, y) in enumerate(bar):
            for group in optimizer.param_groups:
                group["lr"] = training.learning_rate(lr, schedule, warmup, num_epochs, epoch, i, len(train_iter))
            optimizer.zero_grad()
            X, y = X.to(device, memory_format=torch.channels_last), y.to(device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bfloat16"):
                y_hat = net(X)
                l = loss(y_hat, y)
            l.backward()
            optimizer.step()
            with torch.no_grad():
                meter.add(l * X.shape[0], (y_hat.argmax(dim=1) == y).sum(), X.shape[0])
            training.show(bar, meter)
        meter.stop()
        history.append(meter.record(epoch, evaluate_accuracy(net, test_iter, device)))
        if run is not None:
            run.save(_get_weights(net), epoch=epoch, seed=seed, init=init, lr=lr, history=history)
    if not quiet and history:
        print(training.book_lines(history, str(device)))
    return history


def evaluate_accuracy(net, data_iter, device=None) -> float:
    """The fraction of examples in ``data_iter`` that ``net`` classifies right, in evaluation mode."""
    pairs = list(_predictions(net, data_iter, device))
    return sum(int((y_hat == y).sum()) for y_hat, y in pairs) / sum(len(y) for _, y in pairs)


def predict(net, data_iter, device=None) -> numpy.ndarray:
    """The class ``net`` predicts for each example of ``data_iter``, in evaluation mode, in order."""
    return numpy.concatenate([y_hat for y_hat, _ in _predictions(net, data_iter, device)])


def save_weights(net, path) -> None:
    """Save the weights as a safetensors file that every backend's :func:`load_weights` reads.

    Names and layouts are canonical (:func:`nin.spec.weight_shapes`: kernels O,I,kH,kW), whatever
    the framework keeps; the file is written atomically.
    """
    weights.save(_get_weights(net), path, _model_args(net))


def load_weights(net, path) -> None:
    """Load weights saved by any backend's :func:`save_weights` (or a training checkpoint).

    A file that does not fit ``net`` (other class count or input channels, missing or extra
    tensors, other shapes or dtypes) is refused with a ``ValueError`` that says what differs,
    and ``net`` is left unchanged.
    """
    tensors, _ = weights.load(path)
    _set_weights(net, tensors)


def _predictions(net, data_iter, device):
    """``(predicted classes, labels)`` as numpy arrays, batch by batch."""
    net.eval()
    device = next(net.parameters()).device if device is None else device
    with torch.no_grad():
        for X, y in data_iter:
            yield net(X.to(device, memory_format=torch.channels_last)).argmax(dim=1).cpu().numpy(), y.numpy()


class _Batches(torch.utils.data.Dataset):
    """A split whose items are whole batches: ``dataset[indices]`` resizes them in one call."""

    def __init__(self, split: data.Split, resize: int | None):
        self.images, self.labels = torch.from_numpy(split[0]), torch.from_numpy(split[1]).long()
        self.resize = resize

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, indices):
        indices = torch.from_numpy(indices)
        X = self.images[indices].unsqueeze(1).float() / 255  # NCHW
        if self.resize:
            X = F.interpolate(X, size=(self.resize, self.resize), mode="bilinear", align_corners=False)
        return X, self.labels[indices]


def _loader(split: data.Split, sampler: data.BatchSampler, resize: int | None):
    # batch_size=None: the sampler yields whole index batches, and the dataset resizes each at once.
    loader = torch.utils.data.DataLoader(_Batches(split, resize), sampler=sampler, batch_size=None)
    loader.nin_sampler = sampler
    return loader


def _init_weights(net, init: str | None) -> None:
    """The book's Xavier-uniform convolution weights, or Kaiming-uniform weights for ReLU with zero
    biases ("centered": then made zero-mean, :func:`nin.training.centered`); None keeps the weights.
    For "xavier" the biases are drawn as PyTorch draws them when it
    builds the model, first, so that a seeded run is the book's ``torch.manual_seed(seed)``, then
    ``NiN()``, then ``train_ch6``."""
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    if init == "xavier":
        for m in convs:
            m.reset_parameters()
        for m in convs:
            nn.init.xavier_uniform_(m.weight)
    elif init in ("kaiming", "centered"):
        for m in convs:
            nn.init.kaiming_uniform_(m.weight, nonlinearity="relu")
            nn.init.zeros_(m.bias)
        if init == "centered":
            _set_weights(net, training.centered(_get_weights(net)))


def _model_args(net) -> dict:
    """The arguments ``NiN`` was built with (all but ``dropout``), as weights files record them."""
    return {"num_classes": net.num_classes, "in_channels": net.in_channels, "num_1x1": net.num_1x1,
            "head": net.head}


def _convs(net):
    """``(canonical name, Conv2d)`` for each convolution, in model order (see :func:`nin.spec.weight_shapes`)."""
    blocks = [m for m in net if isinstance(m, nn.Sequential)]
    for b, block in enumerate(blocks):
        for c, conv in enumerate(m for m in block if isinstance(m, nn.Conv2d)):
            yield f"blocks.{b}.convs.{c}", conv


def _get_weights(net) -> dict[str, numpy.ndarray]:
    """The weights in the canonical layout: kernels O,I,kH,kW, as PyTorch keeps them."""
    tensors = {}
    for name, conv in _convs(net):
        tensors[f"{name}.weight"] = conv.weight.detach().cpu().numpy().copy()
        tensors[f"{name}.bias"] = conv.bias.detach().cpu().numpy().copy()
    return tensors


def _set_weights(net, tensors: dict[str, numpy.ndarray]) -> None:
    """Load canonical weights; checks all of them first, so a refused file changes nothing."""
    spec.check_weights(tensors, net.in_channels, net.num_classes, net.num_1x1, net.head)
    with torch.no_grad():
        for name, conv in _convs(net):
            conv.weight.copy_(torch.from_numpy(tensors[f"{name}.weight"]))
            conv.bias.copy_(torch.from_numpy(tensors[f"{name}.bias"]))


_KINDS = {nn.Sequential: "nin_block", nn.MaxPool2d: "maxpool", nn.Dropout: "dropout",
          nn.AdaptiveAvgPool2d: "global_avg_pool", nn.Flatten: "flatten"}
