"""What NiN costs: parameters, multiply-accumulates and memory, from the neutral description.

This module imports no framework: every number comes from :func:`nin.spec.architecture`
(each layer's ``convs``, ``output_shape`` and ``params``), for any input shape, class count,
batch size and variant (``num_1x1``, ``head``). The tests check the parameters against each
framework's own count, the MACs against PyTorch's FLOP counter and the training memory against
PyTorch's allocator.

Conventions (also returned by :func:`resources` as ``conventions``):

- Values are float32, 4 bytes each; max-pooling's argmax indices are int64, 8 bytes each.
- MACs: the multiply-accumulates of the convolutions only, ``out_h * out_w * out_c * k * k * in_c``
  per convolution and image, times the batch size. Bias additions, ReLUs, max-pooling comparisons
  and the global average count 0 MACs (together well under 1% of the convolutions' at 224x224).
- FLOPs: 2 x MACs (a multiply and an add each), as PyTorch's FLOP counter reports convolutions.
- Activations: the elements of each top-level layer's output, at the batch size.
- Prediction memory: the weights, the image batch (the caller holds it all along) and the largest
  input plus output of any single operation of the forward pass (a convolution, a ReLU, a
  pooling; the batch counted once), as each activation is freed once the next operation has read
  it. Dropout and flatten return their input: nothing new. No gradients, no graph. A lower bound:
  PyTorch's oneDNN 1x1 convolutions on the CPU allocate one more output-sized buffer, so its measured
  peak is 33% (batch 8) to 45% (batch 128) higher at 224x224 (equal without 1x1 convolutions).
- Training memory, one step of plain SGD (the trainers' optimizer, without momentum: no optimizer
  state): the weights, their gradients, and the activations autograd keeps for backward, modelled
  on PyTorch: the image batch (kept by the first convolution), each ReLU's output (which the next
  convolution or pooling also keeps as its input: counted once), each max-pooling's output and
  int64 argmax indices, dropout's output and its mask (float32, as PyTorch keeps it on the CPU),
  and the global average's output (the logits; flatten is a view). Not counted: the labels, the
  loss, temporaries (a convolution's output before its ReLU, the gradients of activations during
  backward, the frameworks' workspaces), and the framework's own code and caches. PyTorch's CPU
  allocator peaks 5-17% above this estimate over one step of the book's model and its variants
  (batch 8 and 128, 224x224; see tests/test_resources.py).
- Each layer's ``train_bytes`` is its weights and gradients plus what it keeps for backward (the
  first layer also holds the image batch), so the column sums to the total.
"""

from __future__ import annotations

import contextlib
import math
from pathlib import Path

from nin import spec

#: Bytes of a float32 value, and of an int64 index (max-pooling's argmax).
BYTES_PER_VALUE = 4
BYTES_PER_INDEX = 8

CONVENTIONS = {
    "bytes": "float32 values, 4 bytes each; max-pooling's argmax indices int64, 8 bytes each",
    "macs": "multiply-accumulates of the convolutions only (out_h*out_w*out_c*k*k*in_c per image, times the "
            "batch); bias, ReLU, max-pooling and global averaging count 0",
    "flops": "2 x MACs",
    "activations": "elements of each top-level layer's output, at the batch size",
    "predict_bytes": "weights + image batch + the largest input+output of one forward operation (conv, ReLU, "
                     "pooling), activations freed once read; no gradients",
    "train_bytes": "weights + gradients + optimizer state (plain SGD: none) + what autograd keeps for backward, "
                   "as PyTorch does: image batch, every ReLU output, max-pool outputs and int64 indices, dropout "
                   "output and float32 mask, the logits; temporaries not counted",
}


