"""The section's exercises 1, 2 and 4 on the full Fashion-MNIST, with the ``cpu`` preset: every run is a
``nin train`` command, run (or resumed where it stopped) by ``benchmarks/accuracy.py``, one at a time::

    python benchmarks/experiments.py variants --seeds 0,1,2 --data DIR             # exercises 2 and 4, PyTorch
    python benchmarks/experiments.py variants --backend tf --seeds 0 --data DIR    # the same in Keras
    python benchmarks/experiments.py tuning --screens e18 --seeds 0 --data DIR     # exercise 1, PyTorch
    python benchmarks/experiments.py report                                        # tables and figures

Each variant or screen keeps its results in ``benchmarks/results/accuracy/<name>.json`` (``variant-<variant>``,
with ``-<backend>`` for a backend other than PyTorch, and ``tune-<screen>``), seeds added to those already
recorded; a finished variant run's class units (``benchmarks/units.py``) go to
``benchmarks/results/units/<name>.json``. The book's model (``one-step-n2``) is the ``cpu`` preset's own runs
(``cpu.json``), run only when asked by name (``--only one-step-n2 --seeds 3``: a seed those runs do not have).
``report`` reads those files only (no run directory needed) and writes
``benchmarks/results/exercises/{variants,tuning}.{md,png}``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import accuracy  # benchmarks/accuracy.py
import units  # benchmarks/units.py

import nin.resources
from nin import presets

RESULTS = Path("benchmarks/results/accuracy")
UNITS = Path("benchmarks/results/units")
OUT = Path("benchmarks/results/exercises")
PRESET = "cpu"
BOOK = "one-step-n2"  # the book's model: the cpu preset's own runs (RESULTS/cpu.json)

#: exercises 2 and 4: name -> the variant (``NiN``'s ``num_1x1`` and ``head``)
VARIANTS = {f"{head}-n{n}": {"num_1x1": n, "head": head}
            for n, head in ((2, "one-step"), (1, "one-step"), (0, "one-step"), (2, "gradual"), (1, "gradual"))}

#: exercise 1: name -> the training settings that differ from the cpu preset (the model and data stay the book's)
SCREENS = {
    "e18": {"epochs": 18},
    "r128-e10": {"resize": 128, "epochs": 10},
}


def flags(settings: dict) -> list[str]:
    return [part for key, value in settings.items() for part in (f"--{key.replace('_', '-')}", str(value))]


def result_name(kind: str, name: str, backend: str = "torch") -> str:
    """``variant-<name>`` or ``tune-<name>``, with ``-<backend>`` for a backend other than PyTorch."""
    return f"{kind}-{name}" + ("" if backend == "torch" else f"-{backend}")


def variant_rows(name: str, backend: str) -> list[dict]:
    """The runs of variant ``name`` in ``backend``: for the book's model, the cpu preset's own (``cpu.json``) and any
    run with another seed (``variant-one-step-n2``)."""
    found = rows(result_name("variant", name, backend), backend)
    if name == BOOK:
        preset = rows(PRESET, backend)
        found = [*preset, *[r for r in found if r["seed"] not in {r["seed"] for r in preset}]]
    return found


def screen_rows(name: str, backend: str) -> list[dict]:
    """The runs of screen ``name`` in ``backend``; the cpu preset's own for ``PRESET``, the baseline."""
    return rows(PRESET if name == PRESET else result_name("tune", name, backend), backend)


def rows(name: str, backend: str | None = None) -> list[dict]:
    """The recorded rows of result ``name`` (of ``backend`` only, if given)."""
    path = RESULTS / f"{name}.json"
    found = json.loads(path.read_text())["rows"] if path.is_file() else []
    return [r for r in found if backend is None or r["backend"] == backend]


def run(name: str, backend: str, seeds: list[int], settings: dict, runs: Path, data: str | None) -> None:
    """Train (or resume) ``name``'s runs for ``seeds`` besides those recorded, and tabulate them all."""
    seeds = sorted({r["seed"] for r in rows(name)} | set(seeds))
    stem = RESULTS / name
    accuracy.main(["--backends", backend, "--seeds", ",".join(map(str, seeds)), "--preset", PRESET, "--runs",
                   str(runs), "--json", f"{stem}.json", "--md", f"{stem}.md", "--png", f"{stem}.png",
                   *(["--data", data] if data else []), "--", *flags(settings)])


