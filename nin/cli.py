"""The ``nin`` command line: ``python -m nin summary --backend torch``."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import sys
import time
from pathlib import Path

import nin
import nin.resources
from nin import api, data, frameworks, inits, presets, runs, seeds, spec, tables, training, weights, workers
from nin.export import OPSET


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status. Errors are one line on stderr."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except KeyboardInterrupt:  # Ctrl-C while a framework imports, say: no traceback
        print(f"nin {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as err:
        oom = frameworks.out_of_memory(err)
        if not (oom or isinstance(err, (ValueError, ImportError, OSError))):
            raise
        message = frameworks.one_line(err, oom)
        if oom:
            message = f"out of memory ({message}); {_OOM_FIX[args.command]}"
        elif advice := _advice(err, args):
            message = f"{message.rstrip('.')}; {advice}"
        print(f"nin {args.command}: error: {message}", file=sys.stderr)
        return 1


def _advice(err: Exception, args) -> str | None:
    """What to do about the library's error ``err``, in the command line's flags: the library's messages
    carry the facts (the directory, the other process, the value and its limit) and name no flag."""
    if isinstance(err, nin.resources.NotEnoughMemory):
        return _OOM_FIX[args.command]
    if isinstance(err, data.MissingData) and hasattr(args, "data"):
        return "or point --data DIR at them"
    if isinstance(err, runs.RunExists):
        return f"continue it with --resume {_q(err.directory)}, or choose another --out"
    if isinstance(err, runs.NoCheckpoint):
        missing = not (err.directory / runs.CHECKPOINT).is_file()
        return f"start a run with --out {_q(err.directory)}" if missing else "start a new run with --out"
    if isinstance(err, presets.DataChanged):
        return (f"point --data at the run's data, or fork the run onto these: --resume {_q(args.resume)} --out NEW_DIR"
                f" --data {_q(err.directory)}")
    if isinstance(err, weights.DamagedWeights | weights.NonFiniteWeights):
        return ("the run cannot go on from it: start a new run with --out" if args.command == "train"
                else "give other --weights")
    if isinstance(err, api.NoExporter):
        return "export without --via"
    if isinstance(err, runs.WriteFailed):
        then = f"continue with --resume {_q(err.directory)}" if (err.directory / runs.CHECKPOINT).is_file() else "again"
        return f"make room (or fix the permissions), then {then}"
    if isinstance(err, workers.WorkerFailed):
        done = (Path(err.directory) / runs.CHECKPOINT).is_file()
        return f"continue with --resume {_q(err.directory)}" if done else "nothing was saved"
    if isinstance(err, workers.PortInUse):
        return "give --coordinator another port"
    if isinstance(err, runs.InUse):
        return "wait for it to end or stop it, or choose another --out"
    if isinstance(err, runs.RunError):
        return "choose another --out"
    return None


#: what to do when a framework runs out of memory, per command
_OOM_FIX = {"summary": "use a smaller --input-shape or --num-classes", "train": "lower --batch-size or --resize",
            "predict": "lower --batch-size or --resize", "resources": "use a smaller --input-shape"}


def main_exit() -> None:
    """Entry point of the ``nin`` script and of ``python -m nin``."""
    sys.exit(main())


def summary(args: argparse.Namespace) -> int:
    """Print the per-layer table of the backend's model, or one JSON object with ``--json``."""
    spec.check_input_shape(args.input_shape, args.num_classes)
    spec.architecture(args.num_classes, num_1x1=args.num_1x1, head=args.head)
    needed = nin.resources.resources(args.input_shape, args.num_classes, num_1x1=args.num_1x1,
                                     head=args.head)["totals"]["predict_bytes"]
    nin.resources.check_memory(needed, f"a forward pass of --input-shape {','.join(map(str, args.input_shape))}")
    backend = _backend(args.backend)
    net = backend.NiN(num_classes=args.num_classes, in_channels=args.input_shape[1], num_1x1=args.num_1x1,
                    head=args.head)
    layers = backend.summary(net, args.input_shape)
    total = sum(row["params"] for row in layers)
    print(json.dumps({"backend": args.backend, "input_shape": list(args.input_shape), "num_classes": args.num_classes,
                      "num_1x1": args.num_1x1, "head": args.head, "layers": layers, "total_params": total})
          if args.json else tables.summary(layers, nin.BACKENDS[args.backend][2], args.input_shape, args.backend))
    return 0


