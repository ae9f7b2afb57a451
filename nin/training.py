"""What every backend's trainer shares, with no framework: seeds, epoch records, the
progress bar, the book's closing lines, and a run directory (metrics, curves, checkpoint).

The backends' ``train`` functions follow the book's ``train_ch6`` (d2l.ai, section
"Network in Network"): Xavier-uniform initialization of the convolution weights, plain
SGD, mean cross-entropy, and per epoch the train loss, train accuracy, test accuracy and
training examples per second. Beyond the book, a run is repeatable and resumable:

- every epoch starts by seeding the framework's random generators from
  :func:`epoch_seed` ``(seed, epoch)``, so the shuffling and dropout of epoch ``k`` do
  not depend on whether epochs ``0..k-1`` ran in this process or before a resume;
- after every epoch, :class:`Run` writes ``checkpoint.safetensors`` (a weights file of
  :mod:`nin.weights`, with the epoch, seed, optimizer settings, the run's settings and the
  records so far in its metadata), ``metrics.json`` (``{"config": the run's settings,
  "history": the records}``) and ``curves.png``, each atomically;
- :func:`claim` holds the run directory for one process (a lock file with its id), and
  :class:`Diverged` stops a run whose loss or weights stop being finite, before any
  non-finite number is written.
"""

from __future__ import annotations

import contextlib
import json
import math
import numbers
import os
import secrets
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nin import spec, weights

#: the inits of a backend's ``init_weights`` hook; "primed" is "centered" plus biases from the first batch
WEIGHT_INITS = ("xavier", "kaiming", "centered")
INITS = (*WEIGHT_INITS, "primed")
PRECISIONS = ("float32", "bfloat16")
SCHEDULES = ("constant", "cosine")
CHECKPOINT = "checkpoint.safetensors"
METRICS = "metrics.json"
CURVES = "curves.png"
LOCK = ".lock"
RECORD_KEYS = ("epoch", "train_loss", "train_acc", "test_acc", "examples_per_sec", "seconds")
#: seeds are integers from 0 to SEED_LIMIT - 1 in every backend (each framework takes them all)
SEED_LIMIT = 2**31


def new_seed() -> int:
    """A fresh seed for a run that was given none (it is stored, so resuming repeats it)."""
    return secrets.randbelow(SEED_LIMIT)


def check_seed(seed) -> int:
    """``seed`` is an integer from 0 to :data:`SEED_LIMIT` - 1, the one rule for every backend."""
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not 0 <= seed < SEED_LIMIT:
        raise ValueError(f"seed must be an integer from 0 to {SEED_LIMIT - 1} (2**31 - 1), got {seed!r}")
    return int(seed)


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed epoch ``epoch`` starts from: a function of the run's seed and the epoch alone."""
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0] % 2**31)


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
    and the model are unchanged. The forward pass is written here once, in numpy, from :mod:`nin.spec`
    (dropout is the identity; ``chunk`` images at a time bound the memory).
    """
    args = weights.model_args(tensors)
    out, x, b = dict(tensors), np.asarray(images, np.float32), 0
    spec.check_channels(x.shape[1], args["in_channels"])
    for layer in spec.architecture(args["num_classes"], num_1x1=args["num_1x1"], head=args["head"]):
        if isinstance(layer, spec.NinBlock):
            for c, (_, _, _, stride, padding) in enumerate(layer.convs(x.shape[1])):
                name = f"blocks.{b}.convs.{c}"
                z = np.concatenate([_conv(x[i:i + chunk], tensors[f"{name}.weight"], stride, padding)
                                    for i in range(0, len(x), chunk)])
                median = np.median(z.transpose(1, 0, 2, 3).reshape(z.shape[1], -1), axis=1)
                out[f"{name}.bias"] = bias = (-median).astype(tensors[f"{name}.bias"].dtype)
                x = np.maximum(z + bias[:, None, None], 0)
            b += 1
        elif isinstance(layer, spec.MaxPool):
            k, s = layer.pool_size, layer.strides
            x = np.lib.stride_tricks.sliding_window_view(x, (k, k), axis=(2, 3))[:, :, ::s, ::s].max(axis=(4, 5))
    return out


def _conv(x: np.ndarray, w: np.ndarray, stride: int, padding: int) -> np.ndarray:
    """Cross-correlation of ``x`` (N,C,H,W) with ``w`` (O,C,kH,kW), no bias, as every framework's conv."""
    x = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    windows = np.lib.stride_tricks.sliding_window_view(x, w.shape[2:], axis=(2, 3))[:, :, ::stride, ::stride]
    return np.tensordot(windows, w, axes=((1, 4, 5), (1, 2, 3))).transpose(0, 3, 1, 2)


