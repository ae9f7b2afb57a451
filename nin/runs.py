"""A run directory, with no framework: ``checkpoint.safetensors``, ``metrics.json`` and ``curves.png``
after every epoch, and a lock that holds the directory for one process.

After every epoch, :class:`Run` writes ``checkpoint.safetensors`` (a weights file of :mod:`nin.weights`,
with the epoch, seed, optimizer settings, the run's settings and the records so far in its metadata),
``metrics.json`` (``{"config": the run's settings, "history": the records}``) and ``curves.png``, each
atomically. :func:`claim` holds the run directory for one process (a lock file with its id).
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nin import inits, seeds, spec, weights


class RunError(ValueError):
    """A run directory that cannot be used as asked; ``directory`` is the run directory."""

    def __init__(self, message: str, directory: Path):
        super().__init__(message)
        self.directory = directory


class NotADirectory(RunError):
    """A file stands where the run directory should be."""


class CannotWrite(RunError):
    """The run directory cannot be created or written; ``reason`` is the system's."""


class InUse(RunError):
    """Another process holds the run directory: ``pid`` (as its lock file says), ``lock`` (that file)."""


class WriteFailed(RunError):
    """An epoch's files could not be written (no space left, permissions): the last checkpoint is as it was."""


class RunExists(RunError):
    """The directory already holds a run's checkpoint, and a new run (or a fork) would overwrite it."""


class NoCheckpoint(RunError):
    """There is no checkpoint to resume from (``path``), or it holds no usable training state."""


CHECKPOINT = "checkpoint.safetensors"
METRICS = "metrics.json"
CURVES = "curves.png"
LOCK = ".lock"


@dataclass
class RunState:
    """A checkpoint's state: what a resumed run starts from."""

    weights: dict[str, np.ndarray]
    seed: int
    init: str | None
    history: list[dict]
    next_epoch: int


class Run:
    """A run directory: ``checkpoint.safetensors``, ``metrics.json`` and ``curves.png``.

    Args:
        directory: where the files go (created if needed).
        backend: the backend's name, kept in the checkpoint.
        config: how the run was started (the command line's settings), kept in the checkpoint
            so that a resumed run goes on with the same data, batch size and seed.
        source: the run directory a resumed run starts from (default: ``directory``); another one
            forks that run: it goes on in ``directory``, and ``source`` is only read.
    """

    def __init__(self, directory: str | os.PathLike, backend: str, config: dict | None = None,
                 source: str | os.PathLike | None = None):
        self.directory = Path(directory)
        self.backend = backend
        self.config = config or {}
        self.source = self.directory if source is None else Path(source)

    @property
    def checkpoint(self) -> Path:
        return self.directory / CHECKPOINT

    def load(self) -> tuple[dict[str, np.ndarray], dict]:
        """The checkpoint's weights and its metadata (``epoch``, ``seed``, ``history``, ``config``, ...).

        Read from ``source``, the run a resumed run starts from.

        Raises:
            ValueError: when there is no checkpoint, it cannot be read, or its training state is damaged.
        """
        path = self.source / CHECKPOINT
        if not path.is_file():
            raise NoCheckpoint(f"no checkpoint to resume from: {path} does not exist", self.source)
        tensors, meta = weights.load(path)
        if "history" not in meta:
            raise NoCheckpoint(f"{path} holds weights but no training state", self.source)
        try:
            seeds.check_seed(meta["seed"])
            inits.check_init(meta["init"])
            history = meta["history"]
            ok = (isinstance(history, list) and all(isinstance(r, dict) for r in history)
                  and type(meta["epoch"]) is int and meta["epoch"] + 1 == len(history))
        except (KeyError, TypeError, ValueError):
            ok = False
        if not ok:
            raise NoCheckpoint(f"{path}: its training state (epoch, seed, init, history) is damaged", self.source)
        return tensors, meta

    def resume(self) -> RunState:
        """Where the checkpoint left the run, for ``train(resume=True)``."""
        tensors, meta = self.load()
        return RunState(tensors, meta["seed"], meta["init"], meta["history"], meta["epoch"] + 1)

    def save(self, tensors: dict[str, np.ndarray], *, epoch: int, seed: int, init: str | None, lr: float,
             history: list[dict]) -> None:
        """Write the metrics and the curves after ``epoch``, then the checkpoint (a weights file with the run's
        state), each file atomically: the checkpoint, which a resumed run goes on from, is never ahead of the
        records, and a write that fails (:class:`WriteFailed`) leaves the last checkpoint as it was."""
        meta = {"epoch": epoch, "seed": seed, "init": init, "lr": lr, "optimizer": "sgd", "history": history,
                "backend": self.backend, "config": self.config}
        metrics = json.dumps({"config": self.config, "history": history}, indent=1, allow_nan=False) + "\n"
        kept = self.checkpoint.is_file()
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            weights.atomic_write(self.directory / METRICS, metrics.encode())
            weights.atomic_write(self.directory / CURVES, curves_png(history, title=f"NiN, {self.backend}"))
            weights.save(tensors, self.checkpoint, meta)
        except OSError as err:
            what = (f"its checkpoint of epoch {epoch} (the last before this one) is kept" if kept and epoch
                    else "no checkpoint was kept")
            raise WriteFailed(f"cannot write the files of epoch {epoch + 1} in {self.directory} ({err.strerror or err}"
                              f"{': ' + str(err.filename) if err.filename else ''}); {what}", self.directory) from err


