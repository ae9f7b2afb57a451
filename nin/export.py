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
    if not hasattr(onnx, "ModelProto"):  # a folder named onnx, imported in its place
        where = getattr(onnx, "__file__", None) or ", ".join(getattr(onnx, "__path__", [])) or "somewhere"
        raise ImportError(f"'import onnx' found {where}, not the onnx package: a folder or file named onnx in the "
                          f"working directory (or on PYTHONPATH) hides it; rename it or run from another directory")
    return onnx


def build(tensors: dict[str, np.ndarray], opset: int = OPSET, resize: int | None = None):
    """The ONNX model (an ``onnx.ModelProto``) of the NiN whose canonical weights are ``tensors``, for
    images of ``resize`` x ``resize`` (any size from the minimum on, with ``None``).

    Raises:
        ValueError: if ``tensors`` are not the weights of a NiN, or ``opset`` is out of range (:func:`_check_opset`).
    """
    _onnx()
    from onnx import TensorProto, helper, numpy_helper

    _check_opset(opset)
    args = weights.model_args(tensors)
    height, width = _size(resize, args)
    nodes, initializers = [], []

    def block(layer, convs):
        for name, _, _, kernel, stride, padding in convs:
            initializers.extend(numpy_helper.from_array(np.ascontiguousarray(tensors[f"{name}.{p}"], np.float32),
                                                        f"{name}.{p}") for p in ("weight", "bias"))
            add("Conv", [f"{name}.weight", f"{name}.bias"], f"{name}.conv", kernel_shape=[kernel, kernel],
                strides=[stride, stride], pads=[padding] * 4)
            add("Relu", [], f"{name}.relu")

    def add(op, inputs, name, output=None, **attributes):
        """A node that takes the last node's output (the model's input for the first) and ``inputs``."""
        nodes.append(helper.make_node(op, [nodes[-1].output[0] if nodes else INPUT, *inputs], [output or name],
                                      name=name, **attributes))

    spec.walk({"nin_block": block,
               "maxpool": lambda layer, _: add("MaxPool", [], f"maxpool{len(nodes)}",
                                               kernel_shape=[layer.pool_size] * 2, strides=[layer.strides] * 2),
               # dropout: the identity at inference
               "global_avg_pool": lambda layer, _: add("GlobalAveragePool", [], "global_avg_pool", "pooled"),
               "flatten": lambda layer, _: add("Flatten", [], "flatten", OUTPUT, axis=1)},
              args["num_classes"], args["num_1x1"], args["head"], args["in_channels"])
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
    """An opset from :data:`MIN_OPSET` to the newest the installed onnx package knows (which ONNX Runtime reads),
    checked before any exporter runs."""
    newest = _onnx().defs.onnx_opset_version()
    if isinstance(opset, bool) or not isinstance(opset, int) or opset < MIN_OPSET:
        raise ValueError(f"opset must be an integer of at least {MIN_OPSET}, got {opset!r}")
    if opset > newest:
        raise ValueError(f"opset {opset} is newer than the newest the installed onnx {_onnx().__version__} knows, "
                         f"{newest}")


def _size(resize: int | None, args: dict) -> tuple:
    if resize is None:
        return "height", "width"
    spec.check_positive_int("resize", resize)
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
        raise ValueError(f"{out} is a directory, not the path of an .onnx file to write")
    out.parent.mkdir(parents=True, exist_ok=True)
    weights.atomic_write(out, model.SerializeToString(deterministic=True))
    return out
