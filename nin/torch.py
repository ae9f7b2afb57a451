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

import contextlib
import itertools
import os
import warnings

import numpy

from nin import api, data, frameworks, inits, spec

with frameworks.importing("torch"):
    import torch
    from torch import nn
    from torch.nn import functional as F

#: the precisions ``train`` offers (bfloat16 through ``torch.autocast``)
PRECISIONS = ("float32", "bfloat16")

__all__ = api.BOOK_NAMES


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
    """The book's NiN as an ``nn.Sequential`` of ten layers, with ``in_channels`` (the images' channels, which
    ``nn.Conv2d`` needs) and the exercises' variants: ``num_1x1`` 1x1 convolutions per block, and the last
    block's ``head`` (:func:`nin.spec.head_channels`). Inputs are N,C,H,W; images smaller than
    :func:`nin.spec.min_image_size` get a ``ValueError``.
    """

    def __init__(self, num_classes: int = spec.NUM_CLASSES, in_channels: int = spec.IN_CHANNELS,
                 dropout: float = spec.DROPOUT, num_1x1: int = spec.NUM_1X1, head: str = spec.HEAD):
        spec.check_positive_int("in_channels", in_channels)
        spec.check_model(num_classes, dropout, num_1x1, head)
        super().__init__(
            nin_block(in_channels, 96, kernel_size=11, strides=4, padding=0, num_1x1=num_1x1),
            nn.MaxPool2d(3, stride=2),
            nin_block(96, 256, kernel_size=5, strides=1, padding=2, num_1x1=num_1x1),
            nn.MaxPool2d(3, stride=2),
            nin_block(256, 384, kernel_size=3, strides=1, padding=1, num_1x1=num_1x1),
            nn.MaxPool2d(3, stride=2),
            nn.Dropout(dropout),
            # There are 10 label classes (num_classes); the gradual head narrows to them step by step
            nin_block(384, spec.head_channels(num_classes, num_1x1, head), kernel_size=3, strides=1, padding=1,
                      num_1x1=num_1x1),
            nn.AdaptiveAvgPool2d((1, 1)),
            # Transform the four-dimensional output into two-dimensional output with a shape of (batch size, 10)
            nn.Flatten())
        self.num_classes, self.in_channels, self.num_1x1, self.head = num_classes, in_channels, num_1x1, head

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        spec.check_channels(X.shape[1], self.in_channels)
        spec.check_image_size(X.shape[-2], X.shape[-1], self.num_classes)
        return super().forward(X)


def summary(net: NiN, input_shape=(1, spec.IN_CHANNELS, spec.BOOK_RESIZE, spec.BOOK_RESIZE)) -> list[dict]:
    """The book's per-layer table, computed by running ``net`` on a random batch of ``input_shape`` (N,C,H,W).

    Each row has the layer's ``name``, ``kind`` (see :data:`nin.spec.KINDS`), ``shape``, the same
    ``native_shape`` (PyTorch is channels-first too) and its number of ``params``.
    """
    spec.check_input_shape(input_shape, net.num_classes)
    spec.check_channels(input_shape[1], net.in_channels)
    X = torch.rand(size=tuple(input_shape))
    rows = []
    with torch.no_grad():
        for layer, kind in zip(net, spec.LAYER_KINDS, strict=True):
            X = layer(X)
            rows.append({
                "name": layer.__class__.__name__,
                "kind": kind,
                "shape": list(X.shape),
                "native_shape": list(X.shape),
                "params": sum(p.numel() for p in layer.parameters()),
            })
    return rows


load_data_fashion_mnist, train, evaluate_accuracy, predict, save_weights, load_weights = api.bind(__name__)


# The hooks of the protocol nin.api.Backend: what training, evaluation and weights files need from PyTorch.

def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def from_numpy(X: numpy.ndarray) -> torch.Tensor:
    return torch.from_numpy(numpy.ascontiguousarray(X))  # NCHW already


def to_numpy(X: torch.Tensor) -> numpy.ndarray:
    return X.detach().cpu().numpy()


def loader(split: data.Split, sampler: data.BatchSampler, resize: int | None):
    # batch_size=None: the sampler yields whole index batches, and the dataset resizes each at once.
    batches = torch.utils.data.DataLoader(_Batches(split, resize), sampler=sampler, batch_size=None)
    batches.nin_sampler = sampler
    return batches


