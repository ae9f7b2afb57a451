"""NiN in Keras on TensorFlow (d2l.ai, section "Network in Network").

Use it as the book uses ``d2l``::

    from nin import tf as nin
    net = nin.NiN()

Keras's side of the framework differences, written down once here:

- layout: NHWC (channels last); kernels are kH,kW,I,O. Everything this module
  takes or reports in the neutral description's channels-first layout
  (``input_shape``, summary ``shape``) is converted here, and only here.
- padding: ``'valid'`` or ``'same'`` rather than integers, as the book's Keras tab writes
  them. NiN only pads by ``(kernel_size - 1) // 2`` at stride 1 with odd kernels, which is
  exactly ``'same'``; no padding is ``'valid'`` (the tests check the shapes against :mod:`nin.spec`).
- activation: ``activation='relu'`` inside each ``Conv2D``.
- input channels: inferred at build; ``NiN`` builds itself for ``in_channels``.
- global pooling: ``GlobalAveragePooling2D(keepdims=True)`` keeps 1x1, then
  ``Flatten``; the book's ``Reshape((1, 1, 10))`` is not needed.
"""

from __future__ import annotations

import contextlib
import os

import numpy

from nin import api, data, frameworks, inits, spec

with frameworks.importing("tf"):  # Keras 3 on TensorFlow (nin.frameworks)
    import tensorflow as tf
    from tensorflow import keras

#: the precisions ``train`` offers (bfloat16 through a Keras dtype policy)
PRECISIONS = ("float32", "bfloat16")

__all__ = api.BOOK_NAMES


def nin_block(num_channels, kernel_size: int, strides: int, padding: str,
              num_1x1: int = spec.NUM_1X1) -> keras.Sequential:
    """A NiN block: one convolution, then ``num_1x1`` (the book's two) 1x1 convolutions, each followed by ReLU.

    The block's width may also be a sequence: each convolution's own output channels (the gradual head).
    """
    channels = spec.block_channels(num_channels, num_1x1)
    layers = [keras.layers.Conv2D(channels[0], kernel_size, strides=strides, padding=padding, activation="relu")]
    for c in channels[1:]:
        layers.append(keras.layers.Conv2D(c, kernel_size=1, activation="relu"))
    return keras.Sequential(layers)


class NiN(keras.Sequential):
    """The book's NiN as a ``keras.Sequential`` of ten layers, built at once for ``in_channels``, with the
    exercises' variants: ``num_1x1`` 1x1 convolutions per block, and the last block's ``head``
    (:func:`nin.spec.head_channels`). Inputs are N,H,W,C; images smaller than
    :func:`nin.spec.min_image_size` get a ``ValueError``.
    """

    def __init__(self, num_classes: int = spec.NUM_CLASSES, in_channels: int = spec.IN_CHANNELS,
                 dropout: float = spec.DROPOUT, num_1x1: int = spec.NUM_1X1, head: str = spec.HEAD):
        spec.check_positive_int("in_channels", in_channels)
        spec.check_model(num_classes, dropout, num_1x1, head)
        super().__init__([
            nin_block(96, kernel_size=11, strides=4, padding="valid", num_1x1=num_1x1),
            keras.layers.MaxPool2D(pool_size=3, strides=2),
            nin_block(256, kernel_size=5, strides=1, padding="same", num_1x1=num_1x1),
            keras.layers.MaxPool2D(pool_size=3, strides=2),
            nin_block(384, kernel_size=3, strides=1, padding="same", num_1x1=num_1x1),
            keras.layers.MaxPool2D(pool_size=3, strides=2),
            keras.layers.Dropout(dropout),
            # There are 10 label classes (num_classes); the gradual head narrows to them step by step
            nin_block(spec.head_channels(num_classes, num_1x1, head), kernel_size=3, strides=1, padding="same",
                      num_1x1=num_1x1),
            keras.layers.GlobalAveragePooling2D(keepdims=True),  # the book's Reshape((1, 1, 10)) is not needed
            keras.layers.Flatten(),
        ])
        self.num_classes, self.in_channels, self.num_1x1, self.head = num_classes, in_channels, num_1x1, head
        self.build((None, None, None, in_channels))

    def call(self, inputs, training=None, mask=None, **kwargs):
        _, height, width, channels = inputs.shape
        if None not in (height, width, channels):  # unknown while Keras traces a graph
            spec.check_channels(channels, self.in_channels)
            spec.check_image_size(height, width, self.num_classes)
        return super().call(inputs, training=training, mask=mask, **kwargs)


