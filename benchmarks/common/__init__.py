"""What the benchmark scripts share (each script is run as ``python benchmarks/NAME.py``, which puts
``benchmarks/`` on ``sys.path``; no script imports another). Their results go to
``benchmarks/results/<script>/``."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def machine() -> str:
    """This machine's CPU model and count (speeds differ between machines of one kind: keep which ran what)."""
    cpuinfo = Path("/proc/cpuinfo")
    models = [line.split(":", 1)[1].strip() for line in (cpuinfo.read_text().splitlines() if cpuinfo.is_file() else [])
              if line.startswith("model name")]
    return f"{models[0] if models else platform.machine()}, {os.cpu_count()} CPUs"