def init_weights(net: NiN, init: str | None, seed: int) -> None:
    """The book's Xavier-uniform convolution weights, or Kaiming-uniform weights for ReLU with zero
    biases ("centered": then made zero-mean, :func:`nin.inits.centered`); None keeps the weights.
    For "xavier" the biases are drawn as PyTorch draws them when it builds the model, first, so that
    a seeded run is the book's ``torch.manual_seed(seed)``, then ``NiN()``, then ``train_ch6``."""
    torch.manual_seed(seed)
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
            set_weights(net, inits.centered(get_weights(net)))


def get_weights(net: NiN) -> dict[str, numpy.ndarray]:
    """The weights in the canonical layout: kernels O,I,kH,kW, as PyTorch keeps them."""
    tensors = {}
    for name, conv in _convs(net):
        tensors[f"{name}.weight"] = conv.weight.detach().cpu().numpy().copy()
        tensors[f"{name}.bias"] = conv.bias.detach().cpu().numpy().copy()
    return tensors


def set_weights(net: NiN, tensors: dict[str, numpy.ndarray]) -> None:
    spec.check_weights(tensors, net.in_channels, net.num_classes, net.num_1x1, net.head)
    with torch.no_grad():
        for name, conv in _convs(net):
            conv.weight.copy_(torch.from_numpy(tensors[f"{name}.weight"]))
            conv.bias.copy_(torch.from_numpy(tensors[f"{name}.bias"]))


def seed_epoch(net: NiN, seed: int) -> None:
    torch.manual_seed(seed)


@contextlib.contextmanager
def trainer(net: NiN, device, precision: str, clip: float | None = None, world=None):
    """The book's step: plain SGD on the mean cross-entropy; bfloat16 through ``torch.autocast``; ``clip``
    through ``clip_grad_norm_``. Data-parallel: ``DistributedDataParallel``, which averages the workers'
    gradients as it computes them; each worker's loss is its part's sum over the whole batch, times the workers."""
    device = torch.device(device)
    # channels_last keeps activations NHWC in memory, the layout oneDNN's CPU kernels run fastest in
    # (no conversion at every convolution); the math, and the NCHW shapes PyTorch shows, are unchanged.
    net.to(device, memory_format=torch.channels_last)
    workers = world.size if world else 1
    model = nn.parallel.DistributedDataParallel(net) if workers > 1 else net
    optimizer = torch.optim.SGD(net.parameters())
    loss = nn.CrossEntropyLoss(reduction="sum")

    def step(X, y, lr, total):
        net.train()
        for group in optimizer.param_groups:
            group["lr"] = lr
        optimizer.zero_grad()
        X, y = X.to(device, memory_format=torch.channels_last), y.to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bfloat16"):
            y_hat = model(X)
            l = loss(y_hat, y)
        (l * (workers / total)).backward()
        if clip:
            nn.utils.clip_grad_norm_(net.parameters(), clip)
        optimizer.step()
        with torch.no_grad():
            return l.detach(), (y_hat.argmax(dim=1) == y).sum(), X.shape[0]

    yield step


def logits(net: NiN, X: torch.Tensor, device=None) -> numpy.ndarray:
    net.eval()
    device = next(net.parameters()).device if device is None else device
    net.to(device, memory_format=torch.channels_last)  # as in training: a model and its input in one layout
    with torch.no_grad():
        return net(X.to(device, memory_format=torch.channels_last)).cpu().numpy()


def to_onnx(net: NiN, path, opset: int) -> None:
    """``torch.onnx.export``, its TorchScript exporter (the newer one, ``dynamo=True``, needs onnxscript)."""
    net.eval()
    size = spec.min_image_size(net.num_classes)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer warns that NiN's input checks are not part of the graph
        torch.onnx.export(net.cpu(), (torch.zeros(1, net.in_channels, size, size),), os.fspath(path),
                          input_names=["images"], output_names=["logits"], opset_version=opset, dynamo=False,
                          dynamic_axes={"images": {0: "batch", 2: "height", 3: "width"}, "logits": {0: "batch"}})


def join(world) -> None:
    """``torch.distributed`` with rank 0's TCP store at the coordinator's address: gloo on CPUs, NCCL on GPUs
    (a GPU per worker of the node)."""
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(world.local_rank)
    torch.distributed.init_process_group(backend, init_method=f"tcp://{world.coordinator}", rank=world.rank,
                                         world_size=world.size)


def all_sum(values) -> numpy.ndarray:
    total = torch.tensor(values, dtype=torch.float64, device=default_device())
    torch.distributed.all_reduce(total)
    return total.cpu().numpy()


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


def _convs(net):
    """``(canonical name, Conv2d)`` for each convolution, in model order (see :func:`nin.spec.weight_shapes`)."""
    return spec.named_convs([m for m in block if isinstance(m, nn.Conv2d)] for block in net
                            if isinstance(block, nn.Sequential))
