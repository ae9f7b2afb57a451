"""Importing a framework: what each one needs from the process before and after its import.

Each backend module imports its framework inside :func:`importing`, so that the book's code below that
import reads as the book's. What is set up here is process-wide: a numpy shim, thread counts, the import
order of two frameworks, signal handlers and environment variables. Each framework's needs are written
down once, in its ``_before_*`` and ``_after_*`` functions; a framework that is not installed raises the
:class:`ImportError` of :func:`nin.missing_framework`, which names the pip extra.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import signal
import sys
import threading
import warnings
from pathlib import Path

import numpy

import nin


@contextlib.contextmanager
def importing(name: str):
    """Import backend ``name``'s framework inside this block: the process is prepared for it first, set up
    after it, and an :class:`ImportError` becomes one that names the pip extra to install."""
    state = _BEFORE.get(name, _nothing)()
    try:
        with warnings.catch_warnings():  # PaddlePaddle's C++-extension helper warns at import that ccache is missing
            warnings.filterwarnings("ignore", message="No ccache found")
            yield
    except ImportError as err:
        raise nin.missing_framework(name) from err
    _AFTER.get(name, _nothing)(state)


def _nothing(*args) -> None:
    return None


def _before_mxnet() -> None:
    """MXNet 1.9.1, the last release, still uses ``numpy.bool``, which numpy 1.24 to 1.26 removed (numpy 2
    brought it back): give it back. And MXNet's threads (:func:`_mxnet_openmp_threads`)."""
    if "bool" not in vars(numpy):
        numpy.bool = numpy.bool_
    _mxnet_openmp_threads()


def _mxnet_openmp_threads() -> None:
    """Give MXNet every CPU where the CPUs have no hyperthreads; before ``import mxnet``.

    Unless ``OMP_NUM_THREADS`` is set, MXNet 1.9 on x86 sets OpenMP to half the CPUs for the whole
    process: right with two hyperthreads per core, but on CPUs without them (``smt/active`` is 0)
    it trains at half speed (docs/speed.md) and drops PyTorch in the same process to half its threads.
    ``MXNET_OMP_MAX_THREADS`` overrides that count, for MXNet only.
    """
    if "OMP_NUM_THREADS" in os.environ or "MXNET_OMP_MAX_THREADS" in os.environ:
        return
    try:
        with open("/sys/devices/system/cpu/smt/active") as f:
            if f.read().strip() != "0":
                return  # hyperthreads: MXNet's half is one thread per core
    except OSError:
        return  # not Linux: keep MXNet's choice
    if "mxnet" in sys.modules:
        warnings.warn("MXNet was imported before nin.mxnet, so it uses half the CPUs: import nin.mxnet first, "
                      "or set OMP_NUM_THREADS before Python starts", stacklevel=4)
        return
    os.environ["MXNET_OMP_MAX_THREADS"] = str(len(os.sched_getaffinity(0)))


def _before_tf() -> None:
    """Keras 3 runs on TensorFlow unless ``KERAS_BACKEND`` says otherwise."""
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")


def _after_tf(state) -> None:
    from tensorflow import keras

    if keras.backend.backend() != "tensorflow":
        raise ImportError(f"the 'tf' backend needs Keras on TensorFlow, but Keras runs on "
                          f"{keras.backend.backend()!r}: unset KERAS_BACKEND or set it to 'tensorflow'")


def _before_paddle() -> str | None:
    """Refuse to import PaddlePaddle 3.3.1 after TensorFlow 2.21: that crashes the process, with no
    exception (imported before, it is fine). Returns ``OMP_NUM_THREADS`` as the user set it, or None."""
    if "tensorflow" in sys.modules and "paddle" not in sys.modules and importlib.util.find_spec("paddle") is not None:
        raise ImportError("PaddlePaddle crashes the process when it is imported after TensorFlow: import nin.paddle "
                          "(or paddle) before nin.tf (or tensorflow)")
    _paddle_mkl_on_amd()
    return _users_omp_threads()


