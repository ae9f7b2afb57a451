"""The training loop, with no framework: the book's ``train_ch6`` (d2l.ai, section "Network in
Network") written once, as :func:`train`, over each backend's small hooks (:class:`nin.api.Backend`),
with its learning-rate schedule, its meter and progress bar, its stop on a signal and its stop on
divergence.

The book's way: Xavier-uniform initialization of the convolution weights, plain SGD, mean
cross-entropy, and per epoch the train loss, train accuracy, test accuracy and training examples per
second. Beyond the book, a run is repeatable and resumable: every epoch starts by seeding the
framework's random generators from :func:`nin.seeds.epoch_seed`, and a :class:`nin.runs.Run` keeps a
checkpoint after every epoch; :class:`Diverged` stops a run whose loss or weights stop being finite,
before any non-finite number is written.
"""

from __future__ import annotations

import contextlib
import math
import numbers
import os
import signal
import sys
import threading
import time
from types import ModuleType

import numpy as np

from nin import data, inits, runs, seeds, spec, workers

PRECISIONS = ("float32", "bfloat16")
SCHEDULES = ("constant", "cosine")
RECORD_KEYS = ("epoch", "train_loss", "train_acc", "test_acc", "examples_per_sec", "seconds")
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


def check_budget(num_epochs: int, lr: float) -> tuple[int, float]:
    """``num_epochs`` (a positive integer) and ``lr`` (a positive, finite number), as Python numbers."""
    spec.check_positive_int("num_epochs", num_epochs)
    if isinstance(lr, bool) or not isinstance(lr, numbers.Real) or not 0 < lr < math.inf:
        raise ValueError(f"lr must be positive and finite, got {lr!r}")
    return int(num_epochs), float(lr)


def check_batches(name: str, batches) -> None:
    """``batches`` (``train_iter`` or ``test_iter``) are batches ``(X, y)`` with a length, and at least one."""
    if not (hasattr(batches, "__iter__") and hasattr(batches, "__len__")):
        raise ValueError(f"{name} must be batches (X, y) with a length, as load_data_fashion_mnist returns, "
                         f"got {type(batches).__name__}")
    if len(batches) == 0:
        raise ValueError(f"{name} holds no batches")


#: seconds a run may go on after SIGTERM or Ctrl-C, inside the framework, before it is ended (:func:`watchdog`)
STOP_GRACE = 10

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
def watchdog(grace: float, what: str = "nin"):
    """The last resort for a process that owns its run (the CLI's): once a signal arrives (SIGTERM, Ctrl-C), if
    the process has not ended ``grace`` seconds later, because the framework is inside one long native call and
    Python's handler cannot run until it returns, say so on stderr and exit at once (status 128 + the signal).
    Every file a run writes is replaced atomically, so its last checkpoint is intact.

    A thread reads the signal numbers that Python's C handler writes to its wakeup file descriptor, which it
    does at once, whatever the main thread is doing. Main thread only; elsewhere this does nothing."""
    try:
        read, write = os.pipe()
        os.set_blocking(write, False)
        previous = signal.set_wakeup_fd(write, warn_on_full_buffer=False)
    except ValueError:  # not the main thread
        yield
        return

    def watch():
        while received := os.read(read, 1):
            if received[0] in (signal.SIGTERM, signal.SIGINT) and not ended.wait(grace):
                sys.stderr.write(f"{what}: still running {grace:g} s after signal {received[0]}, inside the "
                                 f"framework; stopped, the last finished epoch's files intact\n")
                sys.stderr.flush()
                os._exit(128 + received[0])

    ended = threading.Event()
    thread = threading.Thread(target=watch, name="nin-watchdog", daemon=True)
    thread.start()
    try:
        yield
    finally:
        ended.set()
        signal.set_wakeup_fd(previous)
        os.close(write)
        thread.join(timeout=5)
        os.close(read)


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


def counts(backend: ModuleType, net, data_iter, device=None) -> tuple[int, int]:
    """How many examples of ``data_iter`` ``net`` classifies right, in evaluation mode, and how many there are."""
    correct = examples = 0
    for X, y in data_iter:
        y = backend.to_numpy(y)
        correct += int((backend.logits(net, X, device).argmax(axis=1) == y).sum())
        examples += len(y)
        check_stop()
    return correct, examples


def book_lines(history: list[dict], device: str) -> str:
    """The book's two closing lines: the last epoch's numbers, and the run's examples per second."""
    last = history[-1]
    examples = sum(r["examples_per_sec"] * r["seconds"] for r in history)
    speed = examples / sum(r["seconds"] for r in history)
    return (f"loss {last['train_loss']:.3f}, train acc {last['train_acc']:.3f}, test acc {last['test_acc']:.3f}\n"
            f"{speed:.1f} examples/sec on {device}")


