"""The book's own code, per framework (``nin/book/<backend>.py``): d2l's ``train_ch6`` and data
loader, and the framework's own gradients and parameter count. The tests and the benchmarks
check nin's backends against it; nin itself does not use it."""

from __future__ import annotations

import importlib
import time
from types import ModuleType

import nin


def module(name: str) -> ModuleType:
    """``nin.book.<name>``, for a backend ``name`` (its framework must import, as for :func:`nin.backend`)."""
    nin.backend(name)
    return importlib.import_module(f"nin.book.{name}")


def matmul_gflops(name: str, n: int = 4096, repeats: int = 5) -> float:
    """The best rate, in GFLOP/s, of a float32 ``n`` x ``n`` matrix product in backend ``name``'s framework
    (its ``matmul``), over ``repeats`` tries: what the hardware lets that framework do."""
    run = module(name).matmul(n)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9