def _paddle_mkl_on_amd() -> None:
    """Let PaddlePaddle's MKL use AVX2 on AMD CPUs; before ``import paddle``.

    PaddlePaddle 3.3.1's CPU wheel computes its convolutions with the MKL it bundles (``libmklml_intel.so``,
    2019.5), which on a CPU that is not Intel's takes its slowest code path; that MKL still reads
    ``MKL_DEBUG_CPU_TYPE`` (later ones ignore it), and 5 selects its AVX2 path (docs/speed.md). Left as the user
    set it, and left unset on Intel CPUs (where MKL picks AVX-512 itself) and where paddle is already imported.
    """
    if "MKL_DEBUG_CPU_TYPE" in os.environ or "paddle" in sys.modules:
        return
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
    except OSError:
        return  # not Linux
    if re.search(r"^vendor_id\s*:\s*AuthenticAMD$", cpuinfo, re.MULTILINE) and re.search(r"^flags\s*:.*\bavx2\b",
                                                                                          cpuinfo, re.MULTILINE):
        os.environ["MKL_DEBUG_CPU_TYPE"] = "5"


def _users_omp_threads() -> str | None:
    """``OMP_NUM_THREADS`` as the user set it, or None: read before paddle's import writes its 1 there, or,
    where paddle was imported first, from the environment the process started with."""
    if "paddle" not in sys.modules:
        return os.environ.get("OMP_NUM_THREADS")
    with contextlib.suppress(OSError):
        started_with = dict(entry.split(b"=", 1) for entry in Path("/proc/self/environ").read_bytes().split(b"\0")
                            if b"=" in entry)
        value = started_with.get(b"OMP_NUM_THREADS")
        return None if value is None else value.decode()
    return os.environ.get("OMP_NUM_THREADS")


def _after_paddle(users_threads: str | None) -> None:
    """PaddlePaddle's import sets ``OMP_NUM_THREADS`` to 1 in the environment, unless it is set, and computes
    on that many threads: one, and every framework imported after it would read that 1 too (PyTorch and MXNet
    do). Give the environment back as it was and PaddlePaddle every CPU the process may run on (its affinity),
    or ``OMP_NUM_THREADS`` when the user set it (1.6x faster on 2 cores).

    Its import also installs its own handler for SIGTERM below Python's (it prints a stack trace and aborts),
    so Python's handler never runs: give Python back SIGTERM and SIGINT, so that ``kill`` stops a run after
    its batch, its finished epochs saved, as in every backend.
    """
    import paddle

    if users_threads is None:
        os.environ.pop("OMP_NUM_THREADS", None)
    paddle.base.core.set_num_threads(int(users_threads or len(os.sched_getaffinity(0))))
    if threading.current_thread() is threading.main_thread():  # only the main thread may set handlers
        for signum in (signal.SIGTERM, signal.SIGINT):
            if signal.getsignal(signum) is not None:  # None: a handler Python did not install, left alone
                signal.signal(signum, signal.getsignal(signum))  # Python's handler again, below it too


_BEFORE = {"mxnet": _before_mxnet, "tf": _before_tf, "paddle": _before_paddle}
_AFTER = {"tf": _after_tf, "paddle": _after_paddle}


# Data-parallel training (nin.workers): what each engine reads from the environment of the processes the launcher
# starts, and the helper processes it needs besides the workers. PyTorch, Keras and JAX take their world as
# arguments (the backends' ``join``); MXNet's parameter server and PaddlePaddle's collective engine read it here.

#: backend -> the roles of the helper processes its engine needs on the coordinator's node, besides the workers
SERVICES = {"mxnet": ("scheduler", "server")}
#: backend -> why its engine runs on one machine only here
ONE_NODE_ONLY = {"tf": "Keras's MultiWorkerMirroredStrategy needs the address of every worker, and --coordinator "
                       "gives node 0's alone",
                 "mxnet": "MXNet's parameter server across nodes is not proven here (on loopback, one two-node run "
                          "hung and one ended with other weights than one process's)"}
#: backend -> why its engine does not train on several processes here at all
ONE_PROCESS_ONLY = {"mxnet": "MXNet 1.9.1's parameter server (kvstore dist_sync) gave wrong gradients here (on one "
                             "machine, 1 to 3 of 10 runs of 2 or 3 workers ended 4 steps with other weights than one "
                             "process's, some of them finite)"}