def resources(input_shape: tuple[int, int, int, int] = (1, spec.IN_CHANNELS, spec.BOOK_RESIZE, spec.BOOK_RESIZE),
              num_classes: int = spec.NUM_CLASSES, batch_size: int | None = None, num_1x1: int = spec.NUM_1X1,
              head: str = spec.HEAD) -> dict:
    """Per-layer and total parameters, MACs, FLOPs, activations and memory of NiN.

    Args:
        input_shape: channels-first ``(N, C, H, W)``.
        num_classes: the class count.
        batch_size: images per batch; ``None`` takes ``N`` of ``input_shape``.
        num_1x1, head: the variant, as :func:`nin.spec.architecture` takes them.

    Returns:
        ``{"input_shape", "num_classes", "batch_size", "num_1x1", "head", "layers", "totals", "memory",
        "conventions"}``: ``layers`` has one dict per top-level layer (``name``, ``kind``, output
        ``shape``, ``params``, ``macs``, ``flops``, ``activations``, ``train_bytes``), whose columns
        sum to ``totals`` (``params``, ``macs``, ``flops``, ``activations``, ``predict_bytes``,
        ``train_bytes``); ``memory`` breaks the two memory totals down, in bytes.

    Raises:
        ValueError: for an input NiN cannot take, a class count, batch size or variant that is not one.
    """
    spec.check_input_shape(input_shape, num_classes)
    if batch_size is not None:
        spec.check_positive_int("batch_size", batch_size)
    layers = spec.architecture(num_classes, num_1x1=num_1x1, head=head)
    n, c, h, w = input_shape
    batch = n if batch_size is None else batch_size
    shape = (batch, c, h, w)
    image = math.prod(shape)
    names = _names(layers)
    rows, kept_bytes, largest = [], 0, 0
    for name, layer in zip(names, layers, strict=True):
        params, out = layer.params(shape[1]), layer.output_shape(shape)
        macs, floats, indices, ops = _costs(layer, shape, out)
        if not rows:  # the first operation reads the image batch, which is held all along: not twice
            ops[0] = (0, ops[0][1])
        largest = max([largest, *(op_in + op_out for op_in, op_out in ops)])
        kept = floats * BYTES_PER_VALUE + indices * BYTES_PER_INDEX
        kept_bytes += kept
        rows.append({"name": name, "kind": layer.kind, "shape": list(out), "params": params, "macs": macs,
                     "flops": 2 * macs, "activations": math.prod(out),
                     "train_bytes": 2 * params * BYTES_PER_VALUE + kept})
        shape = out
    rows[0]["train_bytes"] += image * BYTES_PER_VALUE  # the first convolution keeps the image batch
    params = sum(r["params"] for r in rows)
    memory = {
        "weights": params * BYTES_PER_VALUE,
        "gradients": params * BYTES_PER_VALUE,
        "optimizer_state": 0,
        "image_batch": image * BYTES_PER_VALUE,
        "kept_for_backward": kept_bytes,
        "largest_operation": largest * BYTES_PER_VALUE,
    }
    macs = sum(r["macs"] for r in rows)
    totals = {
        "params": params,
        "macs": macs,
        "flops": 2 * macs,
        "activations": sum(r["activations"] for r in rows),
        "predict_bytes": memory["weights"] + memory["image_batch"] + memory["largest_operation"],
        "train_bytes": sum(r["train_bytes"] for r in rows),
    }
    return {"input_shape": [n, c, h, w], "num_classes": num_classes, "batch_size": batch, "num_1x1": num_1x1,
            "head": head, "layers": rows, "totals": totals, "memory": memory, "conventions": dict(CONVENTIONS)}


def _costs(layer, shape: tuple[int, ...], out: tuple[int, ...]):
    """``(macs, floats kept, int64 indices kept, operations)`` of one layer for ``shape``, at the batch size.

    ``operations`` lists each forward operation's ``(input, output)`` elements, for prediction.
    """
    return _COSTS[layer.kind](layer, shape, out, math.prod(shape), math.prod(out))


def _block_costs(layer, shape, out, size, out_size):
    n, _, h, w = out  # the 1x1 convolutions keep the first one's height and width
    macs, kept, ops = 0, 0, []
    for i, o, k, _, _ in layer.convs(shape[1]):
        macs += n * h * w * o * k * k * i
        kept += n * o * h * w  # the ReLU's output
        ops += [(size, n * o * h * w), (n * o * h * w, n * o * h * w)]  # the convolution, its ReLU
        size = n * o * h * w
    return macs, kept, 0, ops


_COSTS = {
    "nin_block": _block_costs,
    "maxpool": lambda layer, shape, out, size, out_size: (0, out_size, out_size, [(size, out_size)]),
    # output and mask; at prediction it returns its input
    "dropout": lambda layer, shape, out, size, out_size: (0, out_size + size, 0, [(size, 0)]),
    "global_avg_pool": lambda layer, shape, out, size, out_size: (0, out_size, 0, [(size, out_size)]),
    "flatten": lambda layer, shape, out, size, out_size: (0, 0, 0, [(size, 0)]),  # a view
}


def _names(layers) -> list[str]:
    """``nin_block1``, ``maxpool1``, ...: the kind, numbered where it occurs more than once."""
    kinds = [layer.kind for layer in layers]
    seen: dict[str, int] = {}
    names = []
    for kind in kinds:
        seen[kind] = seen.get(kind, 0) + 1
        names.append(f"{kind}{seen[kind]}" if kinds.count(kind) > 1 else kind)
    return names


def available_memory() -> int | None:
    """Bytes of memory a new allocation can take: ``MemAvailable`` of ``/proc/meminfo``, or less where a
    cgroup (a container's limit) leaves less; ``None`` where neither can be read."""
    found = []
    with contextlib.suppress(OSError, ValueError, IndexError):
        lines = Path("/proc/meminfo").read_text().splitlines()
        found += [int(line.split()[1]) * 1024 for line in lines if line.startswith("MemAvailable:")]
    with contextlib.suppress(OSError, ValueError):
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit != "max":
            found.append(int(limit) - int(Path("/sys/fs/cgroup/memory.current").read_text()))
    return min(found) if found else None


class NotEnoughMemory(ValueError):
    """``what`` needs ``needed`` bytes (as this module estimates it), more than the ``available`` bytes."""

    def __init__(self, what: str, needed: int, available: int):
        self.what, self.needed, self.available = what, needed, available
        super().__init__(f"{what} needs about {needed / 2**30:,.1f} GiB of memory ({needed:,} bytes, as nin.resources "
                         f"estimates it), more than the {max(available, 0) / 2**30:,.1f} GiB available")


def check_memory(needed: int, what: str) -> None:
    """Refuse, with :class:`NotEnoughMemory` and before anything is built, what needs more than
    :func:`available_memory`: ``needed`` bytes (an estimate of this module) for ``what``."""
    limit = available_memory()
    if limit is not None and needed > limit:
        raise NotEnoughMemory(what, needed, limit)