def check_precision(precision: str, offered: tuple[str, ...] = PRECISIONS) -> str:
    """``precision`` is one of :data:`PRECISIONS` and one the backend ``offered`` (its ``PRECISIONS``)."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if precision not in offered:
        raise ValueError(f"this backend's trainer computes in {' or '.join(offered)} only, not {precision}; "
                         f"use precision={offered[0]!r}")
    return precision


def check_clip(clip: float | None) -> float | None:
    """``clip`` is the largest norm that the gradient of the mean loss (all parameters together) may have: a
    step with a larger one is scaled down to it. ``None`` or 0: no clipping (the book's plain SGD)."""
    if clip is not None and (isinstance(clip, bool) or not isinstance(clip, numbers.Real) or not 0 <= clip < math.inf):
        raise ValueError(f"clip must be a gradient norm, 0 (no clipping) or more, got {clip!r}")
    return clip


def check_schedule(schedule: str, warmup: float) -> str:
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}; choose one of {', '.join(SCHEDULES)}")
    if not 0 <= warmup < math.inf:
        raise ValueError(f"warmup must be a number of epochs, 0 or more, got {warmup!r}")
    return schedule


def learning_rate(lr: float, schedule: str, warmup: float, num_epochs: int, epoch: int, batch: int,
                  batches: int) -> float:
    """The learning rate of batch ``batch`` (of ``batches``) in epoch ``epoch``.

    First a linear warm-up from 0 to ``lr`` over the first ``warmup`` epochs (none with 0, the book's;
    a warm-up as long as the run never reaches ``lr``). Then ``"constant"``, the book's, keeps ``lr``;
    ``"cosine"`` decays it along a half cosine to 0 at the end of epoch ``num_epochs``. The rate is a
    function of the position in the run alone, so a resumed run takes the same steps as one that never
    stopped.
    """
    t = epoch + (batch + 1) / batches  # epochs done after this batch
    if t <= warmup:
        return lr * t / warmup
    if schedule == "constant":
        return lr
    return 0.5 * lr * (1 + math.cos(math.pi * (t - warmup) / (num_epochs - warmup)))


def check_budget(num_epochs: int, lr: float) -> None:
    spec.check_positive_int("num_epochs", num_epochs)
    if not 0 < lr < math.inf:
        raise ValueError(f"lr must be positive and finite, got {lr!r}")


#: set while ``train`` runs its epochs (:func:`stoppable`), and by :func:`ask_stop`
TRAINING, STOP_ASKED = threading.Event(), threading.Event()


def ask_stop(signum=None, frame=None) -> None:
    """A signal handler (the CLI's, for SIGTERM and Ctrl-C): while ``train`` runs its epochs, ask it to
    stop after the batch it is on, where :func:`check_stop` raises ``KeyboardInterrupt``.

    An exception raised by the handler itself lands wherever Python happens to be, and can be lost:
    one raised inside a weakref callback is only printed ("Exception ignored"), and the run goes on.
    At any other time (a framework importing, say), or for a second signal before the batch ends,
    the handler raises ``KeyboardInterrupt`` at once.
    """
    if not TRAINING.is_set() or STOP_ASKED.is_set():
        STOP_ASKED.clear()
        raise KeyboardInterrupt
    STOP_ASKED.set()


