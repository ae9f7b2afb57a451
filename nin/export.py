"""NiN as an ONNX model, built from :mod:`nin.spec` and a weights file with the ``onnx`` package alone.

No deep-learning framework is imported: the graph is the neutral description's layers, in order,
as ONNX operators (``Conv`` + ``Relu`` per convolution, ``MaxPool``, ``GlobalAveragePool``,
``Flatten``; dropout is the identity at inference and is left out), and its initializers are the
canonical weights (kernels O,I,kH,kW, as ONNX's ``Conv`` takes them). The same weights give a
byte-identical file.

- input ``images``: float32, N,C,H,W, values in [0, 1] as the loaders give them; the batch, height and
  width are dynamic (height and width at least the model's minimum size, see the metadata);
- output ``logits``: float32, N by the number of classes (the last block ends with ReLU, as in the book);
- metadata: ``num_classes``, ``in_channels``, ``num_1x1``, ``head``, ``min_image_size``, ``producer``.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from nin import spec, weights

#: the opset the exporter writes by default (any from 13 on works: the operators used are old)
OPSET = 17
MIN_OPSET = 13
INPUT, OUTPUT = "images", "logits"


def _onnx():
    try:
        import onnx
    except ImportError as err:
        raise ImportError("ONNX export needs the onnx package: install it with  pip install 'nin[onnx]'") from err
    return onnx


def build(tensors: dict[str, np.ndarray], opset: int = OPSET, resize: int | None = None):
    """The ONNX model (an ``onnx.ModelProto``) of the NiN whose canonical weights are ``tensors``, for
    images of ``resize`` x ``resize`` (any size from the minimum on, with ``None``).

    Raises:
        ValueError: if ``tensors`` are not the weights of a NiN, or ``opset`` is below :data:`MIN_OPSET`.
    """
    _onnx()
    from onnx import TensorProto, helper, numpy_helper

    _check_opset(opset)
    args = weights.model_args(tensors)
    height, width = _size(resize, args)
    nodes, initializers, x, b, channels = [], [], INPUT, 0, args["in_channels"]
    for layer in spec.architecture(args["num_classes"], num_1x1=args["num_1x1"], head=args["head"]):
        if isinstance(layer, spec.NinBlock):
            for c, (_, _, kernel, stride, padding) in enumerate(layer.convs(channels)):
                name = f"blocks.{b}.convs.{c}"
                initializers += [numpy_helper.from_array(np.ascontiguousarray(tensors[f"{name}.{p}"], np.float32),
                                                         f"{name}.{p}") for p in ("weight", "bias")]
                nodes.append(helper.make_node("Conv", [x, f"{name}.weight", f"{name}.bias"], [f"{name}.conv"],
                                              name=f"{name}.conv", kernel_shape=[kernel, kernel],
                                              strides=[stride, stride], pads=[padding] * 4))
                nodes.append(helper.make_node("Relu", [f"{name}.conv"], [f"{name}.relu"], name=f"{name}.relu"))
                x = f"{name}.relu"
            b, channels = b + 1, layer.out_channels
        elif isinstance(layer, spec.MaxPool):
            nodes.append(helper.make_node("MaxPool", [x], [f"maxpool{len(nodes)}"], name=f"maxpool{len(nodes)}",
                                          kernel_shape=[layer.pool_size] * 2, strides=[layer.strides] * 2))
            x = nodes[-1].output[0]
        elif isinstance(layer, spec.GlobalAvgPool):
            nodes.append(helper.make_node("GlobalAveragePool", [x], ["pooled"], name="global_avg_pool"))
            x = "pooled"
        elif isinstance(layer, spec.Flatten):
            nodes.append(helper.make_node("Flatten", [x], [OUTPUT], name="flatten", axis=1))
            x = OUTPUT
        # spec.Dropout: the identity at inference
    graph = helper.make_graph(
        nodes, "nin",
        [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, ["batch", args["in_channels"], height, width])],
        [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, ["batch", args["num_classes"]])],
        initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="nin",
                              doc_string="NiN (d2l.ai, 'Network in Network'): images N,C,H,W float32 in [0, 1] "
                                         "-> logits N,classes")
    return _checked(model, args)


def _check_opset(opset: int) -> None:
    if isinstance(opset, bool) or not isinstance(opset, int) or opset < MIN_OPSET:
        raise ValueError(f"--opset must be an integer of at least {MIN_OPSET}, got {opset!r}")


def _size(resize: int | None, args: dict) -> tuple:
    if resize is None:
        return "height", "width"
    spec.check_positive_int("--resize", resize)
    spec.check_image_size(resize, resize, args["num_classes"])
    return resize, resize


def via(backend: str, tensors: dict[str, np.ndarray], opset: int = OPSET, resize: int | None = None):
    """The ONNX model that ``backend``'s own exporter (its ``to_onnx``) writes for these weights, with
    nin's metadata added. Raises ``ValueError`` where that exporter cannot run."""
    import nin

    onnx = _onnx()
    _check_opset(opset)
    args = weights.model_args(tensors)
    _size(resize, args)  # the frameworks' exporters keep the height and width dynamic
    framework = nin.backend(backend)
    net = framework.NiN(**args)
    framework.set_weights(net, tensors)
    with tempfile.TemporaryDirectory() as tmp:
        framework.to_onnx(net, Path(tmp) / "model.onnx", opset)
        model = onnx.load(Path(tmp) / "model.onnx")
    return _checked(model, args)


def _checked(model, args: dict):
    """``model`` with nin's metadata, after ONNX's full check."""
    onnx = _onnx()
    from onnx import helper

    del model.metadata_props[:]
    helper.set_model_props(model, {**{key: str(value) for key, value in args.items()},
                                   "min_image_size": str(spec.min_image_size(args["num_classes"])),
                                   "producer": "nin"})
    onnx.checker.check_model(model, full_check=True)
    return model


def export(weights_path: str | os.PathLike, out: str | os.PathLike, opset: int = OPSET,
           backend: str | None = None, resize: int | None = None) -> Path:
    """Write the ONNX model of the weights file ``weights_path`` (any backend's, or a checkpoint) to ``out``,
    atomically, with nin's exporter, or with ``backend``'s own (``--via``); returns ``out``.

    Raises:
        ValueError: if the weights file cannot be read or is not a NiN's (the message of ``load_weights``).
    """
    tensors, _ = weights.load(weights_path)
    model = build(tensors, opset, resize) if backend is None else via(backend, tensors, opset, resize)
    out = Path(out)
    if out.is_dir():
        raise ValueError(f"--out {out} is a directory; give the path of the .onnx file to write")
    out.parent.mkdir(parents=True, exist_ok=True)
    weights.atomic_write(out, model.SerializeToString(deterministic=True))
    return out