@contextlib.contextmanager
def claim(directory: str | os.PathLike):
    """Hold the run directory ``directory`` for this process while the block runs.

    The directory is created (with its parents) if need be; a file in its place, or a place that
    cannot be written, is refused (:class:`NotADirectory`, :class:`CannotWrite`). Then the lock file
    :data:`LOCK` is taken with ``flock`` and this process's id written in it: another process that holds
    it is named in an :class:`InUse` error, and a lock left by a process that is gone (killed) is taken
    over, since the system releases a dead process's locks. Leftover ``.part`` files of a killed write are removed.
    On leaving, the lock file is removed, and so are the directories made here if they are still empty.
    """
    import fcntl

    directory = Path(directory)
    made = [p for p in (directory, *directory.parents) if not p.exists()]
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except FileExistsError as err:
        what = "a symbolic link to nowhere (a loop, or a missing target)" if directory.is_symlink() else "a file"
        raise NotADirectory(f"{directory} is {what}, not a directory", directory) from err
    except OSError as err:
        raise CannotWrite(f"{directory}: cannot create it ({err.strerror})", directory) from err
    path = directory / LOCK
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            _remove_empty(made)
            raise CannotWrite(f"{directory}: cannot write there ({err.strerror})", directory) from err
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            other = os.read(fd, 64).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            error = InUse(f"{directory} is in use by another run (process {other}, which holds {path})", directory)
            error.pid, error.lock = other, path
            raise error from err
        with contextlib.suppress(OSError):
            if os.stat(path).st_ino == os.fstat(fd).st_ino:  # not a lock file its holder removed meanwhile
                break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        for part in directory.glob(".*.part"):  # from weights.atomic_write, killed mid-write
            if part.name.startswith(tuple(f".{name}." for name in (CHECKPOINT, METRICS, CURVES))):
                part.unlink()
        yield directory
    finally:
        with contextlib.suppress(OSError):
            path.unlink()
        os.close(fd)
        _remove_empty(made)


def _remove_empty(directories: list[Path]) -> None:
    """Remove ``directories`` (the innermost first) while they are empty."""
    for directory in directories:
        try:
            directory.rmdir()
        except OSError:
            return


def curves_png(history: list[dict], title: str = "NiN") -> bytes:
    """The book's plot (train loss, train accuracy, test accuracy per epoch) as PNG bytes."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.5, 3.2), dpi=100)
    ax = fig.subplots()
    epochs = [r["epoch"] + 1 for r in history]
    for key, style in (("train_loss", "-"), ("train_acc", "m--"), ("test_acc", "g-.")):
        ax.plot(epochs, [r[key] for r in history], style, label=key.replace("_", " "), marker="o", markersize=3)
    ax.set_xlabel("epoch")
    ax.set_title(title)
    ax.grid(True)
    ax.legend()
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def trained_resize(meta: dict) -> int | None:
    """The image size the run of a checkpoint whose metadata is ``meta`` trained at: the book's 224 for a weights
    file without a run, None where its run settings hold no integer ``resize``."""
    if "config" not in meta:
        return spec.BOOK_RESIZE
    config = meta["config"]
    if not isinstance(config, dict) or type(config.get("resize", spec.BOOK_RESIZE)) is not int:
        return None
    return config.get("resize", spec.BOOK_RESIZE)
