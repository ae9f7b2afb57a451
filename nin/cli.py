"""The ``nin`` command line: ``python -m nin summary --backend torch``."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time

import nin
import nin.resources
from nin import data, presets, spec, training, weights


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status. Errors are one line on stderr."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, ImportError, OSError) as err:
        message = " ".join(line.strip() for line in str(err).splitlines() if line.strip())
        print(f"nin {args.command}: error: {message}", file=sys.stderr)
        return 1


def main_exit() -> None:
    """Entry point of the ``nin`` script and of ``python -m nin``."""
    sys.exit(main())


def summary(args: argparse.Namespace) -> int:
    """Print the per-layer table of the backend's model, or one JSON object with ``--json``."""
    spec.check_input_shape(args.input_shape, args.num_classes)
    spec.architecture(args.num_classes, num_1x1=args.num_1x1, head=args.head)
    backend = _backend(args.backend)
    net = backend.NiN(num_classes=args.num_classes, in_channels=args.input_shape[1], num_1x1=args.num_1x1,
                    head=args.head)
    layers = backend.summary(net, args.input_shape)
    total = sum(row["params"] for row in layers)
    if args.json:
        print(json.dumps({"backend": args.backend, "input_shape": list(args.input_shape),
                          "num_classes": args.num_classes, "num_1x1": args.num_1x1, "head": args.head,
                          "layers": layers, "total_params": total}))
        return 0
    title = nin.BACKENDS[args.backend][2]
    print(f"NiN in {title}, input {'x'.join(map(str, args.input_shape))} "
          f"(shapes as {args.backend} produces them)")
    width = max(len(row["name"]) for row in layers) + 2
    print(f"{'layer':<{width}}{'output shape':<24}{'params':>12}")
    for row in layers:
        shape = "(" + ", ".join(map(str, row["native_shape"])) + ")"
        print(f"{row['name']:<{width}}{shape:<24}{row['params']:>12,}")
    print(f"{'total':<{width}}{'':<24}{total:>12,}")
    return 0


def train(args: argparse.Namespace) -> int:
    """Train on Fashion-MNIST with a preset's settings (and any given explicitly); write metrics, curves and
    a checkpoint each epoch."""
    resume = args.resume is not None
    if resume:
        run = training.Run(args.resume, backend="")
        _, meta = run.load()
        config = meta["config"]  # the preset and every resolved setting, as the run started
        if args.backend is not None:  # the weights are canonical: any backend can go on with them
            config["backend"] = args.backend
        if args.epochs is not None:
            config["epochs"] = args.epochs
        out = args.resume
    else:
        if args.backend is None:
            raise ValueError("name a backend with --backend (mxnet, torch or tf), or --resume RUN_DIR")
        config = presets.config(args.backend, args.preset, seed=args.seed, data=args.data,
                                limit_train=args.limit_train, limit_test=args.limit_test, num_1x1=args.num_1x1,
                                head=args.head, **{key: getattr(args, key) for key in presets.SETTINGS})
        out = args.out or os.path.join("runs", f"{args.backend}-{time.strftime('%Y%m%d-%H%M%S')}")
        if os.path.exists(os.path.join(out, training.CHECKPOINT)):
            raise ValueError(f"{out} already holds a run; continue it with --resume {out}, or choose another --out")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's start-up logs, as _backend does
    signal.signal(signal.SIGTERM, _interrupt)  # `kill` stops like Ctrl-C: the finished epochs are saved
    try:
        history = presets.fit(config, out, resume=resume, quiet=args.quiet)
    except KeyboardInterrupt:
        print(f"nin train: interrupted; the finished epochs are in {out}: continue with "
              f"python -m nin train --resume {out}", file=sys.stderr)
        return 130
    if not args.quiet:
        print(f"{len(history)} epochs in {out}: {training.METRICS}, {training.CURVES}, {training.CHECKPOINT}")
    return 0