def count_units(name: str, backend: str, seeds: list[int], runs: Path, data: str | None) -> None:
    """The class units of each finished run of ``seeds`` (those counted before are kept)."""
    path = UNITS / f"{name}.json"
    counted = {r["seed"]: r for r in (json.loads(path.read_text())["rows"] if path.is_file() else [])}
    for seed in seeds:
        out = accuracy.run_dir(runs, backend, PRESET, seed)
        if accuracy.finished(out):
            counted[seed] = units.units(out, data, None)
    if counted:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"machine": accuracy.machine(), "command": " ".join(["python", *sys.argv]),
                                    "rows": [counted[s] for s in sorted(counted)]}, indent=1) + "\n")


def spread(values: list[float], digits: int = 3) -> str:
    """``mean ± sd (min-max)`` over seeds, or the one value."""
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return (f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f} "
            f"({min(values):.{digits}f}-{max(values):.{digits}f})")


def units_cell(counted: list[dict]) -> str:
    """The class units never on, per counted seed, and the least share of the images any unit is on for."""
    if not counted:
        return "not counted yet"
    seeds = ", ".join(str(r["seed"]) for r in counted)
    return (f"{', '.join(str(r['units_never_on']) for r in counted)} (seed{'s' * (len(counted) > 1)} {seeds}); "
            f"the least on for {100 * min(r['least_share_on'] for r in counted):.0f}% of the images")


def variants_report(backend: str, second: str) -> str:
    lines = ["| num_1x1, head | params | MACs per image | training memory, batch 128 | seeds | final test acc "
             "| best test acc | final train loss | minutes per epoch (fastest seed) | class units never on | "
             f"{second} seed 0: final test acc |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    batch, size = presets.PRESETS[PRESET]["batch_size"], presets.PRESETS[PRESET]["resize"]
    for name, variant in VARIANTS.items():
        found = variant_rows(name, backend)
        other = [r for r in variant_rows(name, second) if r["seed"] == 0]
        res = nin.resources.resources((batch, 1, size, size), **variant)["totals"]
        units_file = UNITS / f"{result_name('variant', name, backend)}.json"
        counted = json.loads(units_file.read_text())["rows"] if units_file.is_file() else []
        cells = [f"{variant['num_1x1']}, {variant['head']}", f"{res['params']:,}", f"{res['macs'] / batch / 1e6:.1f} M",
                 f"{res['train_bytes'] / 2**20:.0f} MiB"]
        if found:
            cells += [", ".join(str(r["seed"]) for r in found), spread([r["final_test_acc"] for r in found]),
                      spread([r["best_test_acc"] for r in found]), spread([r["final_train_loss"] for r in found]),
                      f"{min(r['minutes_per_epoch'] for r in found):.2f}"]
        else:
            cells += ["-", "not run yet", "-", "-", "-"]
        cells.append(units_cell(counted))
        cells.append(f"{other[0]['final_test_acc']:.3f}" if other else "not run yet")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def tuning_report(backend: str) -> str:
    lines = ["| screen | settings (others: the cpu preset's) | seeds | final test acc | best test acc "
             "| final train loss | minutes (wall, longest) | examples/s |", "|---|---|---|---|---|---|---|---|"]
    for name, settings in {PRESET: {}, **SCREENS}.items():
        found = screen_rows(name, backend)
        described = ", ".join(f"{k}={v}" for k, v in settings.items()) or "the cpu preset: " + ", ".join(
            f"{k}={presets.PRESETS[PRESET][k]}" for k in ("epochs", "resize", "lr", "batch_size"))
        if not found:
            lines.append(f"| {name} | {described} | - | not run yet | - | - | - | - |")
            continue
        lines.append(f"| {name} | {described} | {', '.join(str(r['seed']) for r in found)} "
                     f"| {spread([r['final_test_acc'] for r in found])} "
                     f"| {spread([r['best_test_acc'] for r in found])} "
                     f"| {spread([r['final_train_loss'] for r in found])} | {max(r['minutes'] for r in found):.1f} "
                     f"| {statistics.mean(r['examples_per_sec'] for r in found):.0f} |")
    return "\n".join(lines)


def machines(names, kind: str, backend: str) -> str:
    """The machines the recorded runs of ``names`` ran on."""
    found = sorted({m for name in names for r in rows(result_name(kind, name, backend)) for m in r.get("machines", [])})
    return ", ".join(found) or "none recorded"


def plot(groups: dict[str, list[dict]], path: Path, title: str) -> None:
    """Train loss and test accuracy per epoch: one colour per group, its mean over seeds bold, each seed thin (no
    figure without runs)."""
    if not groups:
        return
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 3.8), dpi=100)
    loss_ax, acc_ax = fig.subplots(1, 2)
    for i, (label, found) in enumerate(groups.items()):
        for key, ax in (("train_loss", loss_ax), ("test_acc", acc_ax)):
            curves = [[h[key] for h in r["history"]] for r in found]
            for curve in curves:
                ax.plot(range(1, len(curve) + 1), curve, color=f"C{i}", alpha=0.3, linewidth=0.8)
            mean = [statistics.mean(c[e] for c in curves) for e in range(min(map(len, curves)))]
            ax.plot(range(1, len(mean) + 1), mean, color=f"C{i}", linewidth=2,
                    label=f"{label} ({len(found)} seed{'s' * (len(found) > 1)})")
    loss_ax.set(xlabel="epoch", ylabel="train loss", title="train loss", yscale="log")
    acc_ax.set(xlabel="epoch", ylabel="test accuracy", title="test accuracy", ylim=(0.8, 0.93))
    for ax in (loss_ax, acc_ax):
        ax.grid(True)
    acc_ax.legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path)