def summary(net: NiN, input_shape=(1, spec.IN_CHANNELS, spec.BOOK_RESIZE, spec.BOOK_RESIZE)) -> list[dict]:
    """The book's per-layer table, computed by running ``net`` on a random batch of ``input_shape`` (N,C,H,W).

    Each row has the layer's ``name``, ``kind`` (see :data:`nin.spec.KINDS`), channels-first ``shape``,
    the ``native_shape`` Keras produced (N,H,W,C) and its number of ``params``.
    """
    spec.check_input_shape(input_shape, net.num_classes)
    spec.check_channels(input_shape[1], net.in_channels)
    n, c, h, w = input_shape
    X = tf.random.uniform((n, h, w, c))
    rows = []
    for layer, kind in zip(net.layers, spec.LAYER_KINDS, strict=True):
        X = layer(X)
        rows.append({
            "name": layer.__class__.__name__,
            "kind": kind,
            "shape": spec.channels_first(X.shape),
            "native_shape": list(X.shape),
            "params": layer.count_params(),
        })
    return rows


load_data_fashion_mnist, train, evaluate_accuracy, predict, save_weights, load_weights = api.bind(__name__)


# The hooks of the protocol nin.api.Backend: what training, evaluation and weights files need from Keras.

def default_device() -> str:
    return "/GPU:0" if tf.config.list_physical_devices("GPU") else "/CPU:0"


def from_numpy(X: numpy.ndarray) -> tf.Tensor:
    return tf.constant(X.transpose(0, 2, 3, 1) if X.ndim == 4 else X)  # images NCHW to NHWC


def to_numpy(X: tf.Tensor) -> numpy.ndarray:
    X = X.numpy()
    return X.transpose(0, 3, 1, 2) if X.ndim == 4 else X  # images NHWC to NCHW


def loader(split: data.Split, sampler: data.BatchSampler, resize: int | None):
    """A ``tf.data`` pipeline: index batches from ``sampler``, then one gather and resize per batch."""
    images, labels = tf.constant(split[0]), tf.constant(split[1], dtype=tf.int32)

    def batch(indices):
        X = tf.cast(tf.gather(images, indices), tf.float32)[..., None] / 255  # NHWC
        if resize:
            X = tf.image.resize(X, (resize, resize), method="bilinear")
        return X, tf.gather(labels, indices)

    # One batch prepared ahead on a background thread, without tf.data's autotuning: its thread sleeps
    # longer and longer between rounds, and the end of an epoch waits for it to wake (docs/speed.md).
    options = tf.data.Options()
    options.autotune.enabled = False
    dataset = (tf.data.Dataset.from_generator(lambda: iter(sampler), output_signature=tf.TensorSpec((None,), tf.int64))
               .map(batch)
               .apply(tf.data.experimental.assert_cardinality(len(sampler)))
               .prefetch(1)
               .with_options(options))
    dataset.nin_sampler = sampler
    return dataset


def init_weights(net: NiN, init: str | None, seed: int) -> None:
    """The book's Xavier-uniform (Glorot, Keras's default) kernels, or Kaiming-uniform for ReLU, and zero
    biases ("centered": then made zero-mean, :func:`nin.inits.centered`); None keeps the weights."""
    seeds = keras.random.SeedGenerator(seed)
    for _, conv in _convs(net) if init is not None else ():
        initializer = keras.initializers.GlorotUniform if init == "xavier" else keras.initializers.HeUniform
        conv.kernel.assign(initializer(seed=seeds)(conv.kernel.shape))
        conv.bias.assign(numpy.zeros(conv.bias.shape, dtype="float32"))
    if init == "centered":
        set_weights(net, inits.centered(get_weights(net)))


def get_weights(net: NiN) -> dict[str, numpy.ndarray]:
    """The weights in the canonical layout: Keras's kH,kW,I,O kernels become O,I,kH,kW."""
    tensors = {}
    for name, conv in _convs(net):
        tensors[f"{name}.weight"] = numpy.ascontiguousarray(conv.kernel.numpy().transpose(3, 2, 0, 1))
        tensors[f"{name}.bias"] = conv.bias.numpy()
    return tensors


def set_weights(net: NiN, tensors: dict[str, numpy.ndarray]) -> None:
    spec.check_weights(tensors, net.in_channels, net.num_classes, net.num_1x1, net.head)
    for name, conv in _convs(net):
        conv.kernel.assign(tensors[f"{name}.weight"].transpose(2, 3, 1, 0))  # O,I,kH,kW to kH,kW,I,O
        conv.bias.assign(tensors[f"{name}.bias"])