STOP_GRACE = training.STOP_GRACE  # seconds a run may go on after SIGTERM or Ctrl-C, inside the framework


def train(args: argparse.Namespace) -> int:
    """Train on Fashion-MNIST with a preset's settings (and any given explicitly); write metrics, curves and
    a checkpoint each epoch. ``--resume RUN`` goes on with RUN, ``--resume RUN --out NEW`` forks it."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's start-up logs, as _backend does
    # `kill` and Ctrl-C stop a running epoch after its batch (a second one, or one at start-up: at once); the
    # finished epochs are saved
    handlers = {signum: signal.signal(signum, training.ask_stop) for signum in (signal.SIGTERM, signal.SIGINT)}
    out = config = None
    try:
        config, out, source = _resumed(args) if args.resume is not None else _new(args)
        if config is None:  # a finished run, and nothing asked of it
            return 0
        if args.workers * args.nodes > 1:  # data-parallel: the launcher starts the workers, and ends them
            history = workers.fit(config, out, resume=args.resume is not None, source=source, quiet=args.quiet,
                                  workers=args.workers, nodes=args.nodes, node=args.node_rank,
                                  coordinator=args.coordinator)
        else:
            with training.watchdog(STOP_GRACE, "nin train"):  # if the framework holds on past it: exit, files intact
                history = presets.fit(config, out, resume=args.resume is not None, source=source, quiet=args.quiet)
    except KeyboardInterrupt:
        if out is not None and (Path(out) / runs.CHECKPOINT).is_file():
            print(f"nin train: interrupted; the finished epochs are in {out}: continue with "
                  f"python -m nin train --resume {_q(out)}", file=sys.stderr)
        else:
            print("nin train: interrupted before an epoch finished; nothing was saved", file=sys.stderr)
        return 130
    except training.Diverged as err:
        raise ValueError(_diverged(err, out, config)) from err
    finally:
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
    if not args.quiet:
        print(f"{len(history)} epochs in {out}: {runs.METRICS}, {runs.CURVES}, {runs.CHECKPOINT}")
    return 0


def _new(args: argparse.Namespace) -> tuple[dict, str, None]:
    """A new run's config and directory."""
    if args.backend is None:
        raise ValueError(f"name a backend with --backend ({', '.join(nin.BACKENDS)}), or --resume RUN_DIR")
    config = presets.config(args.backend, args.preset or "book", seed=args.seed, data=args.data,
                            limit_train=args.limit_train, limit_test=args.limit_test,
                            num_1x1=spec.NUM_1X1 if args.num_1x1 is None else args.num_1x1,
                            head=args.head or spec.HEAD, dropout=args.dropout,
                            **{key: getattr(args, key) for key in presets.SETTINGS})
    _check_precision(config)
    if args.nodes > 1 and (args.seed is None or args.out is None):
        raise ValueError(f"--nodes {args.nodes}: give every node the same --seed and --out, so that they train one run")
    out = args.out or os.path.join("runs", f"{args.backend}-{time.strftime('%Y%m%d-%H%M%S')}")
    return config, out, None


