"""Named training recipes, and one framework-free way to run them in any backend.

``book`` is d2l.ai's run: 10 epochs of 224x224 images, the book's Xavier init, plain SGD at
lr 0.1 (the lr of the book's MXNet, PyTorch and TensorFlow tabs), batch 128, float32.

``cpu`` is a recipe for a small CPU that keeps the book's model exactly (layers, widths,
kernels, dropout 0.5, the one-step head) and its loss (the mean cross-entropy, by SGD without
momentum or weight decay) and changes only how it is trained (the measurements behind each
choice: ``docs/training.md``):

- ``resize=96``: about 5.4 times fewer pixels than 224 (the third max-pool then leaves a 1x1
  map, as at 67: the last block's 3x3 convolution sees one position);
- ``init="primed"``: Kaiming weights, whose scale keeps the signal (the book's Xavier init
  shrinks it 2.5 to 5 times per block: the loss-2.303 plateau), with every filter after the
  first made zero-mean (:func:`nin.inits.centered`), and every bias set from the first
  training batch so that each unit starts on for half of it (:func:`nin.inits.primed`): no
  class unit of the last ReLU starts off for every image;
- ``lr=0.1`` reached after a one-epoch linear warm-up, then a cosine decay to 0;
- ``clip=5``: a step whose gradient norm is above 5 is scaled down to it (the median norm in the first
  epoch is about 3.5): one spike of 15 switched every class unit of a primed Gluon run off;
- ``epochs=6``, batch 128 (the book's);
- ``precision="bfloat16"`` where the backend offers it (``backend.PRECISIONS``), else float32.

``cpu-long`` is ``cpu`` over 18 epochs (the warm-up and the cosine decay stretched with them), the winner of
the section's exercise 1 (``docs/exercises.md``): the same model reaches 0.929 (mean of 3 seeds, against 0.906),
in about 32 to 35 minutes a run in PyTorch on a 2-core CPU against 11.

From Python::

    from nin import presets
    history = presets.train("torch", "cpu", seed=0, data="../shared/data/fashion-mnist")

From the command line: ``python -m nin train --backend torch --preset cpu --seed 0``.
Explicit settings override the preset's; the run's ``config`` (in ``metrics.json`` and the
checkpoint) records the preset and every resolved setting, and ``--resume`` keeps them (a fork,
``--resume RUN --out NEW``, may change those that change the experiment: ``nin/cli.py``).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import nin
import nin.resources
from nin import data, inits, runs, seeds, spec, training, workers
from nin.data import data_dir

#: the settings a preset fixes
SETTINGS = ("epochs", "lr", "batch_size", "resize", "init", "precision", "schedule", "warmup", "clip")

PRESETS = {
    "book": {"epochs": 10, "lr": 0.1, "batch_size": 128, "resize": spec.BOOK_RESIZE, "init": "xavier",
             "precision": "float32", "schedule": "constant", "warmup": 0, "clip": None},
    "cpu": {"epochs": 6, "lr": 0.1, "batch_size": 128, "resize": 96, "init": "primed",
            "precision": "bfloat16", "schedule": "cosine", "warmup": 1, "clip": 5.0},
}
PRESETS["cpu-long"] = {**PRESETS["cpu"], "epochs": 18}


#: How much of a preset to train: the notebooks' ``NIN_BUDGET`` and the learning test
#: (``tests/test_training.py``) read these. Each names its preset, the training and test images it keeps
#: (``None``: all of them), the settings it changes, and ``runs``: where a full run is kept, relative to
#: the repository root (as ``<runs>/<backend>-<preset>-seed<seed>``, the directories
#: ``benchmarks/accuracy.py`` tabulates), or ``None``.
#:
#: - ``small``: 4,096 training and 1,000 test images at the minimum size (67x67), batch 64, so that
#:   4 epochs make 256 steps, the first 64 of them warm-up: enough to leave the loss-2.303 plateau
#:   (at 96x96 and batch 128, 96 steps stay near it: train loss 2.26 to 2.28);
#: - ``smoke``: 256 and 128 images, 2 epochs: every cell of a notebook runs (CI's ``tox -e all``);
#:   it does not show that the model learns;
#: - ``cpu``: the CPU preset on all of Fashion-MNIST, kept in ``runs/accuracy``;
#: - ``book``: d2l.ai's run.
BUDGETS = {
    "small": {"preset": "cpu", "limit_train": 4096, "limit_test": 1000,
              "settings": {"epochs": 4, "resize": 67, "batch_size": 64, "warmup": 1}, "runs": None},
    "smoke": {"preset": "cpu", "limit_train": 256, "limit_test": 128,
              "settings": {"epochs": 2, "resize": 67, "batch_size": 64, "warmup": 1}, "runs": None},
    "cpu": {"preset": "cpu", "limit_train": None, "limit_test": None, "settings": {}, "runs": "runs/accuracy"},
    "book": {"preset": "book", "limit_train": None, "limit_test": None, "settings": {}, "runs": None},
}


def budget(name: str) -> dict:
    """The budget ``name`` of :data:`BUDGETS` (a copy).

    Raises:
        ValueError: for a name that is not one, listing those that are.
    """
    if name not in BUDGETS:
        raise ValueError(f"unknown budget {name!r}; choose one of {', '.join(BUDGETS)}")
    return {**BUDGETS[name], "settings": dict(BUDGETS[name]["settings"])}


def resolve(preset: str, backend: str, **overrides) -> dict:
    """The settings of ``preset`` for ``backend`` (a name of :data:`nin.BACKENDS`), with ``overrides``.

    An override of ``None`` means "not given". A preset's bfloat16 becomes float32 in a backend
    that does not offer it (its ``PRECISIONS``); an explicit ``precision`` is kept as given, so
    that the backend refuses it with its reason.
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    unknown = set(overrides) - set(SETTINGS)
    if unknown:
        raise ValueError(f"a preset has no setting {', '.join(sorted(unknown))}; settings: {', '.join(SETTINGS)}")
    settings = dict(PRESETS[preset])
    # float32 is in every backend: only another precision imports the backend (and its framework) to ask
    if (overrides.get("precision") is None and settings["precision"] != "float32"
            and settings["precision"] not in nin.backend(backend).PRECISIONS):
        settings["precision"] = "float32"
    settings.update({key: value for key, value in overrides.items() if value is not None})
    return settings


