"""Data-parallel training: ``nin train --workers N`` (and ``--nodes``), with no framework.

The launcher here starts the worker processes, and, where the framework's engine needs them, its helper
processes (MXNet's scheduler and server: :data:`nin.frameworks.SERVICES`). It only starts processes and tells
each which part it plays (:class:`World`, in the ``NIN_WORKER`` environment variable, with the run to train);
each worker joins its framework's own distributed engine (the backend's ``join`` hook), and the gradients
are combined by that engine, never by code of ours. ``--batch-size`` stays the global batch: each worker
takes its part of every batch (:meth:`World.part`), and the backends' steps normalise the loss by the whole
batch, so the training is that of one process (``docs/distributed.md``).

A process we start is a process we end: the workers and helpers share one process group, which the launcher
ends whenever it stops, and each dies with the launcher (``PR_SET_PDEATHSIG``) if it is killed.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import dataclasses
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time

import numpy as np

#: the environment variable that tells a process started by :func:`launch` what it is and what to train
ENV = "NIN_WORKER"
#: seconds the launcher waits for the workers to end after it asked them to stop, before it kills them
STOP_WAIT = 20


@dataclasses.dataclass(frozen=True)
class World:
    """Where one worker stands: its ``rank`` among ``size`` workers in all, ``local_rank`` among the ``local_size``
    on its node (``node`` of ``nodes``), the coordinator's ``host`` and ``port`` (rank 0's node: where the
    engines meet), ``ports`` (a port for each worker, for the engines that need one each, one node only) and
    the ``threads`` it computes on. The default is one process."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    local_size: int = 1
    node: int = 0
    nodes: int = 1
    host: str = "127.0.0.1"
    port: int = 0
    ports: tuple[int, ...] = ()
    threads: int = 0

    def part(self, indices: np.ndarray) -> np.ndarray:
        """This worker's part of a batch's indices: the batch cut into ``size`` nearly equal, consecutive parts
        (rank 0 first; the first ``len % size`` parts hold one more)."""
        return np.array_split(indices, self.size)[self.rank] if self.size > 1 else indices

    @property
    def coordinator(self) -> str:
        return f"{self.host}:{self.port}"


ONE = World()


class WorkerFailed(ChildProcessError):
    """A worker (or an engine's helper process) ended before the run did: ``who`` ("worker 1 of 2, pid 123"),
    ``why`` (its exit status or signal, and its last line on stderr)."""

    def __init__(self, who: str, why: str):
        self.who, self.why = who, why
        super().__init__(f"{who} {why}; every worker was stopped")


class PortInUse(OSError):
    """The coordinator's port is taken by another process."""


def current() -> tuple[World, dict | None]:
    """This process's world and its job (None: a process not started by :func:`launch`)."""
    text = os.environ.get(ENV)
    if not text:
        return ONE, None
    job = json.loads(text)
    world = job.pop("world")
    return World(**{**world, "ports": tuple(world["ports"])}), job


def free_ports(host: str, count: int) -> list[int]:
    """``count`` ports on ``host`` that nothing listens on now (the system's choice)."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind((host, 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def check_port(host: str, port: int) -> None:
    """Raise :class:`PortInUse` if another process holds ``port`` on ``host``."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as err:
            raise PortInUse(f"port {port} on {host} is in use by another process ({err.strerror})") from err


def check_split(batch_size: int, num_examples: int, workers: int) -> None:
    """Every worker gets at least one example of every training batch, the last one included."""
    last = num_examples % batch_size
    if batch_size < workers or 0 < last < workers:
        held = f"a batch of {batch_size}" if batch_size < workers else f"the last batch of {last} images"
        raise ValueError(f"{held} cannot be split across {workers} workers (each needs one image at least)")


def worlds(workers: int, nodes: int = 1, node: int = 0, host: str = "127.0.0.1",
           port: int | None = None) -> list[World]:
    """The worlds of this node's ``workers`` processes; ``port``: the coordinator's (None: a free one, one node)."""
    cores = sorted(os.sched_getaffinity(0))
    threads = max(1, len(cores) // workers)
    if port is None:
        port, *ports = free_ports(host, 1 + (workers if nodes == 1 else 0))
    else:
        if node == 0:
            check_port(host, port)
        ports = free_ports(host, workers) if nodes == 1 else []
    return [World(node * workers + i, nodes * workers, i, workers, node, nodes, host, port, tuple(ports), threads)
            for i in range(workers)]


def _cpus(world: World) -> list[int] | None:
    """The CPUs a worker is pinned to: its own ``threads`` of them, where the node's CPUs divide evenly."""
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) % world.local_size:
        return None
    return cores[world.local_rank * world.threads:(world.local_rank + 1) * world.threads]


