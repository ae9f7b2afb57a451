"""The accuracy a preset reaches, per backend and seed, on the full Fashion-MNIST.

Each run is ``python -m nin train --backend B --preset P --seed S --out RUNS/B-P-seedS --quiet``, one
at a time (they share the CPU), timed from start to exit (start-up, training and every epoch's test
evaluation). A run already finished in RUNS is read, not repeated, and one that was stopped is
resumed, so the grid can be filled in several sittings. A run whose directory is gone (a new clone, another
machine) keeps the row the JSON file already holds for it, and says so. Writes a JSON file (the rows and every
epoch's records), a markdown table and one picture of the loss and accuracy curves of all runs::

    python benchmarks/accuracy.py --data ../shared/data/fashion-mnist
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from common import machine  # benchmarks/common

import nin
from nin import presets, runs

WALL = "wall.json"  # in each run directory: seconds from start to exit of the command(s) that trained it


def run_dir(runs: Path, backend: str, preset: str, seed: int) -> Path:
    return runs / f"{backend}-{preset}-seed{seed}"


def finished(out: Path) -> bool:
    """A run whose command exited normally after its last epoch."""
    return (out / WALL).is_file() and json.loads((out / WALL).read_text()).get("finished", False)


def train(backend: str, preset: str, seed: int, out: Path, data: str | None, extra: list[str]) -> None:
    """Run (or resume) one training command, and add its wall time to ``out/wall.json``."""
    if (out / runs.CHECKPOINT).is_file():
        command = [sys.executable, "-m", "nin", "train", "--resume", str(out), "--quiet"]
    else:
        command = [sys.executable, "-m", "nin", "train", "--backend", backend, "--preset", preset, "--seed", str(seed),
                   "--out", str(out), "--quiet", *(["--data", data] if data else []), *extra]
    print(" ".join(command), flush=True)
    start = time.perf_counter()
    status = subprocess.call(command)
    seconds = time.perf_counter() - start
    wall = json.loads((out / WALL).read_text()) if (out / WALL).is_file() else {"seconds": 0.0, "commands": []}
    wall["seconds"] += seconds
    wall["commands"].append({"command": command, "seconds": seconds, "status": status, "machine": machine()})
    wall["finished"] = status == 0
    out.mkdir(parents=True, exist_ok=True)
    (out / WALL).write_text(json.dumps(wall, indent=1) + "\n")
    if status != 0:
        raise SystemExit(f"{' '.join(command)} exited with {status}")


def row(backend: str, preset: str, seed: int, out: Path) -> dict:
    """One table row, from the run's metrics (its config and records) and wall time."""
    metrics = json.loads((out / runs.METRICS).read_text())
    history, config = metrics["history"], metrics["config"]
    wall = json.loads((out / WALL).read_text())
    examples = sum(r["examples_per_sec"] * r["seconds"] for r in history)
    train_seconds = sum(r["seconds"] for r in history)
    return {"backend": backend, "preset": preset, "seed": seed, "epochs": len(history),
            "final_test_acc": history[-1]["test_acc"], "best_test_acc": max(r["test_acc"] for r in history),
            "final_train_loss": history[-1]["train_loss"],
            "minutes": wall["seconds"] / 60,
            "machines": sorted({c["machine"] for c in wall["commands"] if "machine" in c}),
            "minutes_per_epoch": train_seconds / len(history) / 60, "examples_per_sec": examples / train_seconds,
            "config": config, "history": history}


def table(rows: list[dict]) -> str:
    lines = ["| backend | seed | precision | final test acc | best test acc | final train loss | minutes (wall) "
             "| minutes per epoch | examples/s |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['backend']} | {r['seed']} | {r['config']['precision']} | {r['final_test_acc']:.3f} "
                     f"| {r['best_test_acc']:.3f} | {r['final_train_loss']:.3f} | {r['minutes']:.1f} "
                     f"| {r['minutes_per_epoch']:.2f} | {r['examples_per_sec']:.0f} |")
    return "\n".join(lines)


def agreement(rows: list[dict]) -> str:
    """Per seed run in every backend: the spread of the final test accuracies across backends."""
    lines = []
    for seed in sorted({r["seed"] for r in rows}):
        accs = {r["backend"]: r["final_test_acc"] for r in rows if r["seed"] == seed}
        if len(accs) > 1:
            spread = max(accs.values()) - min(accs.values())
            lines.append(f"- seed {seed}: final test acc spread across {', '.join(accs)}: {100 * spread:.1f} points")
    return "\n".join(lines)


