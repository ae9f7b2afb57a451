"""NiN in JAX with Flax NNX (d2l.ai, section "Network in Network").

Use it as the book uses ``d2l``::

    from nin import jax as nin
    net = nin.NiN()

JAX's side of the framework differences, written down once here:

- layout: NHWC (channels last), as Keras; kernels are kH,kW,I,O. Everything this module
  takes or reports in the neutral description's channels-first layout (``input_shape``,
  summary ``shape``, weights files, ``from_numpy`` and ``to_numpy``) is converted here, and only here.
- padding: integers, as the book gives them: ``nnx.Conv`` pads ``p`` on both sides of both
  spatial axes (``((p, p), (p, p))``); kernel sizes and strides are pairs (an integer kernel
  size would make a 1-D convolution in NNX).
- activation: ``nnx.relu``, a plain function, after each convolution in the block's ``nnx.Sequential``.
- input channels: given (``in_channels``), since ``nnx.Conv`` creates its weights at once.
- global pooling: a mean over H and W that keeps 1x1, then a flatten; ``nnx.max_pool`` for
  the 3x3 windows at stride 2 (Flax has functions, not layers, for both: small modules here).
- default init: LeCun normal (truncated) kernels and zero biases (``nnx.Conv``'s own), drawn
  when the model is built; ``init_weights`` draws the book's Xavier (Glorot) uniform instead.
- randomness: explicit keys. The model draws its weights and its dropout masks from the
  ``nnx.Rngs`` it is built with (``rngs``, ``nnx.Rngs(0)`` when none is given), and dropout
  keeps its own key stream, which ``seed_epoch`` resets; there is no global generator to seed.
- training and inference mode: ``net.train()`` and ``net.eval()`` switch dropout on and off.
- threads: XLA's CPU client computes on every core the process may run on (its affinity), in
  its own thread pool.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import itertools

import numpy

from nin import api, data, frameworks, inits, spec

with frameworks.importing("jax"):
    import jax
    import jax.numpy as jnp
    import optax
    from flax import nnx
    from jax.experimental import multihost_utils

#: the precisions ``train`` offers (bfloat16: the forward and backward pass in bfloat16, float32 weights)
PRECISIONS = ("float32", "bfloat16")

__all__ = api.BOOK_NAMES


def nin_block(in_channels: int, out_channels, kernel_size, strides, padding, rngs: nnx.Rngs,
              num_1x1: int = spec.NUM_1X1) -> nnx.Sequential:
    """A NiN block: one convolution, then ``num_1x1`` (the book's two) 1x1 convolutions, each followed by ReLU.

    ``kernel_size`` and ``strides`` are integers or pairs, ``padding`` an integer or a pair of them
    (one per spatial axis, as the book writes ``padding=(0, 0)``); ``rngs`` draws the weights.
    The block's width may also be a sequence: each convolution's own output channels (the gradual head).
    """
    channels = spec.block_channels(out_channels, num_1x1)
    layers = [nnx.Conv(in_channels, channels[0], _pair(kernel_size), _pair(strides), padding=padding, rngs=rngs),
              nnx.relu]
    for i, o in itertools.pairwise(channels):
        layers += [nnx.Conv(i, o, kernel_size=(1, 1), rngs=rngs), nnx.relu]
    return nnx.Sequential(*layers)


class NiN(nnx.Sequential):
    """The book's NiN as an ``nnx.Sequential`` of ten layers, with ``in_channels`` (the images' channels, which
    ``nnx.Conv`` needs), the exercises' variants (``num_1x1`` 1x1 convolutions per block, and the last block's
    ``head``: :func:`nin.spec.head_channels`), and the ``nnx.Rngs`` its weights and dropout masks are drawn
    from (``nnx.Rngs(0)`` when none is given). Inputs are N,H,W,C; images smaller than
    :func:`nin.spec.min_image_size` get a ``ValueError``.
    """

    def __init__(self, num_classes: int = spec.NUM_CLASSES, in_channels: int = spec.IN_CHANNELS,
                 dropout: float = spec.DROPOUT, num_1x1: int = spec.NUM_1X1, head: str = spec.HEAD, *,
                 rngs: nnx.Rngs | None = None):
        spec.check_positive_int("in_channels", in_channels)
        spec.check_model(num_classes, dropout, num_1x1, head)
        rngs = nnx.Rngs(0) if rngs is None else rngs
        super().__init__(
            nin_block(in_channels, 96, kernel_size=(11, 11), strides=(4, 4), padding=(0, 0), rngs=rngs,
                      num_1x1=num_1x1),
            _MaxPool(pool_size=3, strides=2),
            nin_block(96, 256, kernel_size=(5, 5), strides=(1, 1), padding=(2, 2), rngs=rngs, num_1x1=num_1x1),
            _MaxPool(pool_size=3, strides=2),
            nin_block(256, 384, kernel_size=(3, 3), strides=(1, 1), padding=(1, 1), rngs=rngs, num_1x1=num_1x1),
            _MaxPool(pool_size=3, strides=2),
            nnx.Dropout(dropout, rngs=rngs),
            # There are 10 label classes (num_classes); the gradual head narrows to them step by step
            nin_block(384, spec.head_channels(num_classes, num_1x1, head), kernel_size=(3, 3), strides=(1, 1),
                      padding=(1, 1), rngs=rngs, num_1x1=num_1x1),
            _GlobalAvgPool(),  # global average pooling, kept 1x1
            _Flatten())  # the logits, (batch size, 10)
        self.num_classes, self.in_channels, self.num_1x1, self.head = num_classes, in_channels, num_1x1, head

    def __call__(self, X: jax.Array, *, rngs: nnx.Rngs | jax.Array | None = None) -> jax.Array:
        _, height, width, channels = X.shape  # known while JAX traces, too
        spec.check_channels(channels, self.in_channels)
        spec.check_image_size(height, width, self.num_classes)
        return super().__call__(X, rngs=rngs)  # rngs: the dropout key of this call, in place of its own stream


# NNX's metaclass builds modules through ``__call__(*args, **kwargs)``: say what ``NiN(...)`` takes.
NiN.__signature__ = inspect.signature(NiN.__init__).replace(
    parameters=list(inspect.signature(NiN.__init__).parameters.values())[1:])


def summary(net: NiN, input_shape=(1, spec.IN_CHANNELS, spec.BOOK_RESIZE, spec.BOOK_RESIZE)) -> list[dict]:
    """The book's per-layer table, computed by running ``net`` on a random batch of ``input_shape`` (N,C,H,W).

    Each row has the layer's ``name``, ``kind`` (see :data:`nin.spec.KINDS`), channels-first ``shape``,
    the ``native_shape`` JAX produced (N,H,W,C) and its number of ``params``. Dropout is off (the model's
    random streams are left as they were).
    """
    spec.check_input_shape(input_shape, net.num_classes)
    spec.check_channels(input_shape[1], net.in_channels)
    n, c, h, w = input_shape
    X = jax.random.uniform(jax.random.key(0), (n, h, w, c))
    rows = []
    for layer, kind in zip(net.layers, spec.LAYER_KINDS, strict=True):
        X = layer(X, deterministic=True) if isinstance(layer, nnx.Dropout) else layer(X)
        rows.append({
            "name": type(layer).__name__.lstrip("_"),
            "kind": kind,
            "shape": spec.channels_first(X.shape),
            "native_shape": list(X.shape),
            "params": sum(p.size for p in jax.tree.leaves(nnx.state(layer, nnx.Param))),
        })
    return rows


load_data_fashion_mnist, train, evaluate_accuracy, predict, save_weights, load_weights = api.bind(__name__)


# The hooks of the protocol nin.api.Backend: what training, evaluation and weights files need from JAX.

def default_device() -> jax.Device:
    # JAX's default backend: a GPU or TPU if there is one, else the CPU; this process's own first device (a worker
    # of data-parallel training sees every worker's devices in jax.devices(), rank 0's first)
    return jax.local_devices()[0]


def from_numpy(X: numpy.ndarray) -> jax.Array:
    return jnp.asarray(X.transpose(0, 2, 3, 1) if X.ndim == 4 else X)  # images NCHW to NHWC


def to_numpy(X: jax.Array) -> numpy.ndarray:
    X = numpy.array(X)  # a copy: numpy's view of a jax array is read-only
    return X.transpose(0, 3, 1, 2) if X.ndim == 4 else X  # images NHWC to NCHW


def loader(split: data.Split, sampler: data.BatchSampler, resize: int | None):
    return data.Batches(split, sampler, resize, _batch)


def init_weights(net: NiN, init: str | None, seed: int) -> None:
    """The book's Xavier-uniform (Glorot) kernels, or Kaiming-uniform (He) kernels for ReLU, and zero biases
    ("centered": then made zero-mean, :func:`nin.inits.centered`); None keeps the weights. The kernels
    are drawn from ``jax.random.key(seed)``, and the dropout streams restart from ``seed``."""
    seed_epoch(net, seed)
    if init is None:
        return
    initializer = jax.nn.initializers.glorot_uniform() if init == "xavier" else jax.nn.initializers.he_uniform()
    convs = [conv for _, conv in _convs(net)]
    for conv, key in zip(convs, jax.random.split(jax.random.key(seed), len(convs)), strict=True):
        conv.kernel[...] = initializer(key, conv.kernel.shape, jnp.float32)
        conv.bias[...] = jnp.zeros(conv.bias.shape, dtype=jnp.float32)
    if init == "centered":
        set_weights(net, inits.centered(get_weights(net)))


def get_weights(net: NiN) -> dict[str, numpy.ndarray]:
    """The weights in the canonical layout: NNX's kH,kW,I,O kernels become O,I,kH,kW."""
    tensors = {}
    for name, conv in _convs(net):
        tensors[f"{name}.weight"] = numpy.ascontiguousarray(numpy.asarray(conv.kernel[...]).transpose(3, 2, 0, 1))
        tensors[f"{name}.bias"] = numpy.array(conv.bias[...])
    return tensors


