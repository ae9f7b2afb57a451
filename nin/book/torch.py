"""The book's own code for PyTorch, as d2l.ai writes it: the reference nin's backend is checked against.

``train_ch6`` and ``load_data`` are d2l's training loop and data loader (without plots, and over
images in memory in place of its download); ``gradients``, ``num_params``, ``layer_outputs`` and
``matmul`` ask the framework itself. The same names in every framework: see :func:`nin.book.module`.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from PIL import Image
from torch import nn

from nin import spec

#: whether ``train_ch6`` draws the model's weights (Xavier) itself, or trains those the model was built with
INITIALIZES = True


def seed(value: int) -> None:
    """Seed the framework's global random generator."""
    torch.manual_seed(value)


def train_ch6(net, train_iter, num_epochs: int, lr: float) -> list[float]:
    """d2l's ``train_ch6`` without its plots; returns each epoch's wall time (data loading included)."""
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


def load_data(images: np.ndarray, labels: np.ndarray, batch_size: int, resize: int | None):
    """d2l's training iterator over uint8 ``images`` (N,28,28) and ``labels`` in memory."""
    # torchvision's FashionMNIST with transforms.Resize and ToTensor, as PIL images (torchvision
    # cannot be imported beside this PyTorch).

    class FashionMNIST(torch.utils.data.Dataset):
        def __len__(self):
            return len(images)

        def __getitem__(self, i):
            image = Image.fromarray(images[i], mode="L")
            if resize:
                image = image.resize((resize, resize), Image.BILINEAR)
            return torch.from_numpy(np.asarray(image, dtype=np.float32) / 255)[None], int(labels[i])

    return torch.utils.data.DataLoader(FashionMNIST(), batch_size, shuffle=True, num_workers=4)


def gradients(net, X: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray | None]:
    """Each parameter's gradient of the mean cross-entropy on the NCHW batch ``X``, in training mode
    (``None``: no gradient)."""
    net.train()
    loss = torch.nn.functional.cross_entropy(net(torch.from_numpy(X)), torch.from_numpy(y))
    loss.backward()
    return {name: None if p.grad is None else p.grad.numpy() for name, p in net.named_parameters()}


def num_params(net) -> int:
    """PyTorch's own count of the model's parameters."""
    return sum(p.numel() for p in net.parameters())


def layer_outputs(net, X) -> list[tuple[str, np.ndarray]]:
    """``(kind, output as N,C,H,W numpy)`` for each top-level layer of ``net`` on the framework's batch
    ``X``, in inference mode (``kind`` as in the backend's ``summary``)."""
    net.eval()
    out = []
    with torch.no_grad():
        for layer, kind in zip(net, spec.LAYER_KINDS, strict=True):
            X = layer(X)
            out.append((kind, X.numpy()))
    return out


def matmul(n: int):
    """A function that computes one float32 ``n`` x ``n`` matrix product in the framework and waits for it."""
    a, b = torch.rand(n, n), torch.rand(n, n)
    return lambda: torch.mm(a, b)