def config(backend: str, preset: str = "book", *, seed: int | None = None, data=None, limit_train: int | None = None,
           limit_test: int | None = None, num_1x1: int = spec.NUM_1X1, head: str = spec.HEAD,
           dropout: float | None = None, **overrides) -> dict:
    """Everything a run needs, as ``metrics.json`` and the checkpoint record it: the backend, the
    preset and its resolved settings, the data (an absolute path, so that the run can be resumed from
    anywhere), the seed (a fresh one if ``None``), the variant and the dropout rate (None: the book's 0.5)."""
    return {"backend": backend, "preset": preset, **resolve(preset, backend, **overrides),
            "data": None if data is None else str(data_dir(data).resolve()), "limit_train": limit_train,
            "limit_test": limit_test, "seed": seeds.new_seed() if seed is None else seeds.check_seed(seed),
            "num_1x1": num_1x1, "head": head, "dropout": spec.DROPOUT if dropout is None else dropout}


def check(config: dict, memory: bool = True) -> None:
    """Every setting of ``config`` (from :func:`config`, or a checkpoint's), checked before anything is
    imported or written, and with ``memory`` what a training batch needs (:mod:`nin.resources`) against
    what is free.

    Raises:
        ValueError: for the first setting that is not one, naming it.
    """
    if config["data"] is not None and not isinstance(config["data"], str):
        raise ValueError(f"data must be a directory's path, got {config['data']!r}")
    spec.check_model(dropout=config.get("dropout", spec.DROPOUT), num_1x1=config.get("num_1x1", spec.NUM_1X1),
                     head=config.get("head", spec.HEAD))
    training.check_budget(config["epochs"], config["lr"])
    training.check_schedule(config.get("schedule", "constant"), config.get("warmup", 0))
    training.check_clip(config.get("clip"))
    inits.check_init(config["init"])
    training.check_precision(config.get("precision", "float32"))
    seeds.check_seed(config["seed"])
    spec.check_positive_int("batch_size", config["batch_size"])
    spec.check_image_size(config["resize"], config["resize"])
    for key in ("limit_train", "limit_test"):
        if config[key] is not None:
            spec.check_positive_int(key, config[key])
    if not memory:
        return
    size, batch = config["resize"], config["batch_size"]
    needed = nin.resources.resources((batch, spec.IN_CHANNELS, size, size), num_1x1=config.get("num_1x1", spec.NUM_1X1),
                                     head=config.get("head", spec.HEAD))["totals"]["train_bytes"]
    nin.resources.check_memory(needed, f"training on batches of {batch} images of {size}x{size}")


