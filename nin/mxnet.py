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
  hyperthreads, and sets that for the whole process; :mod:`nin.frameworks` gives it every CPU
  where there are no hyperthreads, and gives numpy 1.24-1.26 back the ``numpy.bool`` it needs.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import gc
import signal

import numpy

from nin import api, data, frameworks, inits, spec

with frameworks.importing("mxnet"):  # first: the numpy shim and the threads MXNet needs (nin.frameworks)
    import mxnet as mx
    from mxnet import autograd, gluon, np, npx
    from mxnet.gluon import nn

npx.set_np()

#: the precisions ``train`` offers: MXNet 1.9's bfloat16 (AMP) does not reach numpy-interface Gluon
PRECISIONS = ("float32",)

__all__ = api.BOOK_NAMES


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
    """The book's NiN as a ``HybridSequential`` of ten layers, with ``in_channels`` (Gluon infers them; kept to
    refuse other inputs clearly) and the exercises' variants: ``num_1x1`` 1x1 convolutions per block, and the
    last block's ``head`` (:func:`nin.spec.head_channels`). Inputs are N,C,H,W; images smaller than
    :func:`nin.spec.min_image_size` get a ``ValueError``. A model never initialized gets Gluon's default
    initializer when first used.
    """

    def __init__(self, num_classes: int = spec.NUM_CLASSES, in_channels: int = spec.IN_CHANNELS,
                 dropout: float = spec.DROPOUT, num_1x1: int = spec.NUM_1X1, head: str = spec.HEAD):
        super().__init__()
        spec.check_positive_int("in_channels", in_channels)
        spec.check_model(num_classes, dropout, num_1x1, head)
        self.add(nin_block(96, kernel_size=11, strides=4, padding=0, num_1x1=num_1x1),
                 nn.MaxPool2D(pool_size=3, strides=2),
                 nin_block(256, kernel_size=5, strides=1, padding=2, num_1x1=num_1x1),
                 nn.MaxPool2D(pool_size=3, strides=2),
                 nin_block(384, kernel_size=3, strides=1, padding=1, num_1x1=num_1x1),
                 nn.MaxPool2D(pool_size=3, strides=2),
                 nn.Dropout(dropout),
                 # There are 10 label classes (num_classes); the gradual head narrows to them step by step
                 nin_block(spec.head_channels(num_classes, num_1x1, head), kernel_size=3, strides=1, padding=1,
                           num_1x1=num_1x1),
                 # The global average pooling layer automatically sets the window shape to the height and
                 # width of the input
                 nn.GlobalAvgPool2D(),
                 # Transform the four-dimensional output into two-dimensional output with a shape of
                 # (batch size, 10)
                 nn.Flatten())
        self.num_classes, self.in_channels, self.num_1x1, self.head = num_classes, in_channels, num_1x1, head

    def forward(self, X):
        if isinstance(X, np.ndarray):  # not when traced as a symbol inside a larger hybrid block
            spec.check_channels(X.shape[1], self.in_channels)
            spec.check_image_size(X.shape[-2], X.shape[-1], self.num_classes)
        return super().forward(X)


def summary(net: NiN, input_shape=(1, spec.IN_CHANNELS, spec.BOOK_RESIZE, spec.BOOK_RESIZE)) -> list[dict]:
    """The book's per-layer table, computed by running ``net`` on a random batch of ``input_shape`` (N,C,H,W).

    Each row has the layer's ``name``, ``kind`` (see :data:`nin.spec.KINDS`), ``shape``, the same
    ``native_shape`` (Gluon is channels-first too) and its number of ``params``. A ``net`` never
    initialized gets Gluon's default initializer first.
    """
    spec.check_input_shape(input_shape, net.num_classes)
    spec.check_channels(input_shape[1], net.in_channels)
    X = np.random.uniform(size=tuple(input_shape), ctx=_device(net))
    rows = []
    for layer, kind in zip(net, spec.LAYER_KINDS, strict=True):
        X = layer(X)
        rows.append({
            "name": layer.name,
            "kind": kind,
            "shape": list(X.shape),
            "native_shape": list(X.shape),
            "params": sum(p.data().size for p in layer.collect_params().values()),
        })
    return rows


load_data_fashion_mnist, train, evaluate_accuracy, predict, save_weights, load_weights = api.bind(__name__)


# The hooks of the protocol nin.api.Backend: what training, evaluation and weights files need from Gluon.

def default_device() -> mx.Context:
    return mx.gpu() if mx.context.num_gpus() else mx.cpu()


def from_numpy(X: numpy.ndarray) -> np.ndarray:
    return np.array(X, dtype=X.dtype)  # NCHW already


def to_numpy(X: np.ndarray) -> numpy.ndarray:
    return X.asnumpy()


