"""One weights format for every backend: safetensors, canonical names and layouts.

Every backend's ``save_weights`` writes, and every ``load_weights`` reads, a safetensors
file whose tensors are named and shaped by :func:`nin.spec.weight_shapes`:
``blocks.{b}.convs.{c}.weight`` as ``(out, in, kH, kW)`` and ``blocks.{b}.convs.{c}.bias``,
all float32. Keras, which keeps kernels as ``(kH, kW, in, out)``, converts inside
``nin/tf.py``. A training checkpoint is such a file too, with the run's state in its
metadata, so a run trained in one framework can be evaluated or resumed in another.

Every file nin writes carries the SHA-256 of its tensors (names, dtypes, shapes and bytes) in its
metadata: :func:`load` refuses a file whose tensors no longer match it (:class:`DamagedWeights`), and
any file with a NaN or infinite weight (:class:`NonFiniteWeights`), naming the tensor.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import numpy as np

FORMAT = "nin-weights/1"


class DamagedWeights(ValueError):
    """A weights file whose tensors do not match the checksum it was written with (``path``)."""

    def __init__(self, message: str, path: Path):
        super().__init__(message)
        self.path = path


class NonFiniteWeights(ValueError):
    """A weights file with NaN or infinite values: ``path``, the first such tensor ``name``."""

    def __init__(self, message: str, path: Path, name: str):
        super().__init__(message)
        self.path, self.name = path, name


def checksum(tensors: dict[str, np.ndarray]) -> str:
    """The SHA-256 of ``tensors``: each one's name, dtype, shape and bytes, in name order."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        t = np.ascontiguousarray(tensors[name])
        digest.update(f"{name}:{t.dtype.str}:{t.shape};".encode())
        digest.update(t.tobytes())
    return digest.hexdigest()


def save(tensors: dict[str, np.ndarray], path: str | os.PathLike, metadata: dict | None = None) -> None:
    """Write ``tensors`` (and JSON-able ``metadata``) to ``path`` atomically."""
    from safetensors.numpy import save as to_bytes

    meta = {"format": json.dumps(FORMAT), "sha256": json.dumps(checksum(tensors))}
    meta.update({key: json.dumps(value, allow_nan=False) for key, value in (metadata or {}).items()})
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, to_bytes({name: np.ascontiguousarray(t) for name, t in tensors.items()}, metadata=meta))


def load(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict]:
    """The tensors and the metadata of a weights file (values nin wrote as JSON decoded, others as strings).

    Raises:
        ValueError: if the file is missing or is not a readable safetensors file;
        DamagedWeights: if its tensors do not match the checksum it was written with;
        NonFiniteWeights: if a tensor holds NaN or infinite values (the first one is named).
    """
    from safetensors import SafetensorError
    from safetensors.numpy import load as from_bytes

    path = Path(path)
    try:
        blob = path.read_bytes()
        tensors = from_bytes(blob)
        size = int.from_bytes(blob[:8], "little")
        meta = json.loads(blob[8:8 + size]).get("__metadata__") or {}
        meta = {key: _value(value) for key, value in meta.items()}
    except FileNotFoundError as err:
        raise ValueError(f"{path}: no such weights file") from err
    except (SafetensorError, ValueError, OSError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not a readable safetensors weights file ({err})") from err
    if "sha256" in meta and meta["sha256"] != checksum(tensors):
        raise DamagedWeights(f"{path} is damaged: its tensors do not match the SHA-256 it was written with", path)
    for name in sorted(tensors):
        if np.issubdtype(tensors[name].dtype, np.floating) and not np.isfinite(tensors[name]).all():
            raise NonFiniteWeights(f"{path}: tensor {name} holds NaN or infinite values", path, name)
    return tensors, meta


def _value(text: str):
    """A metadata value: nin writes JSON; other writers plain strings (PyTorch's ``{"format": "pt"}``), kept as is."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def model_args(tensors: dict[str, np.ndarray]) -> dict:
    """The ``NiN`` arguments (``num_classes``, ``in_channels``, ``num_1x1``, ``head``) that canonical
    ``tensors`` fit, read from their names and shapes.

    Raises:
        ValueError: if the tensors are not NiN weights.
    """
    from nin import spec

    try:
        blocks = 1 + max(int(name.split(".")[1]) for name in tensors if name.startswith("blocks."))
        num_1x1 = sum(1 for name in tensors if name.startswith("blocks.0.convs.") and name.endswith(".weight")) - 1
        last = [tensors[f"blocks.{blocks - 1}.convs.{c}.bias"].shape[0] for c in range(num_1x1 + 1)]
        args = {"num_classes": int(last[-1]), "in_channels": int(tensors["blocks.0.convs.0.weight"].shape[1]),
                "num_1x1": num_1x1, "head": "gradual" if len(set(last)) > 1 else "one-step"}
        spec.check_weights(tensors, **args)
    except (ValueError, KeyError, IndexError) as err:
        raise ValueError(f"these tensors are not the weights of a NiN ({err})") from err
    return args


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that ``path`` is always either the old file or the whole new one; the file
    gets the permissions the umask leaves (as ``open`` gives them), not the temporary file's 0600."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _umask() -> int:
    """The process's umask (reading it means setting it: set back at once)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
