"""NiN in Keras on TensorFlow (d2l.ai, section "Network in Network").

Use it as the book uses ``d2l``::

    from nin import tf as nin
    net = nin.NiN()

Keras's side of the framework differences, written down once here:

- layout: NHWC (channels last); kernels are kH,kW,I,O. Everything this module
  takes or reports in the neutral description's channels-first layout
  (``input_shape``, summary ``shape``) is converted here, and only here.
- padding: ``'valid'`` or ``'same'`` rather than integers. NiN only pads by
  ``(kernel_size - 1) // 2`` at stride 1 with odd kernels, which is exactly
  ``'same'``; no padding is ``'valid'`` (see :func:`_keras_padding`).
- activation: ``activation='relu'`` inside each ``Conv2D``.
- input channels: inferred at build; ``NiN`` builds itself for ``in_channels``.
- global pooling: ``GlobalAveragePooling2D(keepdims=True)`` keeps 1x1, then
  ``Flatten``; the book's ``Reshape((1, 1, 10))`` is not needed.
"""

from __future__ import annotations

import os

import numpy

from nin import data, missing_framework, spec, training, weights

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
try:
    import tensorflow as tf
    from tensorflow import keras
except ImportError as err:
    raise missing_framework("tf") from err
if keras.backend.backend() != "tensorflow":
    raise ImportError(f"the 'tf' backend needs Keras on TensorFlow, but Keras runs on "
                      f"{keras.backend.backend()!r}: unset KERAS_BACKEND or set it to 'tensorflow'")

#: the precisions ``train`` offers (bfloat16 through a Keras dtype policy)
PRECISIONS = ("float32", "bfloat16")

__all__ = ["nin_block", "NiN", "summary", "load_data_fashion_mnist", "train", "evaluate_accuracy", "predict",
           "save_weights", "load_weights"]


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
                self.add(nin_block(layer.channels, layer.kernel_size, layer.strides, _keras_padding(layer),
                                   layer.num_1x1))
            elif isinstance(layer, spec.MaxPool):
                self.add(keras.layers.MaxPool2D(pool_size=layer.pool_size, strides=layer.strides))
            elif isinstance(layer, spec.Dropout):
                self.add(keras.layers.Dropout(layer.rate))
            elif isinstance(layer, spec.GlobalAvgPool):
                self.add(keras.layers.GlobalAveragePooling2D(keepdims=True))
            elif isinstance(layer, spec.Flatten):
                self.add(keras.layers.Flatten())
        self.num_classes, self.in_channels, self.num_1x1, self.head = num_classes, in_channels, num_1x1, head
        self.build((None, None, None, in_channels))

    def call(self, inputs, training=None, mask=None, **kwargs):
        _, height, width, channels = inputs.shape
        if None not in (height, width, channels):  # unknown while Keras traces a graph
            spec.check_channels(channels, self.in_channels)
            spec.check_image_size(height, width, self.num_classes)
        return super().call(inputs, training=training, mask=mask, **kwargs)


