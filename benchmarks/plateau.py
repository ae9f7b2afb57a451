"""The loss-2.303 plateau: how often and how long each backend's NiN stays on it, and why.

    python benchmarks/plateau.py [--backends mxnet,torch,tf,jax,paddle] [--inits xavier,kaiming] [--seeds 0,1,2]
                                 [--epochs 16] [--limit-train 1024] [--resize 67] [--json FILE]

Two measurements per backend, init and seed, each backend in its own process, one at a time:

1. At init (forward only): on a fixed batch of 64 real test images resized to 96, the RMS of the
   output of each of the four NiN blocks and of the logits, the spread of the logits across the
   classes, the fraction of logits that are exactly 0 (ReLU), the fraction of class units that are
   0 for the whole batch (dead), and the cross-entropy. The weights are the ones ``train`` starts
   from with the same seed (the backend's ``init_weights``).
2. Training with the public ``train`` (plain SGD, the book's lr 0.1) on a small budget. The
   plateau length is the number of SGD steps done before the first epoch whose mean train loss
   is below 2.2 (resolution: one epoch); a run is "stuck" when it ends with train loss > 2.29 and
   test accuracy <= 0.15.

It writes every number to ``--json`` and prints markdown tables.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time

import nin  # imports no framework

LEAVE_LOSS = 2.2          # the plateau is left when an epoch's mean train loss drops below this
STUCK_LOSS, STUCK_ACC = 2.29, 0.15
DIAG_BATCH, DIAG_RESIZE = 64, 96


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--backends", default=",".join(nin.BACKENDS), help="comma-separated (default: all five)")
    p.add_argument("--inits", default="xavier,kaiming")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--diag-seeds", help="seeds for the (cheap) init diagnostic; default: --seeds")
    p.add_argument("--epochs", type=int, default=16)
    p.add_argument("--limit-train", type=int, default=1024)
    p.add_argument("--limit-test", type=int, default=512)
    p.add_argument("--resize", type=int, default=67)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--warmup-epochs", type=int, default=0, help="first epochs at --warmup-lr (default 0)")
    p.add_argument("--warmup-lr", type=float, default=0.01)
    p.add_argument("--data", default=os.environ.get("NIN_DATA", "/work/shared/data/fashion-mnist"))
    p.add_argument("--json", help="write all raw numbers here")
    p.add_argument("--backend", help=argparse.SUPPRESS)   # worker mode: one backend, in this process
    p.add_argument("--out", help=argparse.SUPPRESS)       # worker mode: where its JSON goes
    return p.parse_args(argv)


# ---------------------------------------------------------------- worker: one backend

def diagnose(backend, net, X, y):
    """The RMS, dead channels and logit statistics of ``net`` on the fixed batch ``X``."""
    import numpy as np

    from nin import book

    outs = book.module(backend).layer_outputs(net, X)  # N,C,H,W
    channel_axis = 1
    blocks = [a.astype("float64") for kind, a in outs if kind == "nin_block"]
    logits = outs[-1][1].astype("float64")
    z = logits - logits.max(axis=1, keepdims=True)
    ce = float(np.mean(np.log(np.exp(z).sum(axis=1)) - z[np.arange(len(y)), y]))

    def dead(a):  # fraction of channels that are 0 for every image and position
        return float(np.mean(np.all(np.moveaxis(a, channel_axis, -1).reshape(-1, a.shape[channel_axis]) == 0,
                                    axis=0)))

    return {"block_rms": [float(np.sqrt(np.mean(a**2))) for a in blocks],
            "block_dead": [dead(a) for a in blocks],
            "logit_rms": float(np.sqrt(np.mean(logits**2))),
            "logit_spread": float(np.mean(logits.std(axis=1))),        # std across classes, mean over images
            "input_std": float(np.mean(logits.std(axis=0))),           # std across images, mean over classes
            "zero_logits": float(np.mean(logits == 0)),                  # fraction of all logits exactly 0
            "dead_units": float(np.mean(np.all(logits == 0, axis=0))),   # class units 0 for the whole batch
            "loss": ce}


def summarize_run(history, steps_per_epoch):
    losses = [r["train_loss"] for r in history]
    first = next((e for e, loss in enumerate(losses) if loss < LEAVE_LOSS), None)
    final = history[-1]
    return {"plateau_steps": None if first is None else first * steps_per_epoch,
            "stuck": final["train_loss"] > STUCK_LOSS and final["test_acc"] <= STUCK_ACC,
            "final_loss": final["train_loss"], "final_test_acc": final["test_acc"]}


def worker(args):

    backend = args.backend
    mod = importlib.import_module(f"nin.{backend}")
    inits, seeds = args.inits.split(","), [int(s) for s in args.seeds.split(",")]
    result = {"backend": backend, "diagnostics": [], "runs": []}

    _, diag_iter = mod.load_data_fashion_mnist(DIAG_BATCH, DIAG_RESIZE, args.data, limit_train=1,
                                               limit_test=DIAG_BATCH, download=False)
    X, y = next(iter(diag_iter))
    y = mod.to_numpy(y).astype(int)
    diag_seeds = [int(s) for s in (args.diag_seeds or args.seeds).split(",")]
    for init in inits:
        for seed in diag_seeds:
            net = mod.NiN()
            mod.init_weights(net, init, seed)  # the weights train(..., seed=seed, init=init) starts from
            result["diagnostics"].append({"init": init, "seed": seed, **diagnose(backend, net, X, y)})

    steps_per_epoch = math.ceil(args.limit_train / args.batch_size)
    for init in inits:
        for seed in seeds:
            train_iter, test_iter = mod.load_data_fashion_mnist(
                args.batch_size, args.resize, args.data, limit_train=args.limit_train,
                limit_test=args.limit_test, seed=seed, download=False)
            start, net, warm = time.perf_counter(), mod.NiN(), args.warmup_epochs
            history = []
            if warm:  # a first, shorter run at a smaller lr, then the same net goes on at --lr
                history = mod.train(net, train_iter, test_iter, warm, args.warmup_lr, seed=seed, init=init,
                                    quiet=True)
            history += mod.train(net, train_iter, test_iter, args.epochs - warm, args.lr, seed=seed,
                                 init=None if warm else init, quiet=True)
            seconds = time.perf_counter() - start
            run = {"init": init, "seed": seed, "seconds": seconds, "steps_per_epoch": steps_per_epoch,
                   **summarize_run(history, steps_per_epoch),
                   "train_loss": [r["train_loss"] for r in history],
                   "test_acc": [r["test_acc"] for r in history],
                   "after": diagnose(backend, net, X, y)}  # the same statistics, after training
            result["runs"].append(run)
            print(f"{backend} {init} seed {seed}: plateau {run['plateau_steps']} steps, final loss "
                  f"{run['final_loss']:.3f}, test acc {run['final_test_acc']:.3f}, dead class units after "
                  f"{run['after']['dead_units']:.1f}, logit spread {run['after']['logit_spread']:.2g} "
                  f"({seconds:.0f} s)", flush=True)
    with open(args.out, "w") as f:
        json.dump(result, f)


# ---------------------------------------------------------------- driver: tables

def plateau_cell(steps, budget):
    return "never" if steps is None or math.isinf(steps) else f"{steps:g}"


def by_init(results, key: str, inits: str):
    """``(result, init, records)`` for each backend's result and each init that has ``key`` records."""
    for res in results:
        for init in inits.split(","):
            records = [r for r in res[key] if r["init"] == init]
            if records:
                yield res, init, records