def machines(rows: list[dict]) -> str:
    """Which runs ran on which machine (recorded from 2026-11-30 on; earlier runs have none)."""
    where: dict[str, list[str]] = {}
    for r in rows:
        for name in r.get("machines") or ["not recorded"]:
            where.setdefault(name, []).append(f"{r['backend']} {r['seed']}")
    return "\n".join(f"- {name}: {', '.join(runs)}" for name, runs in where.items())


def plot(rows: list[dict], path: Path, title: str) -> None:
    """Train loss and test accuracy per epoch, one colour per backend, one line per seed."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 3.4), dpi=100)
    loss_ax, acc_ax = fig.subplots(1, 2)
    colours = {}
    for r in rows:
        colour = colours.setdefault(r["backend"], f"C{len(colours)}")
        epochs = [h["epoch"] + 1 for h in r["history"]]
        label = f"{r['backend']} seed {r['seed']}"
        style = ("-", "--", ":", "-.")[r["seed"] % 4]
        loss_ax.plot(epochs, [h["train_loss"] for h in r["history"]], style, color=colour, marker="o", markersize=3,
                     label=label)
        acc_ax.plot(epochs, [h["test_acc"] for h in r["history"]], style, color=colour, marker="o", markersize=3,
                    label=label)
    loss_ax.set(xlabel="epoch", ylabel="train loss", title="train loss")
    acc_ax.set(xlabel="epoch", ylabel="test accuracy", title="test accuracy")
    for ax in (loss_ax, acc_ax):
        ax.grid(True)
    acc_ax.legend(fontsize=7, ncol=2)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backends", default=",".join(nin.BACKENDS))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--data", help="directory of the four IDX files (default: $NIN_DATA or the cache)")
    parser.add_argument("--runs", type=Path, default=Path(presets.BUDGETS["cpu"]["runs"]),
                        help="where the run directories go (default: the cpu budget's, nin.presets.BUDGETS)")
    parser.add_argument("--report-only", action="store_true", help="train nothing: tabulate the finished runs")
    parser.add_argument("--machine", default=machine(),
                        help="the machine, for the report (default: this one; each row names those its run ran on)")
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results/accuracy/cpu.json"))
    parser.add_argument("--md", type=Path, default=Path("benchmarks/results/accuracy/cpu.md"))
    parser.add_argument("--png", type=Path, default=Path("benchmarks/results/accuracy/cpu.png"))
    parser.add_argument("extra", nargs="*", help="after --: more `nin train` flags for new runs (e.g. --epochs 2)")
    args = parser.parse_args(argv)
    backends, seeds = args.backends.split(","), [int(s) for s in args.seeds.split(",")]
    recorded = json.loads(args.json.read_text()) if args.json.is_file() else {"preset": None, "rows": []}
    recorded = {(r["backend"], r["seed"]): r for r in recorded["rows"] if recorded["preset"] == args.preset}
    rows = []
    for seed in seeds:  # seed by seed, so that a stopped grid has whole seeds to compare across backends
        for backend in backends:
            out = run_dir(args.runs, backend, args.preset, seed)
            if not args.report_only and not finished(out):
                train(backend, args.preset, seed, out, args.data, args.extra)
            if finished(out):
                rows.append(row(backend, args.preset, seed, out))
            elif (backend, seed) in recorded:
                rows.append(recorded[backend, seed])
                print(f"{out} is not here: {backend} seed {seed} kept as recorded in {args.json}", flush=True)
            else:
                continue
            print(table([rows[-1]]).splitlines()[-1], flush=True)
    if not rows:
        raise SystemExit(f"no finished runs in {args.runs}")
    rows.sort(key=lambda r: (backends.index(r["backend"]), r["seed"]))
    report = {"preset": args.preset, "machine": args.machine,
              "date": time.strftime("%Y-%m-%d"), "command": " ".join(["python", *sys.argv]), "rows": rows}
    args.json.write_text(json.dumps(report, indent=1) + "\n")
    title = f"NiN on Fashion-MNIST (60,000/10,000 images), preset {args.preset!r}"
    args.md.write_text(f"# {title}\n\n{table(rows)}\n\n{agreement(rows)}\n\n"
                       f"Machines (backend seed):\n\n{machines(rows)}\n")
    plot(rows, args.png, title)
    print(table(rows))
    print(agreement(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