def _resumed(args: argparse.Namespace) -> tuple[dict | None, str, str | None]:
    """The config of the run in ``--resume``, with each flag passed applied or refused (:func:`nin.presets.resumed`),
    and where it goes on: there, or in ``--out`` (a fork, which reads the run and writes nothing there)."""
    source = args.resume
    fork = args.out is not None and os.path.realpath(args.out) != os.path.realpath(source)
    given = {key: getattr(args, key) for key in (*presets.RESUME_APPLIES, *presets.FORK_APPLIES, *presets.RUN_KEEPS)
             if getattr(args, key) is not None}
    try:
        config, done = presets.resumed(source, given, fork)
    except presets.SettingKept as err:
        flag = f"--{err.key.replace('_', '-')} {err.value}"
        if err.key in presets.RUN_KEEPS:
            raise ValueError(f"{flag}: {err}; start a new run for another") from err
        raise ValueError(f"{flag}: the run in {source} has {err.key} {err.was!r}, which --resume keeps; to go on "
                         f"with {flag}, fork the run: --resume {_q(source)} --out NEW_DIR {flag}") from err
    except presets.BadRunSettings as err:
        raise ValueError(f"{err}; start a new run with --backend and --out") from err
    if config["epochs"] <= done:
        if "epochs" in given:
            raise ValueError(f"--epochs {config['epochs']}: the run in {source} has finished {_epochs(done)} already; "
                             f"pass more than {done} to train on")
        if given or fork:
            raise ValueError(f"the run in {source} has finished its {_epochs(done)}; pass --epochs {done + 1} or "
                             f"more to train on")
        if not args.quiet:
            print(f"the run in {source} has finished its {_epochs(done)}; pass --epochs {done + 1} or more to train on")
        return None, source, None
    _check_precision(config, None if "precision" in given else source)
    if fork:
        config["fork_of"] = {"run": str(Path(source).resolve()), "epoch": done - 1}
        return config, args.out, source
    return config, source, None


def _epochs(count: int) -> str:
    return f"{count} epoch{'' if count == 1 else 's'}"


def _check_precision(config: dict, run: str | None = None) -> None:
    """The precision is one the backend offers (:func:`nin.presets.check_precision`); ``run``: the directory
    of the resumed run whose precision this is, when --precision was not passed."""
    try:
        presets.check_precision(config)
    except presets.PrecisionNotOffered as err:
        if run is None:
            raise ValueError(f"--precision {err.precision}: {err}; pass --precision float32") from err
        raise ValueError(f"the run in {run} computes in {err.precision}, and {err}; go on in float32 with "
                         "--precision float32") from err


def _diverged(err: training.Diverged, out, config: dict) -> str:
    """The one line for a run whose loss (or weights) stopped being finite."""
    lower = f"{min(config['lr'] / 10, 0.01):g}"
    if out is not None and (Path(out) / runs.CHECKPOINT).is_file():
        kept = (f"the last good checkpoint is kept in {out}: fork it with a lower rate, python -m nin train "
                f"--resume {_q(out)} --out NEW_DIR --lr {lower}, or a warm-up (--warmup 1)")
    else:
        kept = f"nothing was saved; start again with a lower --lr (e.g. {lower}) or a warm-up (--warmup 1)"
    return (f"{err.what} at epoch {err.epoch + 1}, batch {err.batch + 1} (learning rate {err.lr:.3g}): the run "
            f"diverged; {kept}")


ONNXRUNTIME = "onnxruntime"  # predict's runtime for an exported .onnx file (nin.ort), beside the backends


def predict(args: argparse.Namespace) -> int:
    """Test accuracy of a weights file (from any backend's save_weights, or a checkpoint) on Fashion-MNIST's
    test images (the training files are not needed); with ``--backend onnxruntime``, of an exported .onnx file."""
    if args.backend == ONNXRUNTIME:
        from nin import ort

        runtime = ort
        net = ort.load(args.weights)
        model, meta = {key: getattr(net, key) for key in ("num_classes", "in_channels", "num_1x1", "head")}, {}
    else:
        tensors, meta = weights.load(args.weights)
        model, net = weights.model_args(tensors), None
    if (model["num_classes"], model["in_channels"]) != (data.NUM_CLASSES, spec.IN_CHANNELS):
        raise ValueError(f"{args.weights} holds a NiN for {model['num_classes']} classes of "
                         f"{model['in_channels']}-channel images; Fashion-MNIST has {data.NUM_CLASSES} classes of "
                         f"{spec.IN_CHANNELS}-channel images: use weights trained on it")
    resize = args.resize or getattr(net, "size", None) or runs.trained_resize(meta)  # net: an ONNX model's
    if resize is None:
        raise ValueError(f"{args.weights}: its 'config' metadata is not an object of run settings with an integer "
                         "resize; pass --resize")
    spec.check_image_size(resize, resize, model["num_classes"])
    spec.check_positive_int("--batch-size", args.batch_size)
    needed = nin.resources.resources((args.batch_size, spec.IN_CHANNELS, resize, resize), num_1x1=model["num_1x1"],
                                     head=model["head"])["totals"]["predict_bytes"]
    nin.resources.check_memory(needed, f"predicting batches of {args.batch_size} images of {resize}x{resize}")
    images, labels = data.subset(data.load_split("test", args.data), args.limit)
    if args.backend != ONNXRUNTIME:
        runtime = _backend(args.backend)
        net = runtime.NiN(**model)
        runtime.load_weights(net, args.weights)
    test_iter = runtime.loader((images, labels), data.BatchSampler(len(labels), args.batch_size, shuffle=False), resize)
    classes = runtime.predict(net, test_iter)
    accuracy = float((classes == labels).mean())  # the test split is not shuffled: file order
    if args.json:
        print(json.dumps({"backend": args.backend, "weights": args.weights, "resize": resize, "images": len(classes),
                          "accuracy": accuracy, "predictions": classes.tolist()}))
    else:
        print(f"test acc {accuracy:.3f} on {len(classes)} images ({args.backend}, {args.weights}, resize {resize})")
    return 0