def summary(net: NiN, input_shape=(1, spec.IN_CHANNELS, spec.BOOK_RESIZE, spec.BOOK_RESIZE)) -> list[dict]:
    """The book's per-layer table, computed by running ``net`` on a random batch.

    ``input_shape`` is channels-first N,C,H,W in every backend. Each row has the layer's
    ``name``, ``kind`` (see :data:`nin.spec.KINDS`), channels-first ``shape``, the
    ``native_shape`` the framework itself produced (in its own layout, see above) and its
    number of ``params``. A Gluon ``net`` must be initialized first, as in the book.
    """
    spec.check_input_shape(input_shape, net.num_classes)
    spec.check_channels(input_shape[1], net.in_channels)
    n, c, h, w = input_shape
    X = tf.random.uniform((n, h, w, c))
    rows = []
    for layer in net.layers:
        X = layer(X)
        rows.append({
            "name": layer.__class__.__name__,
            "kind": _KINDS[type(layer)],
            "shape": _channels_first(X.shape),
            "native_shape": list(X.shape),
            "params": layer.count_params(),
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
    device = device or _default_device()
    history, start = [], 0
    with tf.device(device):
        if resume:
            tensors, seed, init, history, start = run.resume()
            _set_weights(net, tensors)
        else:
            seed = training.new_seed() if seed is None else seed
            _init_weights(net, init, seed)
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        optimizer = keras.optimizers.SGD(learning_rate=lr)
        _set_precision(net, precision)

        # A graph, not eager calls; not XLA (jit_compile), which runs NiN slower than oneDNN on CPUs.
        @tf.function
        def step(X, y):
            with tf.GradientTape() as tape:
                y_hat = tf.cast(net(X, training=True), tf.float32)
                l = loss(y, y_hat)
            grads = tape.gradient(l, net.trainable_variables)
            optimizer.apply_gradients(zip(grads, net.trainable_variables, strict=True))
            return l, y_hat

        for epoch in range(start, num_epochs):
            _seed_epoch(net, training.epoch_seed(seed, epoch))
            data.set_epoch(train_iter, epoch)
            meter, bar = training.Meter(), training.progress(train_iter, epoch, num_epochs, quiet)
            for i, (X, y) in enumerate(bar):
                # a variable the graph reads: setting it does not retrace ``step``
                optimizer.learning_rate.assign(training.learning_rate(lr, schedule, warmup, num_epochs, epoch, i,
                                                                      len(train_iter)))
                l, y_hat = step(X, y)
                correct = tf.reduce_sum(tf.cast(tf.argmax(y_hat, axis=1, output_type=y.dtype) == y, tf.int32))
                meter.add(l * X.shape[0], correct, X.shape[0])
                training.show(bar, meter)
            meter.stop()
            history.append(meter.record(epoch, evaluate_accuracy(net, test_iter, device)))
            if run is not None:
                run.save(_get_weights(net), epoch=epoch, seed=seed, init=init, lr=lr, history=history)
        _set_precision(net, "float32")
    if not quiet and history:
        print(training.book_lines(history, device))
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
    with tf.device(device or _default_device()):
        for X, y in data_iter:
            yield tf.argmax(net(X, training=False), axis=1).numpy(), y.numpy()


def _set_precision(net, precision: str) -> None:
    """Keras's dtype policy: "mixed_bfloat16" computes in bfloat16 and keeps float32 weights."""
    policy = keras.DTypePolicy("mixed_bfloat16" if precision == "bfloat16" else "float32")
    for layer in net._flatten_layers(include_self=False):
        layer.dtype_policy = policy


def _default_device() -> str:
    return "/GPU:0" if tf.config.list_physical_devices("GPU") else "/CPU:0"


def _loader(split: data.Split, sampler: data.BatchSampler, resize: int | None):
    """A ``tf.data`` pipeline: index batches from ``sampler``, then one gather and resize per batch."""
    images, labels = tf.constant(split[0]), tf.constant(split[1], dtype=tf.int32)

    def batch(indices):
        X = tf.cast(tf.gather(images, indices), tf.float32)[..., None] / 255  # NHWC
        if resize:
            X = tf.image.resize(X, (resize, resize), method="bilinear")
        return X, tf.gather(labels, indices)

    # One batch prepared ahead on a background thread, without tf.data's autotuning: its thread sleeps
    # 10 ms, 20 ms, 40 ms... between rounds, and the end of an epoch waits for it to wake (up to 9 s
    # of an 11 s epoch at 224x224). Loading (over 2,000 images/s) is not what takes the time.
    options = tf.data.Options()
    options.autotune.enabled = False
    dataset = (tf.data.Dataset.from_generator(lambda: iter(sampler), output_signature=tf.TensorSpec((None,), tf.int64))
               .map(batch)
               .apply(tf.data.experimental.assert_cardinality(len(sampler)))
               .prefetch(1)
               .with_options(options))
    dataset.nin_sampler = sampler
    return dataset


def _init_weights(net, init: str | None, seed: int) -> None:
    """The book's Xavier-uniform (Glorot, Keras's default) kernels, or Kaiming-uniform for ReLU, and zero
    biases ("centered": then made zero-mean, :func:`nin.training.centered`); None keeps the weights."""
    seeds = keras.random.SeedGenerator(seed)
    for _, conv in _convs(net) if init is not None else ():
        initializer = keras.initializers.GlorotUniform if init == "xavier" else keras.initializers.HeUniform
        conv.kernel.assign(initializer(seed=seeds)(conv.kernel.shape))
        conv.bias.assign(numpy.zeros(conv.bias.shape, dtype="float32"))
    if init == "centered":
        _set_weights(net, training.centered(_get_weights(net)))


def _seed_epoch(net, seed: int) -> None:
    """Seed TensorFlow, and Keras's dropout, whose generator keeps its own state in the model."""
    keras.utils.set_random_seed(seed)
    for layer in net.layers:
        if isinstance(layer, keras.layers.Dropout) and layer.rate > 0:  # rate 0 makes no generator
            layer.seed_generator.state.assign(numpy.array([seed, 0], dtype="int64"))


def _model_args(net) -> dict:
    """The arguments ``NiN`` was built with (all but ``dropout``), as weights files record them."""
    return {"num_classes": net.num_classes, "in_channels": net.in_channels, "num_1x1": net.num_1x1,
            "head": net.head}


def _convs(net):
    """``(canonical name, Conv2D)`` for each convolution, in model order (see :func:`nin.spec.weight_shapes`)."""
    blocks = [m for m in net.layers if isinstance(m, keras.Sequential)]
    for b, block in enumerate(blocks):
        for c, conv in enumerate(m for m in block.layers if isinstance(m, keras.layers.Conv2D)):
            yield f"blocks.{b}.convs.{c}", conv


def _get_weights(net) -> dict[str, numpy.ndarray]:
    """The weights in the canonical layout: Keras's kH,kW,I,O kernels become O,I,kH,kW."""
    tensors = {}
    for name, conv in _convs(net):
        tensors[f"{name}.weight"] = numpy.ascontiguousarray(conv.kernel.numpy().transpose(3, 2, 0, 1))
        tensors[f"{name}.bias"] = conv.bias.numpy()
    return tensors


def _set_weights(net, tensors: dict[str, numpy.ndarray]) -> None:
    """Load canonical weights; checks all of them first, so a refused file changes nothing."""
    spec.check_weights(tensors, net.in_channels, net.num_classes, net.num_1x1, net.head)
    for name, conv in _convs(net):
        conv.kernel.assign(tensors[f"{name}.weight"].transpose(2, 3, 1, 0))  # O,I,kH,kW to kH,kW,I,O
        conv.bias.assign(tensors[f"{name}.bias"])


def _keras_padding(block: spec.NinBlock) -> str:
    """The neutral description's integer padding as Keras's ``'valid'`` or ``'same'``."""
    if block.padding == 0:
        return "valid"
    if block.strides == 1 and block.kernel_size % 2 == 1 and block.padding == block.kernel_size // 2:
        return "same"
    raise ValueError(f"Keras cannot pad {block.padding} around a {block.kernel_size}x"
                     f"{block.kernel_size} convolution at stride {block.strides} with 'valid' or 'same'")


def _channels_first(shape) -> list[int]:
    """NHWC to NCHW; 2-D shapes (after Flatten) are the same in both layouts."""
    shape = list(shape)
    return [shape[0], shape[3], shape[1], shape[2]] if len(shape) == 4 else shape


_KINDS = {keras.Sequential: "nin_block", keras.layers.MaxPool2D: "maxpool",
          keras.layers.Dropout: "dropout", keras.layers.GlobalAveragePooling2D: "global_avg_pool",
          keras.layers.Flatten: "flatten"}
