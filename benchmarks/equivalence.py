"""How far apart the frameworks are when they share one weights file.

    python benchmarks/equivalence.py [--size 224] [--batch 4] [--seed 0]

For each pair of backends: the largest logit difference (relative to the largest logit) on
one batch, each framework loading the same Kaiming-initialized weights; and after one SGD
step (lr 0.1, dropout off) on the same batch, the difference of the updated weights relative
to the weights (norm over the whole model), of the updates relative to the update, and the
worst single tensor (its largest difference relative to its largest update). Needs all the
frameworks in one env.
"""

from __future__ import annotations

import argparse
import itertools
import tempfile
from pathlib import Path

import numpy as np

import nin
from nin import data, weights


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", help="directory of the IDX files (default: $NIN_DATA or the cache)")
    args = parser.parse_args()
    imported = {name: nin.backend(name) for name in nin.import_order(nin.BACKENDS)}
    backends = {name: imported[name] for name in nin.BACKENDS}
    split = data.subset(data.load_split("test", args.data), args.batch)  # the first real test images
    start = Path(tempfile.mkdtemp()) / "start.safetensors"
    source = backends["torch"].NiN()
    backends["torch"].init_weights(source, "kaiming", args.seed)
    backends["torch"].save_weights(source, start)
    w0, _ = weights.load(start)
    logits, stepped = {}, {}
    for name, backend in backends.items():
        batch = backend.loader(split, data.BatchSampler(args.batch, args.batch, shuffle=False), args.size)
        net = backend.NiN(dropout=0)
        backend.load_weights(net, start)
        logits[name] = backend.logits(net, next(iter(batch))[0])
        backend.train(net, batch, batch, 1, 0.1, init=None, seed=args.seed, quiet=True)
        stepped[name] = backend.get_weights(net)
    print(f"{args.batch} real test images of {args.size}x{args.size}, float32, weights: PyTorch's Kaiming init, "
          f"seed {args.seed}\n")
    print("| pair | logits: max diff / max logit | weights after the step: norm diff / norm | "
          "updates: norm diff / norm | worst tensor: max diff / max update |")
    print("| --- | --- | --- | --- | --- |")
    for a, b in itertools.combinations(backends, 2):
        logit = np.abs(logits[a] - logits[b]).max() / np.abs(logits[a]).max()
        diff = _flat({k: stepped[a][k] - stepped[b][k] for k in w0})
        update = _flat({k: stepped[a][k] - w0[k] for k in w0})
        worst = max(np.abs(stepped[a][k] - stepped[b][k]).max() / np.abs(stepped[a][k] - w0[k]).max() for k in w0)
        print(f"| {a} / {b} | {logit:.1e} | {np.linalg.norm(diff) / np.linalg.norm(_flat(stepped[a])):.1e} | "
              f"{np.linalg.norm(diff) / np.linalg.norm(update):.1e} | {worst:.1e} |")


def _flat(tensors: dict) -> np.ndarray:
    return np.concatenate([t.ravel().astype(np.float64) for t in tensors.values()])


if __name__ == "__main__":
    main()