def export(args: argparse.Namespace) -> int:
    """Write the ONNX model of a weights file: nin's exporter (the onnx package alone), or a framework's own."""
    from nin import export as onnx_export

    path = onnx_export.export(args.weights, args.out, args.opset, backend=args.via, resize=args.resize)
    via = f", via {args.via}'s own exporter" if args.via else ""
    print(f"wrote {path} (opset {args.opset}{via}); check it with: python -m nin predict --backend {ONNXRUNTIME} "
          f"--weights {_q(path)}{'' if args.resize is None else f' --resize {args.resize}'}")
    return 0


def resources(args: argparse.Namespace) -> int:
    """Print each layer's parameters, MACs, activations and training bytes, with the totals; or one JSON object."""
    found = nin.resources.resources(args.input_shape, args.num_classes, args.batch_size, args.num_1x1, args.head)
    print(json.dumps(found) if args.json else tables.resources(found))
    return 0


def _q(path) -> str:
    return shlex.quote(str(path))  # a path in a command to paste: quoted where the shell needs it


def _backend(name: str):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's start-up logs: stderr is for real errors
    return nin.backend(name)


def _input_shape(text: str) -> tuple[int, int, int, int]:
    try:
        shape = tuple(int(part) for part in text.split(","))
    except ValueError:
        shape = ()
    if len(shape) != 4:
        raise argparse.ArgumentTypeError(f"expected N,C,H,W as four integers, e.g. 1,1,224,224; got {text!r}")
    return shape