def tables(results, args):
    budget = args.epochs * math.ceil(args.limit_train / args.batch_size)
    lines = [f"Training: limit_train={args.limit_train}, limit_test={args.limit_test}, resize={args.resize}, "
             f"batch_size={args.batch_size}, lr={args.lr}"
             + (f" after {args.warmup_epochs} epochs at lr {args.warmup_lr}" if args.warmup_epochs else "")
             + f", {args.epochs} epochs = {budget} SGD steps per run. "
             f"Plateau = SGD steps before the first epoch whose mean train loss < {LEAVE_LOSS} "
             f"(\"never\": not within {budget} steps); stuck = final train loss > {STUCK_LOSS} and "
             f"test acc <= {STUCK_ACC}.", "",
             "| backend | init | seeds | stuck at end | never left | plateau steps median | min | max "
             "| final test acc median | final test accs |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for res, init, runs in by_init(results, "runs", args.inits):
        steps = [math.inf if r["plateau_steps"] is None else r["plateau_steps"] for r in runs]
        accs = [r["final_test_acc"] for r in runs]
        lines.append(f"| {res['backend']} | {init} | {len(runs)} | {sum(r['stuck'] for r in runs)} "
                     f"| {sum(math.isinf(s) for s in steps)} | {plateau_cell(statistics.median(steps), budget)} "
                     f"| {plateau_cell(min(steps), budget)} | {plateau_cell(max(steps), budget)} "
                     f"| {statistics.median(accs):.3f} | {', '.join(f'{a:.2f}' for a in accs)} |")
    lines += ["", f"At init (no training): {DIAG_BATCH} test images resized to {DIAG_RESIZE}, inference mode, "
              f"mean over seeds {args.diag_seeds or args.seeds}. RMS of each block's output and of the logits; "
              "spread = std of the logits across the 10 classes; zero = fraction of logits exactly 0; "
              "dead = fraction of class units that are 0 for every image; "
              "all dead = seeds whose 10 class units are all dead; loss = cross-entropy (ln 10 = 2.303).", "",
              "| backend | init | block 1 | block 2 | block 3 | block 4 | logits | spread | zero | dead | all dead "
              "| loss |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for res, init, ds in by_init(results, "diagnostics", args.inits):
        mean = lambda key, ds=ds: statistics.mean(d[key] for d in ds)  # noqa: E731
        rms = [statistics.mean(d["block_rms"][i] for d in ds) for i in range(4)]
        lines.append(f"| {res['backend']} | {init} | " + " | ".join(f"{v:.2e}" for v in rms)
                     + f" | {mean('logit_rms'):.2e} | {mean('logit_spread'):.2e} | {mean('zero_logits'):.2f} "
                     f"| {mean('dead_units'):.2f} | {sum(d['dead_units'] == 1 for d in ds)}/{len(ds)} "
                     f"| {mean('loss'):.4f} |")
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(argv)
    if args.backend:
        return worker(args)
    results, timings = [], {}
    passed = [f"--{k.replace('_', '-')}={v}" for k, v in vars(args).items()
              if k not in ("backends", "json", "backend", "out") and v is not None]
    for backend in args.backends.split(","):
        with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
            out = f.name
        start = time.perf_counter()
        subprocess.run([sys.executable, os.path.abspath(__file__), f"--backend={backend}", f"--out={out}",
                        *passed], check=True)
        timings[backend] = time.perf_counter() - start
        with open(out) as f:
            results.append(json.load(f))
        os.unlink(out)
    for res in results:
        res["process_seconds"] = timings[res["backend"]]
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"argv": sys.argv, "settings": {k: v for k, v in vars(args).items()
                                                      if k not in ("backend", "out")},
                       "results": results}, f, indent=1)
    print(tables(results, args))
    print("\nseconds per backend process: " + ", ".join(f"{b} {s:.0f}" for b, s in timings.items()))


if __name__ == "__main__":
    main()
