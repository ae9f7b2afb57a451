"""An exported NiN (:mod:`nin.export`) in ONNX Runtime, evaluated as a backend evaluates its model.

``python -m nin predict --backend onnxruntime --weights nin.onnx`` uses it: :func:`load` opens the
file, :func:`load_data_fashion_mnist` gives numpy batches (N,C,H,W float32 in [0, 1], resized
bilinearly as PyTorch's ``interpolate`` does), and :func:`evaluate_accuracy` and :func:`predict` are
:mod:`nin.api`'s, over the hooks below.
"""

from __future__ import annotations

import os

import numpy as np

from nin import api, data, spec

try:
    import onnxruntime
except ImportError as err:
    raise ImportError("the 'onnxruntime' runtime needs ONNX Runtime: install it with  pip install 'nin[onnx]'") from err


class Model:
    """An ONNX Runtime session of an exported NiN, with the settings its metadata records."""

    def __init__(self, path: str | os.PathLike):
        if not os.path.isfile(path):
            raise ValueError(f"{path}: no such ONNX file")
        try:
            options = onnxruntime.SessionOptions()
            options.log_severity_level = 3  # errors only: they become ValueErrors below
            self.session = onnxruntime.InferenceSession(os.fspath(path), options, providers=["CPUExecutionProvider"])
            meta = self.session.get_modelmeta().custom_metadata_map
            self.num_classes, self.in_channels = int(meta["num_classes"]), int(meta["in_channels"])
            self.num_1x1, self.head = int(meta["num_1x1"]), meta["head"]
            height, width = self.session.get_inputs()[0].shape[2:]
            #: the height and width a fixed-size export takes (``export --resize``); None where any size will do
            self.size = height if isinstance(height, int) and height == width else None
        except (KeyError, ValueError) as err:
            raise ValueError(f"{path} is an ONNX model, but not one nin exported (no {err} in its metadata)") from err
        except Exception as err:  # ONNX Runtime raises its own exception types for unreadable files
            first = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise ValueError(f"{path} is not a readable ONNX model ({first})") from err


def load(path: str | os.PathLike) -> Model:
    """The exported model at ``path``; a missing, corrupt or foreign file is refused with a ``ValueError``."""
    return Model(path)


# As every backend's (nin.api), bound to this module: inference only, so no train or weights I/O.
load_data_fashion_mnist, evaluate_accuracy, predict = api.bind(
    __name__, (api.load_data_fashion_mnist, api.evaluate_accuracy, api.predict))


# The hooks of the protocol nin.api.Backend that inference needs.

def default_device() -> str:
    return "cpu"


def from_numpy(X: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(X)


def to_numpy(X: np.ndarray) -> np.ndarray:
    return np.asarray(X)


def loader(split: data.Split, sampler: data.BatchSampler, resize: int | None):
    return data.Batches(split, sampler, resize, _batch)


def logits(net: Model, X: np.ndarray, device=None) -> np.ndarray:
    spec.check_channels(X.shape[1], net.in_channels)
    spec.check_image_size(X.shape[-2], X.shape[-1], net.num_classes)
    name = net.session.get_inputs()[0].name  # "images"; framework exporters may name it their own way
    return net.session.run(None, {name: np.ascontiguousarray(X, dtype=np.float32)})[0]


def _batch(images: np.ndarray, labels: np.ndarray, resize: int | None) -> tuple[np.ndarray, np.ndarray]:
    """A batch of :class:`nin.data.Batches`: N,C,H,W float32 images in [0, 1], resized, and int64 labels."""
    X = images.astype(np.float32)[:, None] / 255
    return (_resize(X, resize) if resize else X), labels.astype(np.int64)


def _resize(X: np.ndarray, size: int) -> np.ndarray:
    """Bilinear resize of N,C,H,W to ``size`` x ``size``, half-pixel centres and edges clamped, as
    ``torch.nn.functional.interpolate(..., mode="bilinear", align_corners=False)`` computes it."""
    for axis in (2, 3):
        n = X.shape[axis]
        src = np.maximum((np.arange(size, dtype=np.float32) + 0.5) * np.float32(n / size) - 0.5, 0)
        lo = np.minimum(src.astype(np.int64), n - 1)
        hi = np.minimum(lo + 1, n - 1)
        w = (src - lo).astype(np.float32)
        shape = [1, 1, 1, 1]
        shape[axis] = size
        X = np.take(X, lo, axis=axis) * (1 - w).reshape(shape) + np.take(X, hi, axis=axis) * w.reshape(shape)
    return X.astype(np.float32)