def predict(args: argparse.Namespace) -> int:
    """Test accuracy of a weights file (from any backend's save_weights, or a checkpoint) on Fashion-MNIST."""
    tensors, meta = weights.load(args.weights)
    model = weights.model_args(tensors)
    resize = args.resize or meta.get("config", {}).get("resize") or spec.BOOK_RESIZE
    spec.check_image_size(resize, resize, model["num_classes"])
    backend = _backend(args.backend)
    net = backend.NiN(**model)
    backend.load_weights(net, args.weights)
    _, test_iter = backend.load_data_fashion_mnist(args.batch_size, resize, args.data, limit_test=args.limit)
    classes = backend.predict(net, test_iter)
    labels = data.labels(args.data, "test")[: len(classes)]
    accuracy = float((classes == labels).mean())  # the test split is not shuffled: file order
    if args.json:
        print(json.dumps({"backend": args.backend, "weights": args.weights, "resize": resize, "images": len(classes),
                          "accuracy": accuracy, "predictions": classes.tolist()}))
    else:
        print(f"test acc {accuracy:.3f} on {len(classes)} images ({args.backend}, {args.weights}, resize {resize})")
    return 0


def resources(args: argparse.Namespace) -> int:
    """Print each layer's parameters, MACs, activations and training bytes, with the totals; or one JSON object."""
    found = nin.resources.resources(args.input_shape, args.num_classes, args.batch_size, args.num_1x1, args.head)
    if args.json:
        print(json.dumps(found))
        return 0
    layers, totals, memory = found["layers"], found["totals"], found["memory"]
    _, c, h, w = found["input_shape"]
    print(f"NiN resources: images {c}x{h}x{w}, batch {found['batch_size']}, {args.num_classes} classes, "
          f"num_1x1={args.num_1x1}, head {args.head}; float32")
    columns = ("params", "macs", "activations", "train_bytes")
    print(f"{'layer':<17}{'output shape':<22}" + "".join(f"{title:>16}" for title in ("params", "MACs",
                                                                                       "activations", "train bytes")))
    for row in layers:
        shape = "(" + ", ".join(map(str, row["shape"])) + ")"
        print(f"{row['name']:<17}{shape:<22}" + "".join(f"{row[col]:>16,}" for col in columns))
    print(f"{'total':<17}{'':<22}" + "".join(f"{totals[col]:>16,}" for col in columns))
    print(f"FLOPs (2 x MACs): {totals['flops']:,}")
    print(f"prediction memory: {totals['predict_bytes']:,} bytes ({_mib(totals['predict_bytes'])}): weights "
          f"{_mib(memory['weights'])} + image batch {_mib(memory['image_batch'])} + largest operation's input "
          f"and output {_mib(memory['largest_operation'])}")
    print(f"training memory: {totals['train_bytes']:,} bytes ({_mib(totals['train_bytes'])}): weights and "
          f"gradients {_mib(memory['weights'] + memory['gradients'])} + image batch {_mib(memory['image_batch'])} "
          f"+ activations kept for backward {_mib(memory['kept_for_backward'])} (plain SGD: no optimizer state)")
    return 0


def _mib(size: int) -> str:
    return f"{size / 2**20:,.1f} MiB"


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def _backend(name: str):
    # TensorFlow logs its start-up to stderr unless told not to; keep that for real errors.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return nin.backend(name)


def _input_shape(text: str) -> tuple[int, int, int, int]:
    try:
        shape = tuple(int(part) for part in text.split(","))
    except ValueError:
        shape = ()
    if len(shape) != 4:
        raise argparse.ArgumentTypeError(f"expected N,C,H,W as four integers, e.g. 1,1,224,224; got {text!r}")
    return shape


def _add_variant_args(p: argparse.ArgumentParser) -> None:
    """The model variants of the section's exercises 2 and 4."""
    p.add_argument("--num-1x1", type=int, choices=spec.NUM_1X1_CHOICES, default=spec.NUM_1X1,
                   help="1x1 convolutions per block (default 2, the book's)")
    p.add_argument("--head", choices=spec.HEADS, default=spec.HEAD,
                   help="how the last block reduces 384 channels to the classes (default one-step, the book's)")