def check_stop() -> None:
    """Raise ``KeyboardInterrupt`` if :func:`ask_stop` asked for it: ``train`` calls this after every batch."""
    if STOP_ASKED.is_set():
        STOP_ASKED.clear()
        raise KeyboardInterrupt


@contextlib.contextmanager
def stoppable():
    """The span in which :func:`ask_stop` waits for the end of a batch: ``train``'s epochs."""
    TRAINING.set()
    try:
        yield
    finally:
        TRAINING.clear()
        STOP_ASKED.clear()


class Diverged(ValueError):
    """The training loss, or the weights after an epoch, stopped being finite: the run cannot go on.

    ``epoch`` and ``batch`` count from 0; ``lr`` is the batch's learning rate.
    """

    def __init__(self, what: str, epoch: int, batch: int, lr: float):
        self.what, self.epoch, self.batch, self.lr = what, epoch, batch, lr
        super().__init__(f"{what} at epoch {epoch + 1}, batch {batch + 1} (learning rate {lr:.3g}): the run "
                         f"diverged; try a lower lr or a warm-up")


def check_finite(meter: Meter, epoch: int, batch: int, lr: float) -> None:
    """Raise :class:`Diverged` once the epoch's summed loss is NaN or infinite."""
    if not math.isfinite(meter.loss):
        raise Diverged(f"the training loss became {meter.loss}", epoch, batch, lr)


def check_finite_weights(tensors: dict[str, np.ndarray], epoch: int, batch: int, lr: float) -> None:
    """Raise :class:`Diverged` if a weight is NaN or infinite (before it is saved)."""
    bad = [name for name, t in tensors.items() if not np.isfinite(t).all()]
    if bad:
        raise Diverged(f"the weights became non-finite ({bad[0]})", epoch, batch, lr)


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


def check_memory(needed: int, what: str, fix: str) -> None:
    """Refuse, before anything is built, what needs more than :func:`available_memory`: ``needed`` bytes
    (an estimate of :mod:`nin.resources`) for ``what``; ``fix`` says what to do."""
    limit = available_memory()
    if limit is not None and needed > limit:
        raise ValueError(f"{what} needs about {needed / 2**30:,.1f} GiB of memory ({needed:,} bytes, as nin.resources "
                         f"estimates it), more than the {max(limit, 0) / 2**30:,.1f} GiB available; {fix}")


class Meter:
    """Sums of loss, correct predictions and examples over an epoch's training pass, and its
    wall time (data loading included, test evaluation not), from creation to :meth:`stop`."""

    def __init__(self):
        self.loss = self.correct = 0.0
        self.examples = 0
        self.seconds = 0.0
        self._start = time.perf_counter()

    def stop(self) -> None:
        self.seconds = time.perf_counter() - self._start

    def add(self, loss_sum: float, correct: float, examples: int) -> None:
        """Add one batch; ``loss_sum`` is the batch's summed (not mean) loss."""
        self.loss += float(loss_sum)
        self.correct += float(correct)
        self.examples += int(examples)

    def record(self, epoch: int, test_acc: float) -> dict:
        """The epoch's record, as it goes into ``metrics.json``."""
        return {"epoch": epoch, "train_loss": self.loss / self.examples, "train_acc": self.correct / self.examples,
                "test_acc": float(test_acc), "examples_per_sec": self.examples / self.seconds,
                "seconds": self.seconds}


def progress(iterable, epoch: int, num_epochs: int, quiet: bool):
    """A tqdm bar over one epoch's batches; off with ``quiet`` or when stderr is not a terminal."""
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=f"epoch {epoch + 1}/{num_epochs}", leave=False, unit="batch",
                disable=quiet or not sys.stderr.isatty())