def seed_epoch(net: NiN, seed: int) -> None:
    """Seed TensorFlow, and Keras's dropout, whose generator keeps its own state in the model."""
    keras.utils.set_random_seed(seed)
    for layer in net.layers:
        if isinstance(layer, keras.layers.Dropout) and layer.rate > 0:  # rate 0 makes no generator
            layer.seed_generator.state.assign(numpy.array([seed, 0], dtype="int64"))


@contextlib.contextmanager
def trainer(net: NiN, device, precision: str, clip: float | None = None, world=None):
    """The book's step: plain SGD on the mean cross-entropy; bfloat16 through a Keras dtype policy; ``clip``
    through ``tf.clip_by_global_norm``. Data-parallel (``world`` of several workers): the gradients of each
    worker's loss sum over the whole batch, summed over the workers by the ``MultiWorkerMirroredStrategy`` of
    :func:`join` (its collective all-reduce), then clipped and applied here, as one process's."""
    with tf.device(device):
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        optimizer = keras.optimizers.SGD()
        _set_precision(net, precision)

        # A graph, not eager calls; not XLA (jit_compile), which runs NiN slower than oneDNN on CPUs.
        @tf.function
        def graph_step(X, y):
            with tf.GradientTape() as tape:
                y_hat = tf.cast(net(X, training=True), tf.float32)
                l = loss(y, y_hat)
            grads = tape.gradient(l, net.trainable_variables)
            if clip:
                grads, _ = tf.clip_by_global_norm(grads, clip)
            optimizer.apply_gradients(zip(grads, net.trainable_variables, strict=True))
            return l, y_hat

        def step(X, y, lr, total):
            optimizer.learning_rate.assign(lr)  # a variable the graph reads: setting it does not retrace
            l, y_hat = graph_step(X, y)
            correct = tf.reduce_sum(tf.cast(tf.argmax(y_hat, axis=1, output_type=y.dtype) == y, tf.int32))
            return l * X.shape[0], correct, X.shape[0]

        try:
            yield _parallel_step(net, optimizer, clip) if world is not None and world.size > 1 else step
        finally:
            _set_precision(net, "float32")


def logits(net: NiN, X: tf.Tensor, device=None) -> numpy.ndarray:
    with tf.device(device or default_device()):
        return net(X, training=False).numpy()


def to_onnx(net: NiN, path, opset: int) -> None:
    """tf2onnx on a ``tf.function`` that takes N,C,H,W images (its ``from_keras`` fails on Keras 3 models)."""
    try:
        import tf2onnx
    except ImportError as err:
        raise ImportError("Keras's ONNX exporter is tf2onnx, which is not installed: install it with  "
                          "pip install tf2onnx") from err
    signature = (tf.TensorSpec((None, net.in_channels, None, None), tf.float32, name="images"),)
    function = tf.function(lambda images: net(tf.transpose(images, (0, 2, 3, 1)), training=False))
    tf2onnx.convert.from_function(function, input_signature=signature, opset=opset, output_path=os.fspath(path))


#: the strategy of this worker of data-parallel training (:func:`join`); None in one process
_STRATEGY = None


def join(world) -> None:
    """A ``tf.distribute.MultiWorkerMirroredStrategy`` over the workers of ``world`` (each at its own port of
    ``world.ports``, TensorFlow's gRPC server), its all-reduce a RING of collective ops; on a node with GPUs,
    the worker's own GPU alone. Keras's strategy needs every worker's address before it starts, which a worker
    of ``--nodes`` does not know: one node only."""
    global _STRATEGY
    if world.nodes > 1 or len(world.ports) < world.size:
        raise ValueError("Keras's MultiWorkerMirroredStrategy needs every worker's address, which --nodes does not "
                         "give: train the tf backend on one node (--workers N)")
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:  # one GPU per worker: the strategy would take every GPU it sees as a replica of its own
        if world.local_rank >= len(gpus):
            raise ValueError(f"{world.local_size} workers on a node with {len(gpus)} GPUs: one GPU per worker")
        tf.config.set_visible_devices(gpus[world.local_rank], "GPU")
    cluster = tf.train.ClusterSpec({"worker": [f"{world.host}:{port}" for port in world.ports]})
    resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(cluster, task_type="worker", task_id=world.rank,
                                                                    rpc_layer="grpc")
    ring = tf.distribute.experimental.CommunicationOptions(
        implementation=tf.distribute.experimental.CommunicationImplementation.RING)
    _STRATEGY = tf.distribute.MultiWorkerMirroredStrategy(cluster_resolver=resolver, communication_options=ring)