def loader(split: data.Split, sampler: data.BatchSampler, resize: int | None):
    batches = gluon.data.DataLoader(gluon.data.ArrayDataset(*split), batch_sampler=sampler,
                                    batchify_fn=lambda samples: _batchify(samples, resize))
    batches.nin_sampler = sampler
    return batches


def init_weights(net: NiN, init: str | None, seed: int) -> None:
    """The book's Xavier-uniform weights, or Kaiming-uniform for ReLU, and zero biases (Gluon's default)
    ("centered": then made zero-mean, :func:`nin.inits.centered`); None keeps the weights."""
    mx.random.seed(seed)
    if init is not None:
        kaiming = mx.init.Xavier(rnd_type="uniform", factor_type="in", magnitude=6)  # sqrt(6 / fan_in)
        scale = {"xavier": mx.init.Xavier(),  # uniform, sqrt(6 / (fan_in + fan_out)): Glorot's
                 "kaiming": kaiming, "centered": kaiming}
        net.initialize(scale[init], force_reinit=True)  # on the CPU; the trainer moves it
    _materialize(net)
    if init == "centered":
        set_weights(net, inits.centered(get_weights(net)))


def get_weights(net: NiN) -> dict[str, numpy.ndarray]:
    """The weights in the canonical layout: kernels O,I,kH,kW, as Gluon keeps them."""
    _materialize(net)
    tensors = {}
    for name, conv in _convs(net):
        tensors[f"{name}.weight"] = conv.weight.data().asnumpy()
        tensors[f"{name}.bias"] = conv.bias.data().asnumpy()
    return tensors


def set_weights(net: NiN, tensors: dict[str, numpy.ndarray]) -> None:
    spec.check_weights(tensors, net.in_channels, net.num_classes, net.num_1x1, net.head)
    _materialize(net)
    for name, conv in _convs(net):
        conv.weight.set_data(np.array(tensors[f"{name}.weight"]))
        conv.bias.set_data(np.array(tensors[f"{name}.bias"]))


def seed_epoch(net: NiN, seed: int) -> None:
    mx.random.seed(seed)


@contextlib.contextmanager
def trainer(net: NiN, device, precision: str, clip: float | None = None, world=None):
    """The book's step: plain SGD on the cross-entropy, the trainer dividing the summed gradients by the batch
    (so ``clip``, a norm of the mean loss's gradient, is scaled by the batch before it applies to them).
    Data-parallel: the kvstore of :func:`join` SUMS the workers' gradients of their summed losses (the trainer's
    ``allreduce_grads``, the weights kept and updated by each worker), which the trainer then divides by the whole
    batch; the clip applies to that sum."""
    net.collect_params().reset_ctx(device)
    # One cached graph with its memory planned once, instead of one call into MXNet per layer and step
    # (a worker's part of the last, smaller batch has another shape: the graph is planned again for it).
    net.hybridize(static_alloc=True, static_shape=True)
    loss = gluon.loss.SoftmaxCrossEntropyLoss()
    workers = world.size if world else 1
    sgd = (gluon.Trainer(net.collect_params(), "sgd", kvstore=_kvstore(), update_on_kvstore=False) if workers > 1
           else gluon.Trainer(net.collect_params(), "sgd"))

    def step(X, y, lr, total):
        sgd.set_learning_rate(lr)
        X, y = X.as_in_ctx(device), y.as_in_ctx(device)
        with autograd.record():
            y_hat = net(X)
            l = loss(y_hat, y)
        l.backward()
        # Trainer.step, in its two halves: the gradients summed over the workers (one process: nothing to do;
        # the first call also gives every worker rank 0's weights, the same anyway), then the same update on each
        sgd.allreduce_grads()
        if clip:
            _clip(net, clip * total)
        sgd.update(total)
        return l.sum(), (y_hat.argmax(axis=1).astype(y.dtype) == y).sum(), X.shape[0]

    yield step


def _clip(net: NiN, max_norm: float) -> None:
    """Scale the gradients down to a global norm of ``max_norm`` (Gluon's ``clip_global_norm`` takes the legacy
    ``nd`` arrays only, not the numpy-interface ones)."""
    grads = [p.grad() for p in net.collect_params().values() if p.grad_req != "null"]
    norm = float(np.sqrt(sum((g * g).sum() for g in grads)).item())
    if norm > max_norm:
        for g in grads:
            g *= max_norm / norm


def logits(net: NiN, X: np.ndarray, device=None) -> numpy.ndarray:
    device = device or _device(net)
    return net(X.as_in_ctx(device)).asnumpy()  # outside autograd.record(), Gluon's dropout is off


def to_onnx(net: NiN, path, opset: int) -> None:
    """MXNet's own exporter (``mxnet.onnx``) cannot run beside the onnx package nin needs: refused."""
    raise api.NoExporter("MXNet 1.9.1's own ONNX exporter (mxnet.onnx) imports onnx.mapping, which onnx 1.15 "
                         "removed; nin's exporter (nin.export) reads the same weights")


