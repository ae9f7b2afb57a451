"""The command line's text tables, as torchinfo prints them: one row per layer, columns that sum to the
totals, each column as wide as its widest cell."""

from __future__ import annotations


def summary(layers: list[dict], title: str, input_shape, backend: str) -> str:
    """A backend's ``summary`` rows: name, the shape the framework produced, parameters, and the total."""
    total = sum(row["params"] for row in layers)
    rows = [(row["name"], _shape(row["native_shape"]), f"{row['params']:,}") for row in layers]
    lines = [f"NiN in {title}, input {'x'.join(map(str, input_shape))} (shapes as {backend} produces them)"]
    return "\n".join(lines + _columns(("layer", "output shape", "params"), rows, ("total", "", f"{total:,}"),
                                       minimum=(0, 24, 12)))


def resources(found: dict) -> str:
    """What :func:`nin.resources.resources` found: each layer's parameters, MACs, activations and training bytes
    with the totals, then the FLOPs and the memory of prediction and of training, with their parts."""
    layers, totals, memory = found["layers"], found["totals"], found["memory"]
    _, c, h, w = found["input_shape"]
    columns = ("params", "macs", "activations", "train_bytes")
    rows = [(row["name"], _shape(row["shape"]), *(f"{row[col]:,}" for col in columns)) for row in layers]
    table = _columns(("layer", "output shape", "params", "MACs", "activations", "train bytes"), rows,
                     ("total", "", *(f"{totals[col]:,}" for col in columns)), minimum=(17, 22, 16, 16, 16, 16))
    return "\n".join([
        f"NiN resources: images {c}x{h}x{w}, batch {found['batch_size']}, {found['num_classes']} classes, "
        f"num_1x1={found['num_1x1']}, head {found['head']}; float32",
        *table,
        f"FLOPs (2 x MACs): {totals['flops']:,}",
        f"prediction memory: {totals['predict_bytes']:,} bytes ({_mib(totals['predict_bytes'])}): weights "
        f"{_mib(memory['weights'])} + image batch {_mib(memory['image_batch'])} + largest operation's input "
        f"and output {_mib(memory['largest_operation'])}",
        f"training memory: {totals['train_bytes']:,} bytes ({_mib(totals['train_bytes'])}): weights and "
        f"gradients {_mib(memory['weights'] + memory['gradients'])} + image batch {_mib(memory['image_batch'])} "
        f"+ activations kept for backward {_mib(memory['kept_for_backward'])} (plain SGD: no optimizer state)"])


def _columns(header: tuple, rows: list[tuple], total: tuple, minimum: tuple) -> list[str]:
    """Lines of a table whose first two columns are left-aligned and the others right-aligned, each column at
    least its ``minimum`` wide and two spaces wider than its widest cell, so that columns never run together."""
    cells = [header, *rows, total]
    widths = [max(least, *(len(row[i]) + 2 for row in cells)) for i, least in enumerate(minimum)]
    return ["".join(cell.ljust(width) if i < 2 else cell.rjust(width) for i, (cell, width) in
                    enumerate(zip(row, widths, strict=True))) for row in cells]


def _shape(shape) -> str:
    return "(" + ", ".join(map(str, shape)) + ")"


def _mib(size: int) -> str:
    return f"{size / 2**20:,.1f} MiB"
