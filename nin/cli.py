"""The ``nin`` command line: ``python -m nin summary --backend torch``."""

from __future__ import annotations

import argparse
import json
import os
import sys

import nin
from nin import spec


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status. Errors are one line on stderr."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, ImportError) as err:
        print(f"nin {args.command}: error: {err}", file=sys.stderr)
        return 1


def main_exit() -> None:
    """Entry point of the ``nin`` script and of ``python -m nin``."""
    sys.exit(main())


def summary(args: argparse.Namespace) -> int:
    """Print the per-layer table of the backend's model, or one JSON object with ``--json``."""
    spec.check_input_shape(args.input_shape, args.num_classes)
    backend = _backend(args.backend)
    net = new_model(backend, num_classes=args.num_classes, in_channels=args.input_shape[1])
    layers = backend.summary(net, args.input_shape)
    total = sum(row["params"] for row in layers)
    if args.json:
        print(json.dumps({"backend": args.backend, "input_shape": list(args.input_shape),
                          "num_classes": args.num_classes, "layers": layers, "total_params": total}))
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


def new_model(backend, num_classes: int = spec.NUM_CLASSES, in_channels: int = spec.IN_CHANNELS):
    """A fresh ``NiN`` of ``backend``, ready to run (Gluon's parameters initialized, as the book does)."""
    net = backend.NiN(num_classes=num_classes, in_channels=in_channels)
    if backend.__name__ == "nin.mxnet":
        net.initialize()
    return net


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
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(run=summary)
    return parser
