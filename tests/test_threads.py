"""Each framework computes on every core, and importing one leaves the others' threads alone.

MXNet 1.9 halves OpenMP's threads on x86 for the whole process unless told otherwise (see
nin/mxnet.py): on CPUs without hyperthreads that halves its speed and PyTorch's beside it.
PaddlePaddle's import computes on one thread and writes OMP_NUM_THREADS=1 into the process's
environment (see nin/paddle.py); its MKL takes a slow path on AMD CPUs unless told (nin/frameworks.py).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REQUESTED

MXNET = [name for name in REQUESTED if name == "mxnet"] or [pytest.param("mxnet", marks=pytest.mark.skip(
    reason="MXNet's threads: the mxnet and all envs check them"))]
PADDLE = [name for name in REQUESTED if name == "paddle"] or [pytest.param("paddle", marks=pytest.mark.skip(
    reason="PaddlePaddle's threads: the paddle env checks them"))]
OPENMP = "import ctypes; print(ctypes.CDLL('libgomp.so.1').omp_get_max_threads())"


def _run(code: str, **env: str) -> str:
    clean = {k: v for k, v in os.environ.items()
             if k not in ("OMP_NUM_THREADS", "MXNET_OMP_MAX_THREADS", "MKL_DEBUG_CPU_TYPE")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**clean, **env},
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.strip().splitlines()[-1]


def _physical_cores() -> int:
    cpus = len(os.sched_getaffinity(0))
    smt = Path("/sys/devices/system/cpu/smt/active")
    return cpus // 2 if smt.exists() and smt.read_text().strip() != "0" else cpus


@pytest.mark.parametrize("name", MXNET)
def test_mxnet_computes_on_every_core(name):
    assert int(_run(f"from nin import mxnet; {OPENMP}")) == _physical_cores()


@pytest.mark.parametrize("name", MXNET)
def test_mxnet_keeps_the_users_thread_count(name):
    assert int(_run(f"from nin import mxnet; {OPENMP}", OMP_NUM_THREADS="1")) == 1


@pytest.mark.cross
def test_mxnet_leaves_pytorch_its_threads(all_backends):
    alone = _run("import torch; print(torch.get_num_threads())")
    assert _run("from nin import mxnet; import torch; print(torch.get_num_threads())") == alone


# PaddlePaddle has no getter for its thread count: the CPU time of a matrix product against its wall time
BUSY = ("import time; A = paddle.rand([1536, 1536]); A @ A; cpu, wall = time.process_time(), time.perf_counter(); "
        "[float((A @ A).sum()) for _ in range(8)]; print((time.process_time() - cpu) / (time.perf_counter() - wall))")


@pytest.mark.parametrize("name", PADDLE)
@pytest.mark.parametrize("first", ["from nin import paddle", "import paddle; from nin import paddle as _"])
def test_paddle_computes_on_every_core_and_leaves_the_environment(name, first):
    cpus = len(os.sched_getaffinity(0))
    assert _run(f"{first}; import os; print(os.environ.get('OMP_NUM_THREADS'))") == "None"
    if cpus > 1:
        assert float(_run(f"{first}; import paddle; {BUSY}")) > 0.75 * cpus


@pytest.mark.parametrize("name", PADDLE)
def test_paddle_keeps_the_users_thread_count(name):
    assert float(_run(f"import paddle; from nin import paddle as _; {BUSY}", OMP_NUM_THREADS="1")) < 1.25


@pytest.mark.parametrize("name", PADDLE)
def test_paddle_takes_mkls_avx2_path_on_amd_cpus_unless_told_otherwise(name):
    """PaddlePaddle's MKL (2019.5) takes its slowest path on a CPU that is not Intel's: ``MKL_DEBUG_CPU_TYPE=5``
    selects its AVX2 one (2x the training speed on an AMD EPYC, docs/speed.md); a user's value is kept."""
    cpuinfo = Path("/proc/cpuinfo").read_text()
    amd = "AuthenticAMD" in cpuinfo and " avx2" in cpuinfo
    code = "from nin import paddle as _; import os; print(os.environ.get('MKL_DEBUG_CPU_TYPE'))"
    assert _run(code) == ("5" if amd else "None")
    assert _run(code, MKL_DEBUG_CPU_TYPE="0") == "0"
