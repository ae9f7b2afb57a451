"""Exercises 2 and 4: which class units of a trained NiN are dead, per run.

A class unit is one channel of the last block's last ReLU; its logit is that channel averaged over the
image (global average pooling), so a logit of exactly 0 for every test image means the unit never fired:
that class is never predicted from evidence. For each run directory (a finished ``nin train`` run), this
loads the checkpoint into the run's backend and variant, computes the logits of the test images at the
run's size, and counts the units never on and the share of images each unit is on for::

    python benchmarks/units.py RUN_DIR [RUN_DIR ...] --data DIR --json benchmarks/results/units/variants.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from common import machine

import nin
from nin import data, runs, weights


def units(run: Path, root: str | None, limit: int | None) -> dict:
    """The run's variant, its test accuracy here, and its class units: never on, and the least share on."""
    tensors, meta = weights.load(run / runs.CHECKPOINT)
    config = meta["config"]
    backend = nin.backend(config["backend"])
    net = backend.NiN(**weights.model_args(tensors))
    backend.set_weights(net, tensors)
    images, labels = data.subset(data.load_split("test", root), limit)
    loader = backend.loader((images, labels), data.BatchSampler(len(labels), 250, shuffle=False), config["resize"])
    logits = np.concatenate([backend.logits(net, X) for X, _ in loader])
    on = (logits > 0).mean(axis=0)
    return {"run": str(run), "backend": config["backend"], "seed": config["seed"],
            "num_1x1": config.get("num_1x1", 2), "head": config.get("head", "one-step"),
            "epochs": meta["epoch"] + 1, "images": len(labels),
            "test_acc": float((logits.argmax(axis=1) == labels).mean()),
            "units_never_on": int((on == 0).sum()), "least_share_on": float(on.min()),
            "share_on": [round(float(x), 4) for x in on]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path, help="finished run directories")
    parser.add_argument("--data", help="directory of the four IDX files (default: $NIN_DATA or the cache)")
    parser.add_argument("--limit", type=int, help="the first N test images only")
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results/units/units.json"))
    args = parser.parse_args(argv)
    rows = [units(run, args.data, args.limit) for run in args.runs]
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"machine": machine(), "command": " ".join(["python", *sys.argv]),
                                     "rows": rows}, indent=1) + "\n")
    for r in rows:
        print(f"{r['backend']} num_1x1={r['num_1x1']} head={r['head']} seed {r['seed']}: test acc {r['test_acc']:.3f}, "
              f"{r['units_never_on']} of {len(r['share_on'])} class units never on, the least on for "
              f"{100 * r['least_share_on']:.0f}% of the images")
    return 0


if __name__ == "__main__":
    sys.exit(main())
