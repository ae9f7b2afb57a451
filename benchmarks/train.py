"""Training and inference speed of each backend: nin's trainer against the book's loop, and
against what the machine's matrix multiplication can do.

    python benchmarks/train.py [--backends mxnet,torch,tf,jax,paddle] [--images N] [--resize R]
                               [--batch-size B] [--epochs E] [--precision float32|bfloat16]
                               [--matmul-size N] [--json FILE]

One process per framework, one after the other, on the same Fashion-MNIST images. Per backend:

- train_eps: training examples/sec of nin's trainer over its epochs after the first (which pays
  for graph building and kernel selection; --epochs, default 3), whole epoch wall time with data
  loading, test evaluation not included;
- book_train_eps: the same for the book's training loop and data loading (nin/book/
  transcribes them: PyTorch and Gluon as d2l's train_ch6 writes them, Keras's compile and fit;
  d2l's load_data_fashion_mnist over the same images), same model and batch size, in float32,
  the same epochs, in a process of its own that imports the framework first, as the book's
  code does (so MXNet keeps its own thread count: see nin/mxnet.py);
- infer_eps: examples/sec of the backend's predict (second pass);
- gflops_achieved: train_eps x 3 x the forward FLOPs of one image (nin.resources: 2 x MACs; a
  training step costs about three forward passes: forward, and the two products of backward);
- matmul_gflops: the best float32 rate of a 4096x4096 matrix product (--matmul-size) that any of the
  measured frameworks reaches in this run: one number for all, standing for what the hardware can do.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from common import machine  # benchmarks/common

import nin  # imports no framework


def worker(name: str, args) -> dict:
    from nin import book
    from nin.resources import resources

    backend = nin.backend(name)
    train_iter, test_iter = _data(backend, args)
    net = backend.NiN()
    try:
        history = backend.train(net, train_iter, test_iter, args.epochs, 0.05, seed=0, init="kaiming", quiet=True,
                                precision=args.precision)
    except ValueError as err:  # a precision this backend does not offer
        return {"unsupported": str(err), "own_matmul_gflops": book.matmul_gflops(name, args.matmul_size)}
    for _ in range(2):
        start = time.perf_counter()
        classes = backend.predict(net, test_iter)
        infer = time.perf_counter() - start
    flops = resources((1, 1, args.resize, args.resize))["totals"]["flops"]
    train_eps = sum(r["examples_per_sec"] * r["seconds"] for r in history[1:]) / sum(r["seconds"] for r in history[1:])
    return {"train_eps": train_eps, "infer_eps": len(classes) / infer, "gflops_achieved": train_eps * 3 * flops / 1e9,
            "own_matmul_gflops": book.matmul_gflops(name, args.matmul_size), "test_acc": history[-1]["test_acc"]}


def book_worker(name: str, args) -> dict:
    import importlib
    import warnings

    import numpy

    numpy.bool = numpy.bool_  # for MXNet 1.9 beside numpy 1.24-1.26 (see nin/mxnet.py)
    from nin import book, data

    importlib.import_module(nin.BACKENDS[name][0])  # the framework first, on purpose (see below)

    with warnings.catch_warnings():  # nin.mxnet warns that MXNet came first: here, on purpose
        warnings.simplefilter("ignore")
        backend = nin.backend(name)
    images, labels = data.load_splits(args.data, args.resize, args.images, 1)[0]
    reference = book.module(name)
    train_iter = reference.load_data(images, labels, args.batch_size, args.resize)
    seconds = reference.train_ch6(backend.NiN(), train_iter, args.epochs, 0.05)[1:]
    return {"book_train_eps": args.images * len(seconds) / sum(seconds)}


def _data(backend, args):
    return backend.load_data_fashion_mnist(args.batch_size, args.resize, args.data, limit_train=args.images,
                                           limit_test=args.images, seed=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", default=",".join(nin.BACKENDS), help="comma-separated (default: all five)")
    parser.add_argument("--images", type=int, default=512, help="training (and test) images per epoch")
    parser.add_argument("--resize", type=int, default=224)
    parser.add_argument("--epochs", type=int, default=3, help="timed: all but the first")
    parser.add_argument("--batch-size", type=int, default=128, help="the book's 128")
    parser.add_argument("--precision", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--data", help="directory of the IDX files (default: $NIN_DATA or the cache)")
    parser.add_argument("--matmul-size", type=int, default=4096, help="of the square product that stands for the "
                        "hardware (default 4096; smaller sizes reach a lower rate)")
    parser.add_argument("--json", metavar="FILE")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--book", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.epochs < 2:
        parser.error("--epochs must be 2 or more: the first is not timed")
    if args.worker:
        print(json.dumps((book_worker if args.book else worker)(args.worker, args)))
        return
    results, env = {}, {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    for name in args.backends.split(","):
        results[name] = {}
        for book in ([], ["--book"]):
            command = [sys.executable, __file__, "--worker", name, *book, *sys.argv[1:]]
            out = subprocess.run(command, capture_output=True, text=True, env=env)
            if out.returncode != 0:
                sys.exit(f"benchmark of {name} failed:\n{out.stderr[-3000:]}")
            results[name].update(json.loads(out.stdout.strip().splitlines()[-1]))
            if "unsupported" in results[name]:
                break
    matmul = max(r["own_matmul_gflops"] for r in results.values())
    for r in results.values():
        r["matmul_gflops"] = matmul
    print(f"{args.images} images of {args.resize}x{args.resize}, batch {args.batch_size}, {args.precision}; "
          f"float32 {args.matmul_size}x{args.matmul_size} matmul: {matmul:.0f} GFLOP/s; {time.strftime('%Y-%m-%d')}\n")
    print("| backend | nin train ex/s | book loop ex/s | speed-up | GFLOP/s | % of matmul | infer ex/s |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name, r in results.items():
        if "unsupported" in r:
            print(f"| {name} | {args.precision}: not offered | | | | | |")
            continue
        print(f"| {name} | {r['train_eps']:.1f} | {r['book_train_eps']:.1f} | "
              f"{r['train_eps'] / r['book_train_eps']:.2f}x | {r['gflops_achieved']:.0f} | "
              f"{100 * r['gflops_achieved'] / matmul:.0f}% | {r['infer_eps']:.1f} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"settings": vars(args), "machine": machine(), "results": results},
                                              indent=1))


if __name__ == "__main__":
    main()
