"""What the tests do the same way in every framework, written once per framework.

Inputs are numpy arrays in the neutral channels-first layout; each function converts
them to the framework's own tensors and layout, runs the framework, and converts back.
"""

from __future__ import annotations

import numpy as np


def forward(name: str, net, X: np.ndarray) -> np.ndarray:
    """Logits of ``net`` for the NCHW batch ``X``, in inference mode."""
    return _FORWARD[name](net, X)


def gradients(name: str, net, X: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray | None]:
    """Each parameter's gradient of the mean cross-entropy, in training mode (``None``: no gradient)."""
    return _GRADIENTS[name](net, X, y)


def num_params(name: str, net) -> int:
    """The framework's own count of the model's parameters."""
    return _NUM_PARAMS[name](net)


def _forward_torch(net, X):
    import torch

    net.eval()
    with torch.no_grad():
        return net(torch.from_numpy(X)).numpy()


def _forward_mxnet(net, X):
    from mxnet import np as mnp

    return net(mnp.array(X)).asnumpy()


def _forward_tf(net, X):
    return net(X.transpose(0, 2, 3, 1), training=False).numpy()


def _gradients_torch(net, X, y):
    import torch

    net.train()
    loss = torch.nn.functional.cross_entropy(net(torch.from_numpy(X)), torch.from_numpy(y))
    loss.backward()
    return {name: None if p.grad is None else p.grad.numpy() for name, p in net.named_parameters()}


def _gradients_mxnet(net, X, y):
    from mxnet import autograd, gluon
    from mxnet import np as mnp

    with autograd.record():
        loss = gluon.loss.SoftmaxCrossEntropyLoss()(net(mnp.array(X)), mnp.array(y)).mean()
    loss.backward()
    return {name: p.grad().asnumpy() for name, p in net.collect_params().items()}


def _gradients_tf(net, X, y):
    import tensorflow as tf

    with tf.GradientTape() as tape:
        logits = net(X.transpose(0, 2, 3, 1), training=True)
        loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(y, logits))
    grads = tape.gradient(loss, net.trainable_variables)
    return {v.path: None if g is None else g.numpy() for v, g in zip(net.trainable_variables, grads, strict=True)}


_FORWARD = {"mxnet": _forward_mxnet, "torch": _forward_torch, "tf": _forward_tf}
_GRADIENTS = {"mxnet": _gradients_mxnet, "torch": _gradients_torch, "tf": _gradients_tf}
_NUM_PARAMS = {
    "mxnet": lambda net: sum(p.data().size for p in net.collect_params().values()),
    "torch": lambda net: sum(p.numel() for p in net.parameters()),
    "tf": lambda net: net.count_params(),
}


def to_numpy(tensor) -> np.ndarray:
    """A framework's tensor as a numpy array."""
    return tensor.asnumpy() if hasattr(tensor, "asnumpy") else tensor.numpy()


def to_numpy_nchw(name: str, X) -> np.ndarray:
    """A batch from a backend's loader as a numpy NCHW array."""
    X = to_numpy(X)
    return X.transpose(0, 3, 1, 2) if name == "tf" else X


def weights(name: str, net) -> dict[str, np.ndarray]:
    """The model's weights in the canonical layout (the backend's own conversion)."""
    import nin

    return nin.backend(name)._get_weights(net)


def book_train(name: str, net, train_iter, num_epochs: int, lr: float) -> list[float]:
    """The book's ``train_ch6`` training loop, as d2l.ai writes it, without its plots; returns each
    epoch's wall time (data loading included; the loops add up the loss and accuracy every batch,
    as the book's do, which also waits for MXNet's asynchronous engine)."""
    return _BOOK_TRAIN[name](net, train_iter, num_epochs, lr)


def _book_train_torch(net, train_iter, num_epochs, lr):
    import time

    import torch
    from torch import nn

    def init_weights(m):
        if type(m) == nn.Linear or type(m) == nn.Conv2d:  # noqa: E721 (the book's test)
            nn.init.xavier_uniform_(m.weight)
    net.apply(init_weights)
    device = torch.device("cpu")
    net.to(device)
    optimizer = torch.optim.SGD(net.parameters(), lr=lr)
    loss = nn.CrossEntropyLoss()
    seconds = []
    for _ in range(num_epochs):
        start, metric = time.perf_counter(), [0.0, 0.0, 0]
        net.train()
        for X, y in train_iter:
            optimizer.zero_grad()
            X, y = X.to(device), y.to(device)
            y_hat = net(X)
            l = loss(y_hat, y)
            l.backward()
            optimizer.step()
            with torch.no_grad():
                metric = [metric[0] + float(l * X.shape[0]), metric[1] + float((y_hat.argmax(1) == y).sum()),
                          metric[2] + X.shape[0]]
        seconds.append(time.perf_counter() - start)
    return seconds