def report(backend: str, second: str) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "variants.md").write_text(
        f"# Exercises 2 and 4: NiN's variants, `cpu` preset, full data\n\n{variants_report(backend, second)}\n\n"
        f"Each variant: `python benchmarks/experiments.py variants --only <variant> --seeds 0,1,2 --data DIR` "
        f"(`--backend {second} --seeds 0` for the last column); one run: `python -m nin train --backend {backend} "
        f"--preset {PRESET} --seed S --num-1x1 N --head H`.\n\nMachines: {machines(VARIANTS, 'variant', backend)}\n")
    plot({f"num_1x1={v['num_1x1']}, {v['head']}": found for name, v in VARIANTS.items()
          if (found := variant_rows(name, backend))},
         OUT / "variants.png", f"NiN's variants, {backend}, cpu preset (60,000/10,000 images)")
    (OUT / "tuning.md").write_text(
        f"# Exercise 1: training settings for the book's model, {backend}, full data\n\n{tuning_report(backend)}\n\n"
        f"Each screen: `python benchmarks/experiments.py tuning --screens <screen> --seeds 0,1,2 --data DIR`; one run: "
        f"`python -m nin train --backend {backend} --preset {PRESET} --seed S` with the screen's settings as flags "
        f"(`--epochs 18`).\n\nMachines: {machines(SCREENS, 'tune', backend)}\n")
    plot({name: found for name in (PRESET, *SCREENS)
          if (found := screen_rows(name, backend))},
         OUT / "tuning.png", f"The book's model under other training settings, {backend} (60,000/10,000 images)")
    print((OUT / "variants.md").read_text(), (OUT / "tuning.md").read_text(), sep="\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("experiment", choices=["variants", "tuning", "report"])
    parser.add_argument("--backend", default="torch", choices=list(nin.BACKENDS), help="the framework to run")
    parser.add_argument("--only", help=f"variants: these only (comma-separated, of {', '.join(VARIANTS)})")
    parser.add_argument("--screens", help=f"tuning: these (comma-separated, of {', '.join(SCREENS)})")
    parser.add_argument("--seeds", default="0", help="seeds to add to those recorded")
    parser.add_argument("--data", help="directory of the four IDX files (default: $NIN_DATA or the cache)")
    parser.add_argument("--runs", type=Path, default=Path("runs"), help="where the run directories go")
    parser.add_argument("--second", default="tf", choices=list(nin.BACKENDS),
                        help="report: the second framework's column")
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    if args.experiment == "variants":
        for name in args.only.split(",") if args.only else VARIANTS:
            if name not in VARIANTS:
                parser.error(f"--only: no variant {name!r}; choose of {', '.join(VARIANTS)}")
            if name == BOOK and not args.only:  # its seeds 0-2 are the cpu preset's runs; another seed if asked
                continue
            runs = args.runs / "variants" / name
            run(result_name("variant", name, args.backend), args.backend, seeds, VARIANTS[name], runs, args.data)
            count_units(result_name("variant", name, args.backend), args.backend, seeds, runs, args.data)
    elif args.experiment == "tuning":
        for name in (args.screens or "").split(","):
            if name not in SCREENS:
                parser.error(f"--screens: no screen {name!r}; choose of {', '.join(SCREENS)}")
            run(result_name("tune", name, args.backend), args.backend, seeds, SCREENS[name], args.runs / "tune" / name,
                args.data)
    else:
        report(args.backend, args.second)
    return 0


if __name__ == "__main__":
    sys.exit(main())
