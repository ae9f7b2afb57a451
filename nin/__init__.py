"""NiN, the Network-in-Network model of *Dive into Deep Learning*, in five frameworks.

Pick a backend and import it, as the book imports ``d2l``::

    from nin import torch as nin      # or: from nin import mxnet / tf / jax / paddle
    net = nin.NiN()

``import nin`` imports no framework; :func:`backend` loads one by name.
"""

from __future__ import annotations

import importlib
from types import ModuleType

__version__ = "0.1.0"

#: backend name -> (the framework's import name, its pip extra, what it is)
BACKENDS = {
    "mxnet": ("mxnet", "mxnet", "MXNet Gluon"),
    "torch": ("torch", "torch", "PyTorch"),
    "tf": ("tensorflow", "tf", "Keras on TensorFlow"),
    "jax": ("jax", "jax", "JAX with Flax NNX"),
    "paddle": ("paddle", "paddle", "PaddlePaddle"),
}


def backend(name: str) -> ModuleType:
    """The backend module ``nin.<name>``, for ``name`` in :data:`BACKENDS`.

    Raises:
        ValueError: for an unknown name; the message lists the known ones.
        ImportError: when the framework is not installed; the message names the pip extra.
    """
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; known backends: {', '.join(BACKENDS)}")
    return importlib.import_module(f"nin.{name}")


def import_order(names) -> list[str]:
    """``names`` in an order in which their frameworks import into one process: PaddlePaddle before
    TensorFlow (imported after it, PaddlePaddle 3.3.1 crashes the process; ``nin.paddle`` refuses)."""
    return sorted(names, key=lambda name: name != "paddle")


def missing_framework(name: str) -> ImportError:
    """The error a backend module raises when its framework cannot be imported."""
    framework, extra, title = BACKENDS[name]
    return ImportError(
        f"the {name!r} backend needs {title} (import {framework!r} failed): "
        f"install it with  pip install 'nin[{extra}]'"
    )
