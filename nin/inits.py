"""Weight initialization, with no framework: the inits a backend's ``init_weights`` hook draws
(:data:`WEIGHT_INITS`), and what is computed from them here, in numpy: zero-mean filters
(:func:`centered`) and biases primed on a batch (:func:`primed`, with its own numpy forward pass)."""

from __future__ import annotations

import numpy as np

from nin import spec, weights

#: the inits of a backend's ``init_weights`` hook; "primed" is "centered" plus biases from the first batch
WEIGHT_INITS = ("xavier", "kaiming", "centered")
INITS = (*WEIGHT_INITS, "primed")
def check_init(init: str | None) -> str | None:
    """``init`` is one of :data:`INITS`, or ``None`` to train the weights the model has now."""
    if init is not None and init not in INITS:
        raise ValueError(f"unknown init {init!r}; choose one of {', '.join(INITS)}")
    return init


def centered(tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Canonical weights (kernels O,I,kH,kW) with each filter's mean over its inputs subtracted, in every
    convolution but the first: the ``"centered"`` init, applied to Kaiming-uniform weights.

    Every convolution after the first takes ReLU outputs, which are positive and alike from one image to
    the next. A filter with a nonzero mean then gives nearly the same sign for every image, and a class
    unit of the last ReLU whose sign is negative is off for all images, and may never come back. A
    zero-mean filter responds to how an image differs from the others, and far fewer class units start
    off (measured in ``docs/training.md``). The model is unchanged; only its starting weights are.
    """
    first = next(iter(spec.weight_shapes()))
    return {name: w - w.mean(axis=(1, 2, 3), keepdims=True) if name.endswith(".weight") and name != first else w
            for name, w in tensors.items()}


def weight_init(init: str | None) -> str | None:
    """The init a backend's ``init_weights`` hook draws for ``init``: "primed" starts from "centered"."""
    return "centered" if init == "primed" else init


def primed(tensors: dict[str, np.ndarray], images: np.ndarray, chunk: int = 16) -> dict[str, np.ndarray]:
    """``tensors`` (canonical weights) with every convolution's bias set, layer after layer, to minus the
    median of its output over ``images`` (N,C,H,W, as the model sees them): the ``"primed"`` init.

    Each unit is then on (above 0 after its ReLU) for half of the batch's images and positions, in every
    layer, so no class unit of the last ReLU starts off for every image, whatever the draw of the weights
    (``"centered"`` makes such units rarer, not impossible: ``docs/training.md``). It is the bias half of
    Salimans and Kingma's data-dependent init (2016), with a median in place of the mean; the weights
    and the model are unchanged. The forward pass is :func:`logits`' (``chunk`` images at a time).
    """
    return _forward(tensors, images, chunk, prime=True)[1]


def logits(tensors: dict[str, np.ndarray], images: np.ndarray, chunk: int = 16) -> np.ndarray:
    """The logits of the NiN whose canonical weights are ``tensors`` for ``images`` (N,C,H,W), in inference
    mode: the forward pass written once, in numpy, from :mod:`nin.spec` (dropout is the identity; ``chunk``
    images at a time bound the memory). What an init gives, with no framework."""
    return _forward(tensors, images, chunk)[0]


def _forward(tensors, images, chunk: int, prime: bool = False) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The logits, and the tensors with every bias primed (``prime``) or as they are."""
    args = weights.model_args(tensors)
    out, x = dict(tensors), np.asarray(images, np.float32)
    spec.check_channels(x.shape[1], args["in_channels"])

    def block(layer, convs):
        nonlocal x
        for name, _, _, _, stride, padding in convs:
            z = np.concatenate([_conv(x[i:i + chunk], tensors[f"{name}.weight"], stride, padding)
                                for i in range(0, len(x), chunk)])
            if prime:
                median = np.median(z.transpose(1, 0, 2, 3).reshape(z.shape[1], -1), axis=1)
                out[f"{name}.bias"] = (-median).astype(tensors[f"{name}.bias"].dtype)
            x = np.maximum(z + out[f"{name}.bias"][:, None, None], 0)

    def maxpool(layer, convs):
        nonlocal x
        k, s = layer.pool_size, layer.strides
        x = np.lib.stride_tricks.sliding_window_view(x, (k, k), axis=(2, 3))[:, :, ::s, ::s].max(axis=(4, 5))

    spec.walk({"nin_block": block, "maxpool": maxpool}, args["num_classes"], args["num_1x1"], args["head"],
              args["in_channels"])
    return x.mean(axis=(2, 3)), out  # global average pooling, then the flatten


def _conv(x: np.ndarray, w: np.ndarray, stride: int, padding: int) -> np.ndarray:
    """Cross-correlation of ``x`` (N,C,H,W) with ``w`` (O,C,kH,kW), no bias, as every framework's conv."""
    x = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    windows = np.lib.stride_tricks.sliding_window_view(x, w.shape[2:], axis=(2, 3))[:, :, ::stride, ::stride]
    return np.tensordot(windows, w, axes=((1, 4, 5), (1, 2, 3))).transpose(0, 3, 1, 2)
