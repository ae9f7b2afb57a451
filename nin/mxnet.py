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
- threads: MXNet 1.9 gives OpenMP half the CPUs on x86, taking the other half for
  hyperthreads, and sets that for the whole process; see :func:`_openmp_threads`.
"""

from __future__ import annotations

import os
import sys
import warnings

import numpy

from nin import data, missing_framework, spec, training, weights

# MXNet 1.9.1, the last release, still uses ``numpy.bool``, which numpy 1.24 to 1.26
# removed (numpy 2 brought it back): give it back before MXNet is imported.
if "bool" not in vars(numpy):
    numpy.bool = numpy.bool_


def _openmp_threads() -> None:
    """Give MXNet every CPU where the CPUs have no hyperthreads; call it before ``import mxnet``.

    Unless ``OMP_NUM_THREADS`` is set, MXNet 1.9 on x86 sets OpenMP to half the CPUs for the whole
    process: right with two hyperthreads per core, but on CPUs without them (``smt/active`` is 0)
    it trains at half speed (23 against 44 examples/s on 2 cores) and drops PyTorch in the same
    process to half its threads. ``MXNET_OMP_MAX_THREADS`` overrides that count, for MXNet only.
    """
    if "OMP_NUM_THREADS" in os.environ or "MXNET_OMP_MAX_THREADS" in os.environ:
        return
    try:
        with open("/sys/devices/system/cpu/smt/active") as f:
            if f.read().strip() != "0":
                return  # hyperthreads: MXNet's half is one thread per core
    except OSError:
        return  # not Linux: keep MXNet's choice
    if "mxnet" in sys.modules:
        warnings.warn("MXNet was imported before nin.mxnet, so it uses half the CPUs: import nin.mxnet first, "
                      "or set OMP_NUM_THREADS before Python starts", stacklevel=2)
        return
    os.environ["MXNET_OMP_MAX_THREADS"] = str(len(os.sched_getaffinity(0)))


_openmp_threads()
try:
    import mxnet as mx
    from mxnet import autograd, gluon, init, np, npx
    from mxnet.gluon import nn
except ImportError as err:
    raise missing_framework("mxnet") from err

npx.set_np()

#: the precisions ``train`` offers: MXNet 1.9's bfloat16 (AMP) does not reach numpy-interface Gluon
PRECISIONS = ("float32",)

__all__ = ["nin_block", "NiN", "summary", "load_data_fashion_mnist", "train", "evaluate_accuracy", "predict",
           "save_weights", "load_weights"]


def nin_block(num_channels, kernel_size: int, strides: int, padding: int,
              num_1x1: int = spec.NUM_1X1) -> nn.HybridSequential:
    """A NiN block: one convolution, then ``num_1x1`` (the book's two) 1x1 convolutions, each followed by ReLU.

    The block's width may also be a sequence: each convolution's own output channels (the gradual head).
    """
    channels = spec.block_channels(num_channels, num_1x1)
    blk = nn.HybridSequential()
    blk.add(nn.Conv2D(channels[0], kernel_size, strides, padding, activation="relu"))
    for c in channels[1:]:
        blk.add(nn.Conv2D(c, kernel_size=1, activation="relu"))
    return blk


class NiN(nn.HybridSequential):
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
        super().__init__()
        spec.check_positive_int("in_channels", in_channels)
        for layer in spec.architecture(num_classes, dropout, num_1x1, head):
            if isinstance(layer, spec.NinBlock):
                self.add(nin_block(layer.channels, layer.kernel_size, layer.strides, layer.padding, layer.num_1x1))
            elif isinstance(layer, spec.MaxPool):
                self.add(nn.MaxPool2D(pool_size=layer.pool_size, strides=layer.strides))
            elif isinstance(layer, spec.Dropout):
                self.add(nn.Dropout(layer.rate))
            elif isinstance(layer, spec.GlobalAvgPool):
                self.add(nn.GlobalAvgPool2D())
            elif isinstance(layer, spec.Flatten):
                self.add(nn.Flatten())
        self.num_classes, self.in_channels, self.num_1x1, self.head = num_classes, in_channels, num_1x1, head

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
    if precision != "float32":
        raise ValueError("the Gluon trainer computes in float32 only: MXNet 1.9's bfloat16 (AMP) does not "
                         "reach numpy-interface Gluon; use precision='float32'")
    device = device or (mx.gpu() if mx.context.num_gpus() else mx.cpu())
    history, start = [], 0
    if resume:
        tensors, seed, init, history, start = run.resume()
        net.initialize(ctx=device, force_reinit=True)
        _set_weights(net, tensors)
    else:
        seed = training.new_seed() if seed is None else seed
        mx.random.seed(seed)
        _init_weights(net, init, device)
    # One cached graph with its memory planned once, instead of one call into MXNet per layer and step.
    net.hybridize(static_alloc=True, static_shape=True)
    loss = gluon.loss.SoftmaxCrossEntropyLoss()
    trainer = gluon.Trainer(net.collect_params(), "sgd", {"learning_rate": lr})
    for epoch in range(start, num_epochs):
        mx.random.seed(training.epoch_seed(seed, epoch))
        data.set_epoch(train_iter, epoch)
        meter, bar = training.Meter(), training.progress(train_iter, epoch, num_epochs, quiet)
        for i, (X, y) in enumerate(bar):
            trainer.set_learning_rate(training.learning_rate(lr, schedule, warmup, num_epochs, epoch, i,
                                                             len(train_iter)))
            X, y = X.as_in_ctx(device), y.as_in_ctx(device)
            with autograd.record():
                y_hat = net(X)
                l = loss(y_hat, y)
            l.backward()
            trainer.step(X.shape[0])
            meter.add(l.sum(), (y_hat.argmax(axis=1).astype(y.dtype) == y).sum(), X.shape[0])
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
    device = device or list(net.collect_params().values())[0].list_ctx()[0]
    for X, y in data_iter:  # outside autograd.record(), Gluon's dropout is off
        yield net(X.as_in_ctx(device)).argmax(axis=1).asnumpy(), y.asnumpy()


def _batchify(samples, resize: int | None):
    """Stack a batch, then convert and resize it at once: NHWC floats in [0, 1], resized, to NCHW."""
    images = numpy.stack([image for image, _ in samples])
    X = np.array(images[..., None], dtype="float32") / 255
    if resize:
        X = npx.image.resize(X, size=(resize, resize), interp=1)  # interp=1: bilinear
    return X.transpose(0, 3, 1, 2), np.array([label for _, label in samples], dtype="int32")


def _loader(split: data.Split, sampler: data.BatchSampler, resize: int | None):
    loader = gluon.data.DataLoader(gluon.data.ArrayDataset(*split), batch_sampler=sampler,
                                   batchify_fn=lambda samples: _batchify(samples, resize))
    loader.nin_sampler = sampler
    return loader


def _init_weights(net, init_name: str | None, device) -> None:
    """The book's Xavier-uniform weights, or Kaiming-uniform for ReLU, and zero biases (Gluon's default)
    ("centered": then made zero-mean, :func:`nin.training.centered`); None keeps the weights."""
    if init_name is None:
        net.collect_params().reset_ctx(device)
    else:
        kaiming = init.Xavier(rnd_type="uniform", factor_type="in", magnitude=6)  # sqrt(6 / fan_in)
        scale = {"xavier": init.Xavier(),  # uniform, sqrt(6 / (fan_in + fan_out)): Glorot's
                 "kaiming": kaiming, "centered": kaiming}
        net.initialize(scale[init_name], ctx=device, force_reinit=True)
    _materialize(net)
    if init_name == "centered":
        _set_weights(net, training.centered(_get_weights(net)))


def _materialize(net) -> None:
    """Make the first call, to which Gluon defers parameter shapes, so that weights can be read and set;
    a model never initialized gets Gluon's default initializer first."""
    size = spec.min_image_size(net.num_classes)
    try:
        device = list(net.collect_params().values())[0].list_ctx()[0]
    except RuntimeError:  # "has not been initialized"
        net.initialize()
        device = mx.cpu()
    net(np.zeros((1, net.in_channels, size, size), ctx=device))