def _seed(text: str) -> int:
    try:
        return seeds.check_seed(int(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer from 0 to {seeds.SEED_LIMIT - 1}, "
                                         f"got {text!r}") from None


def _count(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number, 1 or more, got {text!r}")
    return int(text)


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


_DATA_HELP = ("directory of the four IDX files (default: $NIN_DATA, else ~/.cache/nin/fashion-mnist, where missing "
              "files are downloaded from the comma-separated base URLs of $NIN_MIRRORS, else the public mirrors)")


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
    p.add_argument("--preset", choices=list(presets.PRESETS),
                   help="book: d2l.ai's settings (224x224, 10 epochs, lr 0.1, Xavier); cpu: a recipe for a "
                        "small CPU (96x96, 6 epochs, primed init, warm-up and cosine decay, bfloat16 where offered); "
                        "cpu-long: cpu over 18 epochs (exercise 1's tuning). "
                        "The flags below override the preset's values")
    p.add_argument("--epochs", type=int, help="number of epochs in all")
    p.add_argument("--lr", type=float, help="learning rate (the peak, with a warm-up or a cosine schedule)")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--resize", type=int, help="image height and width")
    p.add_argument("--data", metavar="DIR", help=_DATA_HELP)
    p.add_argument("--limit-train", type=int, metavar="N", help="train on the first N images only")
    p.add_argument("--limit-test", type=int, metavar="N", help="test on the first N images only")
    p.add_argument("--seed", type=_seed, help="makes the run repeatable on the CPU (default: a fresh one, saved); "
                                               f"0 to {seeds.SEED_LIMIT - 1}")
    p.add_argument("--init", choices=inits.INITS,
                   help="convolution weights: xavier (the book's), kaiming (leaves the 2.303 plateau sooner) or "
                        "centered (Kaiming with zero-mean filters: far fewer class units start off for every image) "
                        "or primed (centered, and biases that turn each unit on for half of the first batch: none off)")
    p.add_argument("--precision", choices=training.PRECISIONS,
                   help="bfloat16: faster where the hardware has it (PyTorch and Keras); float32: the book's")
    p.add_argument("--schedule", choices=training.SCHEDULES,
                   help="learning rate per step: constant (the book's) or cosine decay to 0")
    p.add_argument("--warmup", type=float, metavar="EPOCHS", help="epochs of linear warm-up from 0 to --lr")
    p.add_argument("--clip", type=float, metavar="NORM",
                   help="scale down a step whose gradient (of the mean loss, all weights together) has a larger "
                        "norm; 0: no clipping (the book's)")
    _add_variant_args(p)
    p.add_argument("--dropout", type=float, metavar="RATE", help="dropout rate (default 0.5, the book's)")
    p.add_argument("--workers", type=_count, default=1, metavar="N",
                   help="data-parallel training on N processes of this machine, on the framework's own engine; "
                        "--batch-size stays the whole batch (docs/distributed.md)")
    p.add_argument("--nodes", type=_count, default=1, metavar="M", help="machines, each running this command")
    p.add_argument("--node-rank", type=int, default=0, metavar="K", help="this machine's rank, 0 to M-1")
    p.add_argument("--coordinator", metavar="HOST:PORT", help="node 0's address, where the engines meet "
                                                              "(default with one node: a free port of 127.0.0.1)")
    p.add_argument("--out", metavar="RUN_DIR", help="where metrics.json, curves.png and the checkpoint go "
                                                    "(held by one run at a time); with --resume: fork the run there")
    p.add_argument("--resume", metavar="RUN_DIR",
                   help="continue this run after its last finished epoch; --backend, --epochs, --data and --precision "
                        "apply, settings that change the experiment are refused unless --out forks the run")
    p.add_argument("--quiet", action="store_true", help="no progress bar and no closing lines")
    p.set_defaults(run=train, num_1x1=None, head=None)  # None: not given (a new run takes the book's)

    p = commands.add_parser("predict", help="test accuracy of a weights file, in any backend (or an .onnx file)")
    p.add_argument("--backend", required=True, choices=[*nin.BACKENDS, ONNXRUNTIME],
                   help=f"{ONNXRUNTIME}: an .onnx file from `nin export`, in ONNX Runtime")
    p.add_argument("--weights", required=True, metavar="FILE",
                   help="from save_weights, or a run's checkpoint; an .onnx file with --backend onnxruntime")
    p.add_argument("--data", metavar="DIR", help=_DATA_HELP)
    p.add_argument("--limit", type=int, metavar="N", help="the first N test images only")
    p.add_argument("--resize", type=int, help="default: the run's, for a checkpoint; else 224")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--json", action="store_true", help="one JSON object, with the predicted classes")
    p.set_defaults(run=predict)

    p = commands.add_parser("export", help="write the ONNX model of a weights file (pip install 'nin[onnx]')")
    p.add_argument("--weights", required=True, metavar="FILE", help="from save_weights, or a run's checkpoint")
    p.add_argument("--out", required=True, metavar="FILE", help="the .onnx file to write")
    p.add_argument("--resize", type=int, help="fix the images' height and width (default: any, from the minimum on)")
    p.add_argument("--opset", type=int, default=OPSET, help=f"ONNX opset (default {OPSET})")
    p.add_argument("--via", choices=list(nin.BACKENDS),
                   help="a framework's own exporter instead of nin's (see docs/frameworks.md: which ones work)")
    p.set_defaults(run=export)

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
