"""Inference speed in float32: each backend's own ``predict`` beside ONNX Runtime on the exported model.

    python benchmarks/inference.py [--backends mxnet,torch,tf,jax,paddle] [--resize 224] [--images 256]
                                   [--matmul-size 4096] [--json FILE]

The same weights (the first backend's Kaiming init, seed 0) everywhere, the same real test images; one process
per backend (and one for ONNX Runtime), one after the other. Per runtime and batch size (1 and 128):
examples/s of a second pass over the images (the first builds graphs and picks kernels), the
GFLOP/s that makes (examples/s x the forward FLOPs of one image, nin.resources), and that rate
against the best float32 4096x4096 matrix product (--matmul-size) the frameworks reach in this run.
Writes a markdown table (stdout) and, with --json, every number.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import machine  # benchmarks/common

import nin  # imports no framework

BATCHES = (1, 128)


def timed(predict, loader) -> float:
    """Examples/s of the second of two passes of ``predict`` over ``loader``."""
    for _ in range(2):
        start = time.perf_counter()
        n = len(predict(loader))
        seconds = time.perf_counter() - start
    return n / seconds


def worker(name: str, args) -> dict:
    from nin import book, ort

    runtime = ort if name == "onnxruntime" else nin.backend(name)
    net = ort.load(args.onnx) if runtime is ort else runtime.NiN()
    if runtime is not ort:
        runtime.load_weights(net, args.weights)
    result = {}
    for batch in BATCHES:
        images = args.images if batch > 1 else max(args.images // 16, 8)
        _, test_iter = runtime.load_data_fashion_mnist(batch, args.resize, args.data, limit_train=1, limit_test=images)
        result[f"batch{batch}_eps"] = timed(lambda loader: runtime.predict(net, loader), test_iter)
    if runtime is not ort:
        result["own_matmul_gflops"] = book.matmul_gflops(name, args.matmul_size)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", default=",".join(nin.BACKENDS), help="comma-separated (default: all five)")
    parser.add_argument("--resize", type=int, default=224)
    parser.add_argument("--images", type=int, default=256, help="test images at batch 128 (1/16 of them at batch 1)")
    parser.add_argument("--data", help="directory of the IDX files (default: $NIN_DATA or the cache)")
    parser.add_argument("--matmul-size", type=int, default=4096, help="of the square product that stands for the "
                        "hardware (default 4096; smaller sizes reach a lower rate)")
    parser.add_argument("--json", metavar="FILE")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--weights", help=argparse.SUPPRESS)
    parser.add_argument("--onnx", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args)))
        return
    from nin import export
    from nin.resources import resources

    folder = Path(tempfile.mkdtemp())
    source = nin.backend(args.backends.split(",")[0])
    net = source.NiN()
    source.init_weights(net, "kaiming", 0)
    source.save_weights(net, folder / "w.safetensors")
    export.export(folder / "w.safetensors", folder / "nin.onnx")
    results, env = {}, {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    for name in [*args.backends.split(","), "onnxruntime"]:
        command = [sys.executable, __file__, "--worker", name, "--weights", str(folder / "w.safetensors"),
                   "--onnx", str(folder / "nin.onnx"), *sys.argv[1:]]
        out = subprocess.run(command, capture_output=True, text=True, env=env)
        if out.returncode != 0:
            sys.exit(f"benchmark of {name} failed:\n{out.stderr[-3000:]}")
        results[name] = json.loads(out.stdout.strip().splitlines()[-1])
    matmul = max(r.get("own_matmul_gflops", 0) for r in results.values())
    flops = resources((1, 1, args.resize, args.resize))["totals"]["flops"]
    n = args.matmul_size
    print(f"float32, {args.resize}x{args.resize}; float32 {n}x{n} matmul: {matmul:.0f} GFLOP/s; "
          f"{time.strftime('%Y-%m-%d')}\n")
    print("| runtime | batch 1: ex/s | GFLOP/s | % of matmul | batch 128: ex/s | GFLOP/s | % of matmul |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name, r in results.items():
        cells = []
        for batch in BATCHES:
            eps = r[f"batch{batch}_eps"]
            cells += [f"{eps:.1f}", f"{eps * flops / 1e9:.0f}", f"{100 * eps * flops / 1e9 / matmul:.0f}%"]
        print(f"| {name} | " + " | ".join(cells) + " |")
    if args.json:
        Path(args.json).write_text(json.dumps({"settings": vars(args), "machine": machine(), "matmul_gflops": matmul,
                                               "flops_per_image": flops, "results": results}, indent=1) + "\n")


if __name__ == "__main__":
    main()