def all_sum(values) -> numpy.ndarray:
    return _sum_over_workers(tf.constant(values, dtype=tf.float64)).numpy()


@tf.function  # a graph: the strategy runs eagerly only with a warning of its overhead
def _sum_over_workers(values):
    """The sum over every worker of ``values`` (a tensor or a list of them), by the strategy's all-reduce."""
    return tf.nest.map_structure(lambda value: _STRATEGY.experimental_local_results(value)[0],
                                 _STRATEGY.run(_all_reduce, (values,)))


def _all_reduce(values):
    """In a replica of the strategy: the sum over every worker of ``values`` (copied to the replica's device
    first: a graph's input has none, and the all-reduce sends its result where its input is)."""
    values = tf.nest.map_structure(tf.identity, values)
    return tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM, values)


def _parallel_step(net, optimizer, clip):
    """The step of one worker of :data:`_STRATEGY`: a graph traced once, for batches of any length (the parts of
    a batch differ by an image between workers, and the last batch is smaller: a graph traced anew for a shape
    on some workers and not on others would no longer match their collective ops).

    The model and the optimizer were made outside the strategy's scope: plain variables, not mirrored ones.
    So the replica function (``strategy.run``) computes this worker's gradient of its loss sum over the whole
    batch (``total`` examples) and sums it over the workers with the strategy's all-reduce; the clip and
    the update run outside it, where the optimizer's own cross-replica sum (Keras's, for mirrored variables)
    has a single replica and adds nothing. Every worker then takes the same step from the same weights,
    rank 0's, which start broadcast (as the strategy does for variables made in its scope)."""
    if _STRATEGY is None:
        raise RuntimeError("a worker of data-parallel training joins the strategy first: nin.tf.join(world)")
    strategy, variables = _STRATEGY, net.trainable_variables
    rank = strategy.cluster_resolver.task_id
    start = [tf.convert_to_tensor(v) if rank == 0 else tf.zeros(v.shape, v.dtype) for v in variables]
    for variable, value in zip(variables, _sum_over_workers(start), strict=True):
        variable.assign(value)

    def replica_step(X, y, total):
        with tf.GradientTape() as tape:
            y_hat = tf.cast(net(X, training=True), tf.float32)
            l = tf.reduce_sum(keras.losses.sparse_categorical_crossentropy(y, y_hat, from_logits=True))  # its sum
            part = l / total  # this worker's part of the whole batch's mean
        grads = _all_reduce(tape.gradient(part, variables))
        return l, y_hat, grads

    def graph_step(X, y, total):
        l, y_hat, grads = tf.nest.map_structure(lambda value: strategy.experimental_local_results(value)[0],
                                                strategy.run(replica_step, (X, y, total)))
        if clip:
            grads, _ = tf.clip_by_global_norm(grads, clip)
        optimizer.apply_gradients(zip(grads, variables, strict=True))
        return l, y_hat

    traced = None

    def step(X, y, lr, total):
        nonlocal traced
        if traced is None:
            signature = (tf.TensorSpec((None, *X.shape[1:]), X.dtype), tf.TensorSpec((None,), y.dtype),
                         tf.TensorSpec((), tf.float32))
            traced = tf.function(graph_step, input_signature=signature)
        optimizer.learning_rate.assign(lr)
        l, y_hat = traced(X, y, tf.constant(total, dtype=tf.float32))
        correct = tf.reduce_sum(tf.cast(tf.argmax(y_hat, axis=1, output_type=y.dtype) == y, tf.int32))
        return l, correct, X.shape[0]

    return step


def _set_precision(net, precision: str) -> None:
    """Keras's dtype policy: "mixed_bfloat16" computes in bfloat16 and keeps float32 weights."""
    policy = keras.DTypePolicy("mixed_bfloat16" if precision == "bfloat16" else "float32")
    for layer in net._flatten_layers(include_self=False):
        layer.dtype_policy = policy


def _convs(net):
    """``(canonical name, Conv2D)`` for each convolution, in model order (see :func:`nin.spec.weight_shapes`)."""
    return spec.named_convs([m for m in block.layers if isinstance(m, keras.layers.Conv2D)] for block in net.layers
                            if isinstance(block, keras.Sequential))
