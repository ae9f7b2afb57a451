"""Each framework computes on every core, and importing one leaves the others' threads alone.

MXNet 1.9 halves OpenMP's threads on x86 for the whole process unless told otherwise (see
nin/mxnet.py): on CPUs without hyperthreads that halves its speed and PyTorch's beside it.
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
OPENMP = "import ctypes; print(ctypes.CDLL('libgomp.so.1').omp_get_max_threads())"


def _run(code: str, **env: str) -> str:
    clean = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MXNET_OMP_MAX_THREADS")}
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