def show(bar, meter: Meter) -> None:
    """Live loss and accuracy on the bar."""
    if not bar.disable and meter.examples:
        bar.set_postfix(loss=f"{meter.loss / meter.examples:.3f}", acc=f"{meter.correct / meter.examples:.3f}")


def book_lines(history: list[dict], device: str) -> str:
    """The book's two closing lines: the last epoch's numbers, and the run's examples per second."""
    last = history[-1]
    examples = sum(r["examples_per_sec"] * r["seconds"] for r in history)
    speed = examples / sum(r["seconds"] for r in history)
    return (f"loss {last['train_loss']:.3f}, train acc {last['train_acc']:.3f}, test acc {last['test_acc']:.3f}\n"
            f"{speed:.1f} examples/sec on {device}")


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
            raise ValueError(f"no checkpoint to resume from: {path} does not exist "
                             f"(start a run with --out {self.source})")
        tensors, meta = weights.load(path)
        if "history" not in meta:
            raise ValueError(f"{path} holds weights but no training state; start a new run with --out")
        try:
            check_seed(meta["seed"])
            check_init(meta["init"])
            history = meta["history"]
            ok = (isinstance(history, list) and all(isinstance(r, dict) for r in history)
                  and type(meta["epoch"]) is int and meta["epoch"] + 1 == len(history))
        except (KeyError, TypeError, ValueError):
            ok = False
        if not ok:
            raise ValueError(f"{path}: its training state (epoch, seed, init, history) is damaged; "
                             f"start a new run with --out")
        return tensors, meta

    def resume(self) -> RunState:
        """Where the checkpoint left the run, for ``train(resume=True)``."""
        tensors, meta = self.load()
        return RunState(tensors, meta["seed"], meta["init"], meta["history"], meta["epoch"] + 1)

    def save(self, tensors: dict[str, np.ndarray], *, epoch: int, seed: int, init: str | None, lr: float,
             history: list[dict]) -> None:
        """Write the checkpoint after ``epoch`` (a weights file with the run's state), then the metrics and
        the curves, each file atomically."""
        meta = {"epoch": epoch, "seed": seed, "init": init, "lr": lr, "optimizer": "sgd", "history": history,
                "backend": self.backend, "config": self.config}
        weights.save(tensors, self.checkpoint, meta)
        metrics = json.dumps({"config": self.config, "history": history}, indent=1, allow_nan=False) + "\n"
        weights.atomic_write(self.directory / METRICS, metrics.encode())
        weights.atomic_write(self.directory / CURVES, curves_png(history, title=f"NiN, {self.backend}"))


@contextlib.contextmanager
def claim(directory: str | os.PathLike):
    """Hold the run directory ``directory`` for this process while the block runs.

    The directory is created (with its parents) if need be; a file in its place, or a place that
    cannot be written, is refused with a ``ValueError``. Then the lock file :data:`LOCK` is taken with
    ``flock`` and this process's id written in it: another process that holds it is named in the
    ``ValueError``, and a lock left by a process that is gone (killed) is taken over, since the system
    releases a dead process's locks. Leftover ``.part`` files of a write that was killed are removed.
    On leaving, the lock file is removed, and so are the directories made here if they are still empty.
    """
    import fcntl

    directory = Path(directory)
    made = [p for p in (directory, *directory.parents) if not p.exists()]
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except FileExistsError as err:
        raise ValueError(f"--out {directory} is a file, not a directory; choose another --out") from err
    except OSError as err:
        raise ValueError(f"--out {directory}: cannot create it ({err.strerror}); choose another --out") from err
    path = directory / LOCK
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            _remove_empty(made)
            raise ValueError(f"--out {directory}: cannot write there ({err.strerror}); choose another --out") from err
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            other = os.read(fd, 64).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise ValueError(f"{directory} is in use by another run (process {other}, which holds {path}); "
                             f"wait for it to end or stop it, or choose another --out") from err
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
