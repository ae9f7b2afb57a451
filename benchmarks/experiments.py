"""The section's exercises 1, 2 and 4 as experiments: every run is a `nin train` command.

    python benchmarks/experiments.py variants [budget options]   # exercise 2 (num_1x1) and 4 (head)
    python benchmarks/experiments.py sweep [--lrs 0.05,0.1,0.2] [--batch-sizes 64,128] [budget options]

Each run is `python -m nin train ... --seed S --out DIR/NAME` with the same budget and
seeds for every setting; the script reads each run's metrics.json and prints a markdown
table (one row per setting, averaged over seeds, with the command of its first seed, which
repeats the run exactly on a CPU) and writes all records to DIR/results.json.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

import nin
from nin import spec

VARIANTS = [{"num_1x1": n, "head": h} for h in spec.HEADS for n in (2, 1, 0)]


def run(settings: dict, seed: int, args, out: Path) -> dict:
    """One `nin train` run; returns its settings, command and records."""
    name = "-".join(f"{k}{v}" for k, v in settings.items()) + f"-seed{seed}"
    options = {"backend": args.backend, "epochs": args.epochs, "lr": args.lr, "batch-size": args.batch_size,
               "resize": args.resize, "limit-train": args.limit_train, "limit-test": args.limit_test,
               "init": args.init, "seed": seed, **{k.replace("_", "-"): v for k, v in settings.items()}}
    if args.data:
        options["data"] = args.data
    command = ["python", "-m", "nin", "train", *[f"--{k}={v}" for k, v in options.items()]]
    start = time.perf_counter()
    subprocess.run([sys.executable, *command[1:], f"--out={out / name}", "--quiet"], check=True)
    records = json.loads((out / name / "metrics.json").read_text())["history"]
    return {"settings": settings, "seed": seed, "command": shlex.join(command), "records": records,
            "wall_seconds": time.perf_counter() - start}


def table(results: list[dict], settings_list: list[dict]) -> str:
    lines = ["| setting | params | final train loss | final test acc | best test acc | examples/s | command "
             "(first seed) |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for settings in settings_list:
        runs = [r for r in results if r["settings"] == settings]
        last = [r["records"][-1] for r in runs]
        params = spec.total_params(num_1x1=settings.get("num_1x1", 2), head=settings.get("head", "one-step"))
        lines.append(
            f"| {', '.join(f'{k}={v}' for k, v in settings.items())} | {params:,} "
            f"| {statistics.mean(x['train_loss'] for x in last):.3f} "
            f"| {statistics.mean(x['test_acc'] for x in last):.3f} "
            f"| {statistics.mean(max(e['test_acc'] for e in r['records']) for r in runs):.3f} "
            f"| {statistics.mean(x['examples_per_sec'] for x in last):.0f} | `{runs[0]['command']}` |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("experiment", choices=["variants", "sweep"])
    parser.add_argument("--backend", default="torch", choices=list(nin.BACKENDS))
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--resize", type=int, default=67)
    parser.add_argument("--limit-train", type=int, default=4096)
    parser.add_argument("--limit-test", type=int, default=1000)
    parser.add_argument("--init", default="kaiming", choices=["xavier", "kaiming"])
    parser.add_argument("--lrs", default="0.05,0.1,0.2", help="sweep: learning rates")
    parser.add_argument("--batch-sizes", default="64,128", help="sweep: batch sizes")
    parser.add_argument("--data", help="directory of the IDX files (default: $NIN_DATA or the cache)")
    parser.add_argument("--out", default="runs/experiments")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    if args.experiment == "variants":
        settings_list = VARIANTS
    else:
        settings_list = [{"lr": float(lr), "batch_size": int(b)}
                         for lr in args.lrs.split(",") for b in args.batch_sizes.split(",")]
    out = Path(args.out) / args.experiment
    results = [run(settings, seed, args, out) for settings in settings_list for seed in seeds]
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=1))
    print(f"{args.experiment}: {args.backend}, init {args.init}, {args.epochs} epochs of the first "
          f"{args.limit_train} training images at {args.resize}x{args.resize}, test on the first {args.limit_test}, "
          f"seeds {args.seeds}; {time.strftime('%Y-%m-%d')}\n")
    print(table(results, settings_list))


if __name__ == "__main__":
    main()