def _die_with_parent() -> None:
    """In a child, before it runs: be killed if the launcher dies (Linux's ``PR_SET_PDEATHSIG``)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1: PR_SET_PDEATHSIG


class Group:
    """The processes of one launch, in one process group: started, watched, and always ended."""

    def __init__(self):
        self.procs: list[tuple[str, subprocess.Popen]] = []
        self.tails: dict[int, collections.deque] = {}
        self.ended: queue.Queue = queue.Queue()
        self.output: list[bytes] = []
        self.readers: list[threading.Thread] = []
        self.workers: set[subprocess.Popen] = set()
        self.pgid = 0

    def start(self, who: str, argv: list[str], env: dict, cpus: list[int] | None, keep_output: bool = False,
              worker: bool = True) -> None:
        """Start ``argv`` as ``who``, on ``cpus`` (None: all), a worker or (``worker=False``) an engine's helper,
        which the run does not wait for; its stderr is kept for :meth:`why`, its stdout thrown away, or, with
        ``keep_output``, kept for :attr:`output` (said once the run has ended well)."""
        def child():
            _die_with_parent()
            if cpus:
                os.sched_setaffinity(0, cpus)

        proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE if keep_output else subprocess.DEVNULL,
                                stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, process_group=self.pgid,
                                preexec_fn=child)
        self.pgid = self.pgid or proc.pid
        self.procs.append((who, proc))
        if worker:
            self.workers.add(proc)
        tail = self.tails[proc.pid] = collections.deque(maxlen=5)
        if keep_output:
            self.readers.append(threading.Thread(target=lambda: self.output.extend(proc.stdout), daemon=True))
            self.readers[-1].start()
        threading.Thread(target=self._read, args=(proc, tail), daemon=True).start()

    def _read(self, proc: subprocess.Popen, tail: collections.deque) -> None:
        for line in proc.stderr:
            if line.strip():
                tail.append(line.decode(errors="replace").strip())
        proc.wait()
        self.ended.put(proc)

    def why(self, proc: subprocess.Popen) -> str:
        """How ``proc`` ended: the signal that killed it, or its exit status and its error line (the last line on
        its stderr that starts with "error:", else its last line)."""
        code = proc.returncode
        if code < 0:
            return f"was killed by {signal.Signals(-code).name}"
        lines = list(self.tails[proc.pid])
        last = next((line for line in reversed(lines) if line.startswith("error:")), lines[-1] if lines else None)
        return f"exited with status {code}: {last}" if last else f"exited with status {code}"

    def who(self, proc: subprocess.Popen) -> str:
        return next(who for who, p in self.procs if p is proc)

    def send(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pgid, signum)

    def end(self, wait: float, signum: int = signal.SIGTERM) -> None:
        """Ask every process still running to stop (``signum``), and kill what is left after ``wait`` seconds."""
        if not self.pgid:
            return
        self.send(signum)
        deadline = time.monotonic() + wait
        for _, proc in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(max(0.0, deadline - time.monotonic()))
        self.send(signal.SIGKILL)
        for _, proc in self.procs:
            proc.wait()


def launch(job: dict, workers: int, nodes: int = 1, node: int = 0, host: str = "127.0.0.1",
           port: int | None = None, services: tuple[str, ...] = ()) -> None:
    """Run ``job`` (what :func:`nin.presets.fit` takes, with the backend's name) on this node's ``workers``
    processes, and on node 0 the engine's helper processes ``services``; return when every worker has
    finished. A worker that fails raises :class:`WorkerFailed`, Ctrl-C or SIGTERM ``KeyboardInterrupt``,
    once every process is gone."""
    group = Group()
    members = worlds(workers, nodes, node, host, port)
    try:
        if node == 0:
            for role in services:
                group.start(f"the engine's {role}", [sys.executable, "-m", "nin.workers", role],
                            _env(job, members[0], role), None, worker=False)
        for world in members:  # rank 0's output (the book's closing lines) is said when the run has ended well
            group.start(f"worker {world.rank} of {world.size}", [sys.executable, "-m", "nin.workers"],
                        _env(job, world), _cpus(world), keep_output=world.rank == 0)
        _watch(group, workers)
        for reader in group.readers:
            reader.join(5)
        sys.stdout.write(b"".join(group.output).decode(errors="replace"))
    except KeyboardInterrupt:
        group.end(STOP_WAIT, signal.SIGINT)  # each worker stops after its batch (or its watchdog ends it)
        raise
    finally:
        group.end(5)


def _watch(group: Group, workers: int) -> None:
    """Wait until every worker has ended well; the first process to end badly stops them all."""
    done = 0
    while done < workers:
        try:
            proc = group.ended.get(timeout=0.5)
        except queue.Empty:
            continue
        if proc.returncode != 0 or proc not in group.workers:  # a helper that ends before the workers failed too
            group.end(5)
            raise WorkerFailed(f"{group.who(proc)} (pid {proc.pid})", group.why(proc))
        done += 1


def _env(job: dict, world: World, role: str = "worker") -> dict:
    """A child's environment: the launcher's, the job and the world, and the threads it may use."""
    from nin import frameworks

    env = {**os.environ, **frameworks.engine_env(job["config"]["backend"], world, role)}
    env[ENV] = json.dumps({**job, "world": dataclasses.asdict(world), "role": role})
    threads = str(world.threads)
    env.update(OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads, TF_NUM_INTRAOP_THREADS=threads,
               TF_NUM_INTEROP_THREADS="1")
    return env


def main() -> int:
    """``python -m nin.workers``: a process started by :func:`launch`, a worker or an engine's helper."""
    from nin import frameworks

    world, job = current()
    if job is None:
        print(f"python -m nin.workers: started by `nin train --workers N` only ({ENV} is not set)", file=sys.stderr)
        return 2
    if job["role"] != "worker":
        frameworks.serve(job["config"]["backend"], job["role"], world)
        return 0
    return work(job, world)


def work(job: dict, world: World) -> int:
    """One worker: join the engine, then train its part of the run; errors are one line on stderr."""
    import nin
    from nin import frameworks, presets, training

    for signum in (signal.SIGTERM, signal.SIGINT):  # stop after the batch, as one process does
        signal.signal(signum, training.ask_stop)
    try:
        backend = nin.backend(job["config"]["backend"])
        backend.join(world)
        with training.watchdog(training.STOP_GRACE, f"nin train worker {world.rank}"):
            presets.fit(job["config"], job["out"], resume=job["resume"], source=job["source"],
                        quiet=job["quiet"] or world.rank > 0, world=world)
    except KeyboardInterrupt:
        return 130
    except Exception as err:  # noqa: BLE001 (the launcher quotes this line)
        print(f"error: {frameworks.one_line(err, frameworks.out_of_memory(err))}", file=sys.stderr)
        return 1
    return 0


def fit(config: dict, out, *, resume: bool = False, source=None, quiet: bool = False, workers: int = 2,
        nodes: int = 1, node: int = 0, coordinator: str | None = None) -> list[dict]:
    """Train the run ``config`` describes on ``workers`` processes on this node (node ``node`` of ``nodes``; the
    others run the same command with their own ``node``), as :func:`nin.presets.fit` does in one process: the
    settings checked, the data found (downloaded once, here), ``out`` held by this launcher on node 0. Returns
    the run's records (node 0; the other nodes: none)."""
    from nin import data, frameworks, presets, runs

    presets.check(config)
    if nodes > 1 and coordinator is None:
        raise ValueError(f"{nodes} nodes need the coordinator's address (node 0's HOST:PORT)")
    if nodes > 1 and config["backend"] in frameworks.ONE_NODE_ONLY:
        raise ValueError(f"{nodes} nodes: {frameworks.ONE_NODE_ONLY[config['backend']]}; train on one node")
    if workers * nodes > 1 and config["backend"] in frameworks.ONE_PROCESS_ONLY:
        raise ValueError(f"{workers * nodes} workers: {frameworks.ONE_PROCESS_ONLY[config['backend']]}; "
                         f"train in one process")
    if not 0 <= node < nodes:
        raise ValueError(f"node {node} is not one of the {nodes} nodes (0 to {nodes - 1})")
    host, port = _address(coordinator) if coordinator else ("127.0.0.1", None)
    found = len(data.labels(data.locate(config["data"]), "train"))
    check_split(config["batch_size"], min(config["limit_train"] or found, found), workers * nodes)
    job = {"config": config, "out": str(out), "resume": resume, "source": None if source is None else str(source),
           "quiet": quiet}
    with runs.claim(out) if node == 0 else contextlib.nullcontext():
        try:
            launch(job, workers, nodes, node, host, port, frameworks.SERVICES.get(config["backend"], ()))
        except WorkerFailed as err:
            err.directory = out
            raise
    return runs.Run(out, config["backend"]).load()[1]["history"] if node == 0 else []


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"the coordinator's address must be HOST:PORT, got {text!r}")
    return host, int(port)


if __name__ == "__main__":
    sys.exit(main())