def _book_train_mxnet(net, train_iter, num_epochs, lr):
    import time

    import mxnet as mx
    from mxnet import autograd, gluon, init

    device = mx.cpu()
    net.initialize(force_reinit=True, ctx=device, init=init.Xavier())
    loss = gluon.loss.SoftmaxCrossEntropyLoss()
    trainer = gluon.Trainer(net.collect_params(), "sgd", {"learning_rate": lr})
    seconds = []
    for _ in range(num_epochs):
        start, metric = time.perf_counter(), [0.0, 0.0, 0]
        for X, y in train_iter:
            X, y = X.as_in_ctx(device), y.as_in_ctx(device)
            with autograd.record():
                y_hat = net(X)
                l = loss(y_hat, y)
            l.backward()
            trainer.step(X.shape[0])
            metric = [metric[0] + float(l.sum()), metric[1] + float((y_hat.argmax(axis=1).astype(y.dtype) == y).sum()),
                      metric[2] + X.shape[0]]
        seconds.append(time.perf_counter() - start)
    return seconds


def _book_train_tf(net, train_iter, num_epochs, lr):
    # d2l's TensorFlow train_ch6 compiles the model and calls fit (its callback plots and times).
    import time

    import tensorflow as tf

    class Timer(tf.keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.seconds = []

        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.seconds.append(time.perf_counter() - self.start)

    optimizer = tf.keras.optimizers.SGD(learning_rate=lr)
    loss = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    net.compile(optimizer=optimizer, loss=loss, metrics=["accuracy"])
    timer = Timer()
    net.fit(train_iter, epochs=num_epochs, verbose=0, callbacks=[timer])
    return timer.seconds


_BOOK_TRAIN = {"mxnet": _book_train_mxnet, "torch": _book_train_torch, "tf": _book_train_tf}


def book_loader(name: str, images: np.ndarray, labels: np.ndarray, batch_size: int, resize: int | None):
    """The book's training iterator (d2l's ``load_data_fashion_mnist``) over in-memory uint8 ``images``
    (N,28,28) and ``labels``, in place of its own download: PyTorch and Gluon resize and convert
    each image in 4 worker processes (d2l's ``get_dataloader_workers``), Keras resizes per batch."""
    return _BOOK_LOADER[name](images, labels, batch_size, resize)


def _book_loader_torch(images, labels, batch_size, resize):
    # torchvision's FashionMNIST with transforms.Resize and ToTensor, as PIL images (torchvision
    # cannot be imported beside this PyTorch).
    import torch
    from PIL import Image

    class FashionMNIST(torch.utils.data.Dataset):
        def __len__(self):
            return len(images)

        def __getitem__(self, i):
            image = Image.fromarray(images[i], mode="L")
            if resize:
                image = image.resize((resize, resize), Image.BILINEAR)
            return torch.from_numpy(np.asarray(image, dtype=np.float32) / 255)[None], int(labels[i])

    return torch.utils.data.DataLoader(FashionMNIST(), batch_size, shuffle=True, num_workers=4)


def _book_loader_mxnet(images, labels, batch_size, resize):
    from mxnet import gluon
    from mxnet import np as mnp

    dataset = gluon.data.vision
    trans = [dataset.transforms.ToTensor()]
    if resize:
        trans.insert(0, dataset.transforms.Resize(resize))
    trans = dataset.transforms.Compose(trans)
    mnist_train = gluon.data.ArrayDataset(mnp.array(images[..., None], dtype="uint8"), labels).transform_first(trans)
    return gluon.data.DataLoader(mnist_train, batch_size, shuffle=True, num_workers=4)


def _book_loader_tf(images, labels, batch_size, resize):
    import tensorflow as tf

    process = lambda X, y: (tf.expand_dims(X, axis=3) / 255, tf.cast(y, dtype="int32"))  # noqa: E731
    resize_fn = lambda X, y: (tf.image.resize_with_pad(X, resize, resize) if resize else X, y)  # noqa: E731
    return tf.data.Dataset.from_tensor_slices(process(images, labels)).batch(batch_size).shuffle(
        len(images)).map(resize_fn)


_BOOK_LOADER = {"mxnet": _book_loader_mxnet, "torch": _book_loader_torch, "tf": _book_loader_tf}


def seed(name: str, value: int) -> None:
    """Seed the framework's global random generator, as the trainers do before initializing."""
    if name == "torch":
        import torch
        torch.manual_seed(value)
    elif name == "mxnet":
        import mxnet
        mxnet.random.seed(value)
    else:
        import keras
        keras.utils.set_random_seed(value)


def init(name: str, net, how: str, seed: int) -> None:
    """Initialize ``net``'s weights as the backend's trainer does (``how``: "xavier" or "kaiming")."""
    import nin

    backend = nin.backend(name)
    if name == "mxnet":
        import mxnet

        backend._init_weights(net, how, mxnet.cpu())
    elif name == "torch":
        backend._init_weights(net, how)
    else:
        backend._init_weights(net, how, seed)


def load_canonical(path) -> dict[str, np.ndarray]:
    """The tensors of a weights file."""
    from nin import weights as weights_file

    return weights_file.load(path)[0]