def fit(config: dict, out, *, resume: bool = False, source=None, quiet: bool = False, world=None) -> list[dict]:
    """Train the run that ``config`` (from :func:`config`) describes into the directory ``out``
    (checkpoint, ``metrics.json``, ``curves.png`` after each epoch); ``resume=True`` goes on from the
    checkpoint of ``source`` (default ``out``; another directory forks that run into ``out``).
    The settings are checked first (:func:`check`), then ``out`` is held (:func:`nin.runs.claim`)
    until the run ends: by this process, or by the launcher of the data-parallel worker this is (``world``,
    a :class:`nin.workers.World`). Returns one record per epoch."""
    check(config)
    world = world or workers.ONE
    config.pop("workers", None)  # recorded as the run last started: a resumed run may have more, or fewer
    if world.size > 1:
        config["workers"] = world.size
    with runs.claim(out) if world.size == 1 else contextlib.nullcontext():
        run = runs.Run(out, config["backend"], config, source=source)
        if (not resume or run.source != run.directory) and run.checkpoint.exists():
            raise runs.RunExists(f"{out} already holds a run", Path(out))
        _check_data(config, resume and run.source == run.directory)
        backend = nin.backend(config["backend"])
        train_iter, test_iter = backend.load_data_fashion_mnist(
            config["batch_size"], config["resize"], config["data"], limit_train=config["limit_train"],
            limit_test=config["limit_test"], seed=config["seed"], world=world)
        net = backend.NiN(num_1x1=config.get("num_1x1", spec.NUM_1X1), head=config.get("head", spec.HEAD),
                          dropout=config.get("dropout", spec.DROPOUT))
        return backend.train(net, train_iter, test_iter, config["epochs"], config["lr"], seed=config["seed"],
                             init=config["init"], run=run, resume=resume, quiet=quiet,
                             precision=config.get("precision", "float32"),
                             schedule=config.get("schedule", "constant"), warmup=config.get("warmup", 0),
                             clip=config.get("clip"), world=world)


class DataChanged(ValueError):
    """A resumed run's data (in ``directory``) are not the data it trained on: their SHA-256 differs."""

    def __init__(self, message: str, directory: Path):
        super().__init__(message)
        self.directory = directory


def _check_data(config: dict, resumed: bool) -> None:
    """Record in ``config`` where the data are (``data_dir``), where that came from (``data_from``: the ``data``
    setting, ``NIN_DATA`` or the cache) and their identity (``data_sha256``, :func:`nin.data.fingerprint`); a
    resumed run whose data are not those it recorded is refused with :class:`DataChanged` (a fork may change them).
    A limit larger than its split is recorded as the split's size: what the run uses."""
    directory = data.locate(config["data"])
    found = data.fingerprint(directory)
    if resumed and config.get("data_sha256") not in (None, found):
        raise DataChanged(f"the data in {directory.resolve()} are not those the run trained on (their SHA-256 "
                          f"differs from the one it recorded, from {config.get('data_dir')})", directory.resolve())
    config.update(data_dir=str(directory.resolve()), data_from=data.source(config["data"]), data_sha256=found)
    for key, split in (("limit_train", "train"), ("limit_test", "test")):  # a limit past the data: all, as used
        if config[key] is not None and config[key] > (size := len(data.labels(directory, split))):
            config[key] = size


def train(backend: str, preset: str = "cpu", *, out=None, quiet: bool = False, **settings) -> list[dict]:
    """Train a new NiN in ``backend`` with ``preset`` on Fashion-MNIST; ``settings`` are those of
    :func:`config` (``seed``, ``data``, ``epochs``, ``lr``, ...). The run goes to ``out``
    (default ``runs/<backend>-<preset>-<seed>``). Returns one record per epoch."""
    run_config = config(backend, preset, **settings)
    out = out or os.path.join("runs", f"{backend}-{preset}-{run_config['seed']}")
    return fit(run_config, out, quiet=quiet)


#: on resume, what happens to each setting given: these apply to the run as it goes on...
RESUME_APPLIES = ("backend", "epochs", "data", "precision")
#: ...these would change the experiment: refused, unless the run is forked (it goes on in another directory)...
FORK_APPLIES = ("preset", "lr", "batch_size", "resize", "schedule", "warmup", "clip", "limit_train", "limit_test",
                "dropout")
#: ...and these are the checkpoint's (its model, its weights' init, its random draws): always refused
RUN_KEEPS = ("seed", "init", "num_1x1", "head")