def set_weights(net: NiN, tensors: dict[str, numpy.ndarray]) -> None:
    spec.check_weights(tensors, net.in_channels, net.num_classes, net.num_1x1, net.head)
    for name, conv in _convs(net):
        conv.kernel[...] = jnp.asarray(tensors[f"{name}.weight"].transpose(2, 3, 1, 0))  # O,I,kH,kW to kH,kW,I,O
        conv.bias[...] = jnp.asarray(tensors[f"{name}.bias"])


def seed_epoch(net: NiN, seed: int) -> None:
    """Restart every dropout's key stream from ``seed`` (NNX keeps one per ``nnx.Dropout``, in the model)."""
    for layer in net.layers:
        if isinstance(layer, nnx.Dropout) and layer.rngs is not None:
            layer.rngs.key[...] = jax.random.key(seed)
            layer.rngs.count[...] = jnp.zeros((), dtype=jnp.uint32)


@contextlib.contextmanager
def trainer(net: NiN, device, precision: str, clip: float | None = None, world=None):
    """The book's step: plain SGD (optax) on the mean cross-entropy, one ``jax.jit`` function for the
    forward pass, the gradients and the update. Each step's learning rate is an argument of that function
    (``optax.inject_hyperparams``), so a new rate does not retrace. bfloat16: the model computes in
    bfloat16 from float32 weights cast at each step, the loss in float32; the gradients and updates are float32.
    ``clip`` through ``optax.clip_by_global_norm``. Data-parallel (``world`` of several workers): the same
    function over the whole batch as one array sharded across every worker's devices, the weights replicated;
    XLA sums the gradient over the workers (:func:`_parallel_step`)."""
    net.train()
    graphdef, params, rest = nnx.split(net, nnx.Param, ...)
    nnx.update(net, *jax.device_put((params, rest), device))
    optimizer = optax.inject_hyperparams(optax.sgd)(learning_rate=0.0)
    clipper = optax.clip_by_global_norm(clip) if clip else optax.identity()
    dtype = jnp.bfloat16 if precision == "bfloat16" else jnp.float32
    if world is not None and world.size > 1:
        yield _parallel_step(net, graphdef, optimizer, clipper, dtype, device, world)
        return
    opt_state = jax.device_put(optimizer.init(params), device)

    @jax.jit
    def jitted_step(params, rest, opt_state, X, y, lr, key):
        def loss(params):
            model = nnx.merge(graphdef, jax.tree.map(lambda p: p.astype(dtype), params), rest)
            y_hat = model(X.astype(dtype), rngs=key).astype(jnp.float32)
            return optax.softmax_cross_entropy_with_integer_labels(y_hat, y).mean(), y_hat

        (l, y_hat), grads = jax.value_and_grad(loss, has_aux=True)(params)
        grads, _ = clipper.update(grads, clipper.init(params))
        opt_state.hyperparams["learning_rate"] = lr
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, l, (y_hat.argmax(axis=1) == y).sum()

    def step(X, y, lr, total):
        nonlocal opt_state
        key = _dropout_key(net)  # this step's masks: the next key of the model's dropout stream
        params, rest = nnx.state(net, nnx.Param, ...)
        X, y = jax.device_put((X, y), device)
        params, opt_state, l, correct = jitted_step(params, rest, opt_state, X, y, lr, key)
        nnx.update(net, params)
        return l * X.shape[0], correct, X.shape[0]

    yield step