def join(world) -> None:
    """MXNet's parameter server: the kvstore ``dist_sync``, whose scheduler and server the launcher runs
    (:func:`nin.frameworks.serve`) and which reads its world from ``DMLC_*`` variables
    (:func:`nin.frameworks.engine_env`). The scheduler numbers the workers itself (``kv.rank``), in the order of
    their addresses; each worker listens on its own port of ``world.ports``, in rank order, so that on one node
    these are the world's ranks. Nothing here reads ``kv.rank``: the data each worker takes follows the world's
    rank, and every worker starts from the same weights. The launcher refuses it (``nin.frameworks.ONE_PROCESS_ONLY``:
    some runs ended with wrong gradients, docs/distributed.md); it stays for when that is understood."""
    kv = _kvstore()
    if kv.num_workers != world.size:
        raise RuntimeError(f"MXNet's kvstore counts {kv.num_workers} workers, the launcher started {world.size}")
    atexit.register(_leave)


def all_sum(values) -> numpy.ndarray:
    """Pushed to the kvstore's server, which sums what every worker pushes under a key of its own (no optimizer
    runs there: the trainer updates the weights on the workers), and pulled back."""
    global _SUM_KEY_READY
    kv = _kvstore()
    values = np.array(numpy.asarray(values, dtype=numpy.float64), dtype="float64")
    if not _SUM_KEY_READY:  # every worker at once: the first epoch's end
        kv.init(_SUM_KEY, np.zeros(values.shape, dtype="float64"))
        _SUM_KEY_READY = True
    total = np.zeros(values.shape, dtype="float64")
    kv.pushpull(_SUM_KEY, values, out=total)
    return total.asnumpy()


#: the distributed kvstore of this worker (:func:`join`), and the key of :func:`all_sum` (the trainer's keys are
#: its parameters' indices)
_KV, _SUM_KEY, _SUM_KEY_READY = None, 1 << 30, False


def _kvstore():
    global _KV
    if _KV is None:
        _KV = mx.kv.create("dist_sync")
    return _KV


def _leave() -> None:
    """At exit, leave the engine without its barrier: a worker whose run failed must not wait there for the others
    (they wait for its gradients); the launcher ends the scheduler and the server once every worker has ended.
    The kvstore first waits for this worker's pending operations: should one never end (a peer gone), SIGALRM
    ends the process (the launcher then stops the others)."""
    global _KV
    if _KV is None:
        return
    mx.base.check_call(mx.base._LIB.MXKVStoreSetBarrierBeforeExit(_KV.handle, ctypes.c_int(0)))
    gc.collect()  # the trainer that also holds the kvstore (in reference cycles), so that the next line frees it
    signal.signal(signal.SIGALRM, signal.SIG_DFL)
    signal.alarm(_LEAVE_WAIT)
    _KV = None  # MXKVStoreFree: ps-lite's Finalize, without the barrier
    signal.alarm(0)


#: seconds a worker may take to leave the kvstore at exit
_LEAVE_WAIT = 30


def _batchify(samples, resize: int | None):
    """Stack a batch, then convert and resize it at once: NHWC floats in [0, 1], resized, to NCHW."""
    images = numpy.stack([image for image, _ in samples])
    X = np.array(images[..., None], dtype="float32") / 255
    if resize:
        X = npx.image.resize(X, size=(resize, resize), interp=1)  # interp=1: bilinear
    return X.transpose(0, 3, 1, 2), np.array([label for _, label in samples], dtype="int32")


def _materialize(net) -> None:
    """Make the first call, to which Gluon defers parameter shapes, so that weights can be read and set;
    a model never initialized gets Gluon's default initializer first."""
    size = spec.min_image_size(net.num_classes)
    net(np.zeros((1, net.in_channels, size, size), ctx=_device(net)))
    # A model's first call outside autograd.record() has MKL-DNN reorder its weights in place, in the engine's
    # thread, unseen by a read or a write of the weights that follows: wait for it (without this, on a busy CPU,
    # 5 of 16 reads of a trained model's weights here were off, 2 of them by twice the largest weight)
    mx.nd.waitall()


def _device(net) -> mx.Context:
    """Where ``net``'s parameters are; a model never initialized gets Gluon's default initializer first
    (the book's ``net.initialize()``), so that a fresh ``NiN()`` works everywhere without it."""
    try:
        return list(net.collect_params().values())[0].list_ctx()[0]
    except RuntimeError:  # "has not been initialized"
        net.initialize()
        return mx.cpu()


def _convs(net):
    """``(canonical name, Conv2D)`` for each convolution, in model order (see :func:`nin.spec.weight_shapes`)."""
    return spec.named_convs([m for m in block if isinstance(m, nn.Conv2D)] for block in net
                            if isinstance(block, nn.HybridSequential))
