"""The book's own code, per framework (``nin/book/<backend>.py``): d2l's ``train_ch6`` and data
loader, and the framework's own gradients and parameter count. The tests and the benchmarks
check nin's backends against it; nin itself does not use it."""

from __future__ import annotations

import importlib
from types import ModuleType

import nin


def module(name: str) -> ModuleType:
    """``nin.book.<name>``, for a backend ``name`` (its framework must import, as for :func:`nin.backend`)."""
    nin.backend(name)
    return importlib.import_module(f"nin.book.{name}")