def logits(net: NiN, X: jax.Array, device=None) -> numpy.ndarray:
    net.eval()  # dropout off
    if device is not None:
        X = jax.device_put(X, device)
    return numpy.asarray(_forward(net, X))


def to_onnx(net: NiN, path, opset: int) -> None:
    """JAX has no ONNX exporter of its own, and nin takes no third-party one (jax2onnx's newest release
    needs a newer Flax than the 0.11.2 that runs beside MXNet on numpy 1.26): refused."""
    raise api.NoExporter("JAX has no ONNX exporter of its own, and jax2onnx's newest release does not install beside "
                         "the pinned Flax 0.11.2; nin's exporter (nin.export) builds the same ONNX model from the "
                         "weights file, with no framework")


def join(world) -> None:
    """``jax.distributed.initialize`` with rank 0's coordinator service at the coordinator's address (the world
    given, not detected from a cluster's environment); with several workers on a node, each its own GPU where
    there are GPUs (``local_device_ids``, which a CPU ignores). XLA's collectives across processes on CPUs: gloo."""
    jax.distributed.initialize(world.coordinator, world.size, world.rank,
                               local_device_ids=[world.local_rank] if world.local_size > 1 else None,
                               cluster_detection_method="deactivate")


def all_sum(values) -> numpy.ndarray:
    # gathered from every process by XLA (``process_allgather``), as raw bits: JAX computes in 32 bits unless
    # its x64 mode is on, which would turn float64 sums into float32 ones; summed here, in rank order
    bits = numpy.ascontiguousarray(numpy.asarray(values, dtype=numpy.float64)).view(numpy.uint32)
    gathered = numpy.ascontiguousarray(multihost_utils.process_allgather(bits))  # workers x 2 * len(values)
    return gathered.view(numpy.float64).sum(axis=0)


