"""What data parallelism costs on this machine: one process on every core against N workers (``nin train
--workers N``) sharing them, each backend on its own engine.

    python benchmarks/workers.py [--backends torch,tf,...] [--workers 2] [--images 4096] [--resize 96]
                                 [--epochs 2] [--data DIR] [--json FILE] [--md FILE]

Per backend, two runs of the ``cpu`` preset on the same first ``--images`` training images (and 512 test
images), through the command line: one process (its framework on all the cores it may use), then
``--workers`` processes, each given cores / N threads and pinned to its own cores by the launcher. The speed is
the training examples per second of the epochs after the first (which pays for graph building), as
``metrics.json`` records them (all workers' examples over rank 0's epoch time, test evaluation not
included). ``ratio`` = workers' speed / one process's: 1 means data parallelism is free here, 0.85 costs 15%.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import machine  # benchmarks/common

import nin  # imports no framework
from nin import frameworks


def speed(backend: str, workers: int, args, out: Path) -> dict:
    command = [sys.executable, "-m", "nin", "train", "--backend", backend, "--preset", "cpu", "--seed", "0",
               "--limit-train", str(args.images), "--limit-test", "512", "--resize", str(args.resize),
               "--epochs", str(args.epochs), "--out", str(out), "--quiet", "--workers", str(workers),
               *(["--data", args.data] if args.data else [])]
    start = time.perf_counter()
    subprocess.run(command, check=True)
    history = json.loads((out / "metrics.json").read_text())["history"][1:]
    return {"examples_per_sec": sum(r["examples_per_sec"] * r["seconds"] for r in history) /
            sum(r["seconds"] for r in history), "wall_seconds": time.perf_counter() - start,
            "command": " ".join(command[1:])}


def table(results: dict) -> str:
    lines = [f"Data parallelism on {results['machine']}: `python benchmarks/workers.py {results['args']}`", "",
             f"| backend | 1 process, ex/s | {results['workers']} workers, ex/s | ratio |", "|---|---|---|---|"]
    for name, r in results["backends"].items():
        lines.append(f"| {name} | {r['one']['examples_per_sec']:.0f} | {r['many']['examples_per_sec']:.0f} | "
                     f"{r['ratio']:.2f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    engines = [name for name in nin.BACKENDS if name not in frameworks.ONE_PROCESS_ONLY]
    parser.add_argument("--backends", default=",".join(engines),
                        help="default: every backend whose engine trains on several processes")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--images", type=int, default=4096)
    parser.add_argument("--resize", type=int, default=96)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--data")
    parser.add_argument("--json")
    parser.add_argument("--md")
    args = parser.parse_args()
    results = {"machine": machine(), "workers": args.workers, "args": " ".join(sys.argv[1:]), "backends": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.backends.split(","):
            one = speed(name, 1, args, Path(tmp) / f"{name}-1")
            many = speed(name, args.workers, args, Path(tmp) / f"{name}-{args.workers}")
            results["backends"][name] = {"one": one, "many": many,
                                         "ratio": many["examples_per_sec"] / one["examples_per_sec"]}
            print(f"{name}: {one['examples_per_sec']:.0f} ex/s in one process, {many['examples_per_sec']:.0f} on "
                  f"{args.workers} workers: ratio {results['backends'][name]['ratio']:.2f}", flush=True)
            if args.json:  # after each backend: a stopped benchmark keeps what it measured
                Path(args.json).write_text(json.dumps(results, indent=1) + "\n")
    if args.md:
        Path(args.md).write_text(table(results))
    print(table(results))


if __name__ == "__main__":
    main()