def engine_env(name: str, world, role: str = "worker") -> dict[str, str]:
    """The environment variables backend ``name``'s engine reads in a process of ``world`` playing ``role``."""
    if name == "mxnet":  # ps-lite: one scheduler (at the coordinator's address), one server, the workers
        env = {"DMLC_ROLE": role, "DMLC_PS_ROOT_URI": world.host, "DMLC_PS_ROOT_PORT": str(world.port),
               "DMLC_NUM_SERVER": "1", "DMLC_NUM_WORKER": str(world.size)}
        if world.nodes > 1:
            return env
        # One node: loopback only. The scheduler numbers the workers in the order of their (host, port): each
        # listens on its own port (PORT, ps-lite's), in the order of the ranks, so that kv.rank is the world's.
        env["DMLC_NODE_HOST"] = world.host
        return {**env, "PORT": str(sorted(world.ports)[world.rank])} if role == "worker" and world.ports else env
    if name == "paddle":  # paddle.distributed.init_parallel_env on gloo, its store at the first endpoint
        ports = world.ports or [world.port + 1 + rank for rank in range(world.size)]
        endpoints = [f"{world.host}:{world.port}", *(f"{world.host}:{p}" for p in ports[1:world.size])]
        return {"PADDLE_TRAINER_ID": str(world.rank), "PADDLE_TRAINERS_NUM": str(world.size),
                "PADDLE_TRAINER_ENDPOINTS": ",".join(endpoints), "PADDLE_CURRENT_ENDPOINT": endpoints[world.rank],
                "PADDLE_MASTER": endpoints[0], "PADDLE_DISTRI_BACKEND": "gloo",
                "PADDLE_LOCAL_RANK": str(world.local_rank), "PADDLE_RANK_IN_NODE": str(world.local_rank)}
    return {}


def serve(name: str, role: str, world) -> None:
    """Run the helper process ``role`` of backend ``name``'s engine until the launcher ends it (SIGTERM), once every
    worker has ended: MXNet's scheduler and server run their loop inside ``import mxnet`` (with ``DMLC_ROLE`` set:
    :func:`engine_env`), which the workers leave without stopping it (``nin.mxnet``: a worker that failed must not
    wait for the others at the exit's barrier; and a helper that ended by itself would read to the launcher as
    one that failed)."""
    if role not in SERVICES.get(name, ()):
        raise ValueError(f"the {name} backend's engine has no {role!r} process")
    os.environ.update(engine_env(name, world, role))
    with importing(name):
        import mxnet  # noqa: F401  (runs the loop, then exits: when the workers stop it, which nin's do not)


# What the frameworks' errors look like, to say them in one line.

_OOM = re.compile(r"out of memory|not enough memory|bad_alloc|\bOOM\b|(failed|unable|can.t|cannot) to allocate|"
                  r"(can.t|cannot) allocate memory",
                  re.IGNORECASE)
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_TRACE = re.compile(r'Traceback \(most recent call last\):|File "[^"]*", line \d+')  # MXNet's C++ stack


def out_of_memory(err: BaseException) -> bool:
    """A framework's (or numpy's) out-of-memory error, whatever its class: MemoryError, PyTorch's
    RuntimeError, TensorFlow's ResourceExhaustedError, MXNet's MXNetError."""
    name = type(err).__name__
    return isinstance(err, MemoryError) or "OutOfMemory" in name or "ResourceExhausted" in name or bool(
        _OOM.search(str(err)))


def one_line(err: BaseException, oom: bool = False) -> str:
    """The error's message on one line: Keras's bold part of its wrapped message where it wraps one
    ("Exception encountered when calling ..."), without terminal escape codes or the C++ stack MXNet
    puts in its messages; for running out of memory, the line that says so."""
    text = str(err)
    bold = re.search(r"\x1b\[1m(.*?)\x1b\[0m", text, re.DOTALL)
    text = _TRACE.sub("", _ANSI.sub("", bold.group(1) if bold else text))
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if oom:
        return next((line for line in lines if _OOM.search(line)), " ".join(lines) or type(err).__name__)[:300]
    return " ".join(lines)