def _model_args(net) -> dict:
    """The arguments ``NiN`` was built with (all but ``dropout``), as weights files record them."""
    return {"num_classes": net.num_classes, "in_channels": net.in_channels, "num_1x1": net.num_1x1,
            "head": net.head}


def _convs(net):
    """``(canonical name, Conv2D)`` for each convolution, in model order (see :func:`nin.spec.weight_shapes`)."""
    blocks = [m for m in net if isinstance(m, nn.HybridSequential)]
    for b, block in enumerate(blocks):
        for c, conv in enumerate(m for m in block if isinstance(m, nn.Conv2D)):
            yield f"blocks.{b}.convs.{c}", conv


def _get_weights(net) -> dict[str, numpy.ndarray]:
    """The weights in the canonical layout: kernels O,I,kH,kW, as Gluon keeps them."""
    _materialize(net)
    tensors = {}
    for name, conv in _convs(net):
        tensors[f"{name}.weight"] = conv.weight.data().asnumpy()
        tensors[f"{name}.bias"] = conv.bias.data().asnumpy()
    return tensors


def _set_weights(net, tensors: dict[str, numpy.ndarray]) -> None:
    """Load canonical weights; checks all of them first, so a refused file changes nothing."""
    spec.check_weights(tensors, net.in_channels, net.num_classes, net.num_1x1, net.head)
    _materialize(net)
    for name, conv in _convs(net):
        conv.weight.set_data(np.array(tensors[f"{name}.weight"]))
        conv.bias.set_data(np.array(tensors[f"{name}.bias"]))


_KINDS = {nn.HybridSequential: "nin_block", nn.MaxPool2D: "maxpool", nn.Dropout: "dropout",
          nn.GlobalAvgPool2D: "global_avg_pool", nn.Flatten: "flatten"}