class _Parser(argparse.ArgumentParser):
    """argparse, with errors as one line on stderr (no usage block): say what is wrong and exit 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="nin", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    p = commands.add_parser("summary", help="per-layer output shapes and parameters")
    p.add_argument("--backend", required=True, choices=list(nin.BACKENDS))
    p.add_argument("--input-shape", type=_input_shape,
                   default=(1, spec.IN_CHANNELS, spec.BOOK_RESIZE, spec.BOOK_RESIZE),
                   help="N,C,H,W, channels first in every backend (default: 1,1,224,224)")
    p.add_argument("--num-classes", type=int, default=spec.NUM_CLASSES)
    _add_variant_args(p)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(run=summary)

    p = commands.add_parser("train", help="train on Fashion-MNIST with a preset (the book's settings by default)")
    p.add_argument("--backend", choices=list(nin.BACKENDS), help="required unless --resume")
    p.add_argument("--preset", choices=list(presets.PRESETS), default="book",
                   help="book: d2l.ai's settings (224x224, 10 epochs, lr 0.1, Xavier); cpu: a recipe for a "
                        "small CPU (96x96, 6 epochs, centered init, warm-up and cosine decay, bfloat16 where offered). "
                        "The flags below override the preset's values")
    p.add_argument("--epochs", type=int, help="number of epochs in all")
    p.add_argument("--lr", type=float, help="learning rate (the peak, with a warm-up or a cosine schedule)")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--resize", type=int, help="image height and width")
    p.add_argument("--data", metavar="DIR", help="directory of the four IDX files (default: $NIN_DATA or the cache)")
    p.add_argument("--limit-train", type=int, metavar="N", help="train on the first N images only")
    p.add_argument("--limit-test", type=int, metavar="N", help="test on the first N images only")
    p.add_argument("--seed", type=int, help="makes the run repeatable on the CPU (default: a fresh one, saved)")
    p.add_argument("--init", choices=training.INITS,
                   help="convolution weights: xavier (the book's), kaiming (leaves the 2.303 plateau sooner) or "
                        "centered (Kaiming with zero-mean filters: far fewer class units start off for every image)")
    p.add_argument("--precision", choices=training.PRECISIONS,
                   help="bfloat16: faster where the hardware has it (PyTorch and Keras); float32: the book's")
    p.add_argument("--schedule", choices=training.SCHEDULES,
                   help="learning rate per step: constant (the book's) or cosine decay to 0")
    p.add_argument("--warmup", type=float, metavar="EPOCHS", help="epochs of linear warm-up from 0 to --lr")
    _add_variant_args(p)
    p.add_argument("--out", metavar="RUN_DIR", help="where metrics.json, curves.png and the checkpoint go")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue this run after its last finished epoch")
    p.add_argument("--quiet", action="store_true", help="no progress bar and no closing lines")
    p.set_defaults(run=train)

    p = commands.add_parser("predict", help="test accuracy of a weights file, in any backend")
    p.add_argument("--backend", required=True, choices=list(nin.BACKENDS))
    p.add_argument("--weights", required=True, metavar="FILE", help="from save_weights, or a run's checkpoint")
    p.add_argument("--data", metavar="DIR", help="directory of the four IDX files (default: $NIN_DATA or the cache)")
    p.add_argument("--limit", type=int, metavar="N", help="the first N test images only")
    p.add_argument("--resize", type=int, help="default: the run's, for a checkpoint; else 224")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--json", action="store_true", help="one JSON object, with the predicted classes")
    p.set_defaults(run=predict)

    p = commands.add_parser("resources", help="parameters, MACs, FLOPs and memory, per layer (no framework)")
    p.add_argument("--input-shape", type=_input_shape,
                   default=(1, spec.IN_CHANNELS, spec.BOOK_RESIZE, spec.BOOK_RESIZE),
                   help="N,C,H,W, channels first (default: 1,1,224,224)")
    p.add_argument("--num-classes", type=int, default=spec.NUM_CLASSES)
    p.add_argument("--batch-size", type=int, help="images per batch (default: N of --input-shape)")
    _add_variant_args(p)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(run=resources)
    return parser