def train(backend: ModuleType, net, train_iter, test_iter, num_epochs: int, lr: float, device=None, *,
          seed: int | None = None, init: str | None = "xavier", run: runs.Run | None = None,
          resume: bool = False, quiet: bool = False, precision: str = "float32", schedule: str = "constant",
          warmup: float = 0, clip: float | None = None, world=None) -> list[dict]:
    """Train ``net`` as the book's ``d2l.train_ch6`` does, and return one record per epoch.

    The book's way: ``init`` for the convolution weights ("xavier", the book's; "kaiming"; "centered";
    "primed", centered with biases from the first batch; or None to keep the model's weights), plain
    SGD at ``lr``, mean cross-entropy; per epoch the
    train loss, train accuracy, test accuracy and examples per second; at the end the book's
    two lines (unless ``quiet``).
    Beyond the book: ``seed`` makes a run repeatable (see :mod:`nin.seeds`), a progress bar
    shows live loss and accuracy, and with ``run`` (a :class:`nin.runs.Run`) a checkpoint
    is written after every epoch; ``resume=True`` continues from it up to ``num_epochs``.
    ``precision="bfloat16"`` computes in bfloat16 (weights and updates stay float32) in the backends
    whose ``PRECISIONS`` offer it; the default, "float32", is the book's math. ``schedule`` and
    ``warmup`` set the learning rate of each step (:func:`nin.learning_rate`); "constant"
    with no warm-up is the book's. ``clip`` scales down a step whose gradient norm is larger (None, the
    book's: plain SGD). A loss (or, with ``run``, a weight) that is NaN or infinite stops
    the run with :class:`Diverged`, before anything non-finite is saved. ``world`` (a :class:`nin.workers.World`)
    makes this one worker of data-parallel training (``docs/distributed.md``): its loaders give it its part of
    each batch, the framework's engine combines the gradients, the records sum every worker's examples, and
    rank 0 alone writes ``run``.
    """
    num_epochs, lr = check_budget(num_epochs, lr)
    check_batches("train_iter", train_iter)
    check_batches("test_iter", test_iter)
    inits.check_init(init)
    check_precision(precision, backend.PRECISIONS)
    check_schedule(schedule, warmup)
    check_clip(clip)
    device = device or backend.default_device()
    world = world or workers.ONE
    if resume:
        state = run.resume()
        backend.set_weights(net, state.weights)
        seed, init, history, start = state.seed, state.init, state.history, state.next_epoch
    else:
        seed = seeds.new_seed() if seed is None else seeds.check_seed(seed)
        backend.init_weights(net, inits.weight_init(init), seed)
        if init == "primed":  # the biases from the first batch of epoch 0 (the sampler replays it below)
            data.set_epoch(train_iter, 0)
            with data.whole_batches(train_iter):  # every worker: the whole first batch
                first = backend.to_numpy(next(iter(train_iter))[0])
            backend.set_weights(net, inits.primed(backend.get_weights(net), first))
        history, start = [], 0
    with backend.trainer(net, device, precision, clip, world) as step, stoppable():
        for epoch in range(start, num_epochs):
            backend.seed_epoch(net, seeds.epoch_seed(seed, epoch, world.rank))
            data.set_epoch(train_iter, epoch)
            meter, bar = Meter(), progress(train_iter, epoch, num_epochs, quiet)
            for i, (X, y) in enumerate(bar):
                rate = learning_rate(lr, schedule, warmup, num_epochs, epoch, i, len(train_iter))
                meter.add(*step(X, y, rate, data.batch_total(train_iter, i, X)))
                check_finite(meter, epoch, i, rate)  # a NaN or infinite loss stops the run
                show(bar, meter)
                check_stop()  # a stop asked by a signal (the CLI's SIGTERM or Ctrl-C) happens here
            meter.stop()
            correct, examples = counts(backend, net, test_iter, device)
            if world.size > 1:  # every worker's examples, through the engine
                sums = backend.all_sum([meter.loss, meter.correct, meter.examples, correct, examples])
                meter.loss, meter.correct = float(sums[0]), float(sums[1])
                meter.examples, correct, examples = (int(round(n)) for n in sums[2:])
            history.append(meter.record(epoch, correct / examples))
            if run is not None and world.rank == 0:
                tensors = backend.get_weights(net)
                check_finite_weights(tensors, epoch, i, rate)  # the last good checkpoint stays
                run.save(tensors, epoch=epoch, seed=seed, init=init, lr=lr, history=history)
    if not quiet and history:
        print(book_lines(history, str(device)))
    return history