class SettingKept(ValueError):
    """A setting ``key`` given as ``value`` for a resumed run, which keeps what it ``was``: the run's own
    (:data:`RUN_KEEPS`), or, unless the run is forked, one that would change the experiment."""

    def __init__(self, message: str, key: str, value, was):
        super().__init__(message)
        self.key, self.value, self.was = key, value, was


class BadRunSettings(ValueError):
    """A checkpoint whose run settings cannot be read."""


class PrecisionNotOffered(ValueError):
    """A ``precision`` that the ``backend`` does not offer (``offered``: the ones it does)."""

    def __init__(self, precision: str, backend: str, offered: tuple[str, ...]):
        super().__init__(f"the {backend} backend computes in {' or '.join(offered)} only")
        self.precision, self.backend, self.offered = precision, backend, offered


def check_precision(config: dict) -> None:
    """Refuse a precision the config's backend does not offer (the backend is imported only for one other than
    float32, which every backend offers)."""
    precision, name = config["precision"], config["backend"]
    if precision != "float32" and precision not in (offered := nin.backend(name).PRECISIONS):
        raise PrecisionNotOffered(precision, name, offered)


def run_settings(meta: dict, source) -> dict:
    """A run's settings, from its checkpoint's ``config`` metadata ``meta``, checked (``source``: its directory)."""
    config = meta.get("config")
    needed = ("backend", "preset", "epochs", "lr", "batch_size", "resize", "init", "data", "limit_train",
              "limit_test", "seed")
    try:
        if not isinstance(config, dict) or not all(key in config for key in needed):
            raise ValueError(f"'config' is {type(config).__name__}, not an object of the run's settings")
        config = dict(config)
        # what runs from before these settings trained with
        for key, value in {"precision": "float32", "schedule": "constant", "warmup": 0, "clip": None,
                           "num_1x1": spec.NUM_1X1, "head": spec.HEAD, "dropout": spec.DROPOUT}.items():
            config.setdefault(key, value)
        if config["backend"] not in nin.BACKENDS or config["preset"] not in PRESETS:
            raise ValueError(f"backend {config['backend']!r}, preset {config['preset']!r}")
        check(config, memory=False)  # the memory is checked for the settings it goes on with
    except (TypeError, ValueError) as err:
        raise BadRunSettings(f"{Path(source) / runs.CHECKPOINT}: its run settings cannot be read ({err})") from err
    return config


def resumed(source, given: dict, fork: bool = False) -> tuple[dict, int]:
    """The settings of the run in ``source`` as it goes on, with the settings ``given`` applied, and the number of
    epochs it has finished. Its data: ``given["data"]``, else the run's own, else ``$NIN_DATA``, else the
    directory the run recorded. Settings of :data:`RESUME_APPLIES` apply; those of :data:`FORK_APPLIES` only to a
    ``fork`` (the run going on in another directory); those of :data:`RUN_KEEPS` never: a setting that cannot
    apply and differs from the run's raises :class:`SettingKept`."""
    _, meta = runs.Run(source, backend="").load()
    config = run_settings(meta, source)
    given = dict(given)
    if "data" not in given and not (config["data"] and Path(config["data"]).is_dir()):
        # the run's own --data is gone, or it had none: $NIN_DATA applies as --data does, else the
        # directory the run recorded (the data are checked against their fingerprint: fit)
        if os.environ.get("NIN_DATA"):
            given["data"] = os.environ["NIN_DATA"]
        elif config["data"] is None and config.get("data_dir") and Path(config["data_dir"]).is_dir():
            given["data"] = config["data_dir"]
    if "data" in given:
        given["data"] = str(data.data_dir(given["data"]).resolve())
    for key, value in given.items():
        if key in RESUME_APPLIES or value == config.get(key):
            continue
        if key in RUN_KEEPS:
            raise SettingKept(f"the run in {source} has {key} {config.get(key)!r}, which a resumed or forked run keeps "
                              f"(its model and draws come from the checkpoint)", key, value, config.get(key))
        if not fork:
            raise SettingKept(f"the run in {source} has {key} {config.get(key)!r}, which a resumed run keeps unless it "
                              f"is forked", key, value, config.get(key))
    if given.get("preset", config["preset"]) != config["preset"]:  # a fork to another preset: its settings
        settings = resolve(given["preset"], given.get("backend", config["backend"]),
                           **{key: given.get(key) for key in SETTINGS if key != "init"})
        config.update(settings, init=config["init"])  # the weights' init stays the checkpoint's
    config.update(given)
    return config, meta["epoch"] + 1