def _parallel_step(net: NiN, graphdef, optimizer, clipper, dtype, device, world):
    """The step of one worker of data-parallel training: one ``jax.jit`` function over a mesh of every worker's
    devices, the batch (``total`` images) one array sharded along its rows, each worker holding its part,
    the weights and the optimizer's state replicated. The loss is the sum of the per-image losses over the
    whole batch divided by ``total``: XLA sums each device's gradient across the processes (its all-reduce),
    and every worker takes the same step, clipped after that sum, from rank 0's weights (broadcast at the start,
    as DDP does). The model itself (``net``) keeps this process's own arrays, so that ``logits``,
    ``get_weights`` and the rest read it as in one process: each step replicates them and takes the new
    weights back from this worker's copy (no copy: the same buffers).

    A sharded array needs equal shards, but the parts of a batch are not equal (64 images on 3 workers: 22,
    21 and 21, :meth:`nin.workers.World.part`): each worker pads its part, with zero images, to
    ``ceil(total / workers)`` rows (a multiple of its devices), and those rows weigh 0 in the loss and the counts.

    Dropout: each worker's masks come from its own key stream (:func:`seed_epoch`, seeded per rank), not from a
    key common to the whole array: the step takes one key per device, sharded as the rows are, and the dropout
    layer draws the mask of each device's rows from that device's key (a worker on one device draws the mask
    one process would draw for a batch of its padded part). With dropout 0 no key is used."""
    if jax.process_count() != world.size:
        raise RuntimeError(f"{jax.process_count()} JAX processes for {world.size} workers: nin.jax.join(world) first")
    mesh = jax.sharding.Mesh(numpy.array(jax.devices()), ("batch",))
    rows = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("batch"))
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    blocks = jax.local_device_count()  # this worker's shards of the batch
    start = multihost_utils.broadcast_one_to_all(nnx.state(net, nnx.Param))  # rank 0's weights
    nnx.update(net, jax.device_put(start, device))
    params, rest = nnx.state(net, nnx.Param, ...)
    opt_state = _replicated(optimizer.init(params), replicated)
    # the model's other state (its dropout streams): the step takes its keys as an argument and never reads it
    rest = _replicated(rest, replicated)

    @functools.partial(jax.jit, out_shardings=(replicated, replicated, rows, rows))
    def jitted_step(params, opt_state, X, y, weight, lr, keys, total):
        def loss(params):
            model = nnx.merge(graphdef, jax.tree.map(lambda p: p.astype(dtype), params), rest)
            y_hat = _forward_blocks(model, X.astype(dtype), jax.random.wrap_key_data(keys)).astype(jnp.float32)
            losses = optax.softmax_cross_entropy_with_integer_labels(y_hat, y) * weight
            return losses.sum() / total, (losses, y_hat)

        (_, (losses, y_hat)), grads = jax.value_and_grad(loss, has_aux=True)(params)
        grads, _ = clipper.update(grads, clipper.init(params))
        opt_state.hyperparams["learning_rate"] = lr
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, losses, (y_hat.argmax(axis=1) == y) * weight

    def step(X, y, lr, total):
        nonlocal opt_state
        n = X.shape[0]
        part = -(-total // world.size)
        part = -(-part // blocks) * blocks  # every worker's rows: its part of the batch, padded
        key = _dropout_key(net)
        keys = jax.random.key_data(key[None] if blocks == 1 else jax.random.split(key, blocks))
        local = (jnp.pad(X, ((0, part - n),) + ((0, 0),) * (X.ndim - 1)), jnp.pad(y, (0, part - n)),
                 (numpy.arange(part) < n).astype(numpy.float32), keys)
        X, y, weight, keys = (jax.make_array_from_process_local_data(rows, a) for a in local)
        params = _replicated(nnx.state(net, nnx.Param), replicated)
        params, opt_state, losses, hits = jitted_step(params, opt_state, X, y, weight, lr, keys, total)
        nnx.update(net, jax.tree.map(lambda p: p.addressable_data(0), params))
        return _mine(losses), _mine(hits), n

    return step


def _replicated(tree, sharding):
    """This process's arrays (the same in every worker), each as one array replicated on every device of
    ``sharding``, from copies on this process's devices."""
    def one(x):
        x = jnp.asarray(x)
        devices = sharding.addressable_devices_indices_map(x.shape)  # in the order the sharding wants them
        return jax.make_array_from_single_device_arrays(x.shape, sharding, [jax.device_put(x, d) for d in devices])
    return jax.tree.map(one, tree)


def _mine(x: jax.Array) -> float:
    """The sum of this worker's rows of a sharded array (its shards may lie on several devices)."""
    return float(sum(numpy.asarray(shard.data).sum(dtype=numpy.float64) for shard in x.addressable_shards))


def _forward_blocks(model: NiN, X: jax.Array, keys: jax.Array) -> jax.Array:
    """``model`` on ``X`` (N,H,W,C) whose rows are ``len(keys)`` equal blocks: block ``i`` drops out with a mask
    drawn from ``keys[i]``, as one process draws its mask for a batch of the block's rows (:class:`NiN`'s call,
    with a key per block)."""
    _, height, width, channels = X.shape
    spec.check_channels(channels, model.in_channels)
    spec.check_image_size(height, width, model.num_classes)
    for layer in model.layers:
        if isinstance(layer, nnx.Dropout):
            blocks = X.reshape(len(keys), -1, *X.shape[1:])
            X = jax.vmap(lambda key, x, layer=layer: layer(x, rngs=key))(keys, blocks).reshape(X.shape)
        else:
            X = layer(X)
    return X


def _dropout_key(net: NiN) -> jax.Array:
    """The next key of the model's dropout stream (its count moves on), or any key if it has no dropout."""
    streams = [layer.rngs for layer in net.layers if isinstance(layer, nnx.Dropout) and layer.rngs is not None]
    return streams[0]() if streams else jax.random.key(0)


@nnx.jit
def _forward(net, X):
    return net(X)


class _MaxPool(nnx.Module):
    """``nnx.max_pool`` over square windows, without padding (a partial last window is dropped)."""

    def __init__(self, pool_size: int, strides: int):
        self.pool_size, self.strides = pool_size, strides

    def __call__(self, X: jax.Array) -> jax.Array:
        return nnx.max_pool(X, _pair(self.pool_size), strides=_pair(self.strides))


class _GlobalAvgPool(nnx.Module):
    """The mean over height and width, kept as 1x1 (N,1,1,C)."""

    def __call__(self, X: jax.Array) -> jax.Array:
        return X.mean(axis=(1, 2), keepdims=True)


class _Flatten(nnx.Module):
    """N,1,1,C to N,C: the logits."""

    def __call__(self, X: jax.Array) -> jax.Array:
        return X.reshape(X.shape[0], -1)


def _batch(images: numpy.ndarray, labels: numpy.ndarray, resize: int | None) -> tuple[jax.Array, jax.Array]:
    """A batch of :class:`nin.data.Batches`: one ``jax.image.resize`` of the gathered images.

    ``jax.image.resize(..., "bilinear")`` samples at half-pixel centres, as PyTorch's ``F.interpolate(...,
    align_corners=False)``: the same images to 1e-6 (28 to 67, 96, 101 or 224). Its antialiasing, on by
    default, changes only a shrinking resize (which NiN's sizes never need); it is off here, as in PyTorch.
    """
    return _to_images(jnp.asarray(images), resize), jnp.asarray(labels, dtype=jnp.int32)


@functools.partial(jax.jit, static_argnums=1)
def _to_images(images, resize):
    """uint8 N,H,W to float32 N,H,W,1 in [0, 1], resized bilinearly to ``resize`` x ``resize``."""
    X = images[..., None].astype(jnp.float32) / 255  # NHWC
    if resize:
        X = jax.image.resize(X, (X.shape[0], resize, resize, 1), method="bilinear", antialias=False)
    return X


def _convs(net):
    """``(canonical name, nnx.Conv)`` for each convolution, in model order (see :func:`nin.spec.weight_shapes`)."""
    return spec.named_convs([m for m in block.layers if isinstance(m, nnx.Conv)] for block in net.layers
                            if isinstance(block, nnx.Sequential))


def _pair(value) -> tuple[int, int]:
    """An integer for both spatial axes, or a pair as it is."""
    return (value, value) if isinstance(value, int) else tuple(value)
