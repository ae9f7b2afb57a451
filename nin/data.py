"""Fashion-MNIST from its four IDX files, read with numpy alone.

The files are ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte``, each gzip-compressed
(``.gz``) or raw. :func:`load_fashion_mnist` looks for them in :func:`data_dir`:
the ``root`` argument, else the ``NIN_DATA`` environment variable, else
``$XDG_CACHE_HOME/nin/fashion-mnist`` (default ``~/.cache/nin/fashion-mnist``).

Every file is checked by its IDX header (magic number, counts, 28x28 images,
payload length, labels 0..9). Missing files are downloaded by :mod:`nin.download`.
Every problem with the files raises :class:`DataError`, whose message is one line.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import math
import os
import zlib
from pathlib import Path

import numpy as np

from nin import seeds, spec

#: split -> (images file, labels file), without the ``.gz`` suffix.
FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
NAMES = FILES["train"] + FILES["test"]
IMAGE_SIZE = 28
NUM_CLASSES = 10
#: magic number -> number of dimensions (type 0x08: unsigned byte).
_MAGIC = {0x00000803: 3, 0x00000801: 1}
_FIX = ("delete it to download a fresh copy, or replace it with the original Fashion-MNIST file "
        "(https://github.com/zalandoresearch/fashion-mnist)")
_WHERE = "set NIN_DATA to a directory that holds the four files, or NIN_MIRRORS to base URLs that serve them"

#: One split: images ``(N, 28, 28)`` and labels ``(N,)``, both uint8.
Split = tuple[np.ndarray, np.ndarray]


class DataError(ValueError):
    """A data file is missing, unreadable or malformed, or could not be downloaded."""


class MissingData(DataError):
    """Files that are not in ``directory`` and could not be downloaded there (``names``, without ``.gz``)."""

    def __init__(self, message: str, directory: Path, names: list[str]):
        super().__init__(message)
        self.directory, self.names = directory, names


def data_dir(root: str | os.PathLike | None = None) -> Path:
    """The directory to look in: ``root``, else ``$NIN_DATA``, else the cache directory.

    Raises:
        DataError: if that path is a symbolic link that leads back to itself.
    """
    if root is not None:
        path = Path(root).expanduser()
    elif os.environ.get("NIN_DATA"):
        path = Path(os.environ["NIN_DATA"]).expanduser()
    else:
        path = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "nin" / "fashion-mnist"
    try:
        path.resolve()
    except (RuntimeError, OSError) as err:  # Python 3.11-3.12: RuntimeError("Symlink loop ..."); later: OSError
        raise DataError(f"{path}: a symbolic link that leads back to itself ({err})") from err
    return path


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """One IDX file, gzip-compressed or raw, as uint8 images ``(N, 28, 28)`` or labels ``(N,)``.

    Raises:
        DataError: if the file cannot be read or is not a valid Fashion-MNIST IDX file.
    """
    path = Path(path).resolve()

    def bad(what: str) -> DataError:
        return DataError(f"{path}: {what}; {_FIX}")

    try:
        data = path.read_bytes()
    except OSError as err:
        raise DataError(f"{path}: cannot read it ({err})") from err
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as err:
            raise bad(f"corrupt gzip data ({err})") from err
    if len(data) < 4:
        raise bad(f"{len(data)} bytes is too short for an IDX header")
    magic = int.from_bytes(data[:4], "big")
    if magic not in _MAGIC:
        raise bad(f"magic number 0x{magic:08x} is not 0x00000803 (images) or 0x00000801 (labels)")
    ndim = _MAGIC[magic]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise bad(f"{len(data)} bytes is too short for the {header}-byte IDX header")
    shape = tuple(int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    if shape[0] == 0:
        raise bad("the header says it holds 0 items")
    if ndim == 3 and shape[1:] != (IMAGE_SIZE, IMAGE_SIZE):
        raise bad(f"images are {shape[1]}x{shape[2]}, Fashion-MNIST's are {IMAGE_SIZE}x{IMAGE_SIZE}")
    expected = header + math.prod(shape)
    if len(data) != expected:
        problem = "truncated" if len(data) < expected else "trailing bytes after the data"
        raise bad(f"{problem}: the header ({' x '.join(map(str, shape))}) means {expected} bytes, found {len(data)}")
    array = np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape).copy()
    if ndim == 1 and array.max() >= NUM_CLASSES:
        index = int(np.argmax(array >= NUM_CLASSES))
        raise bad(f"label {array[index]} at index {index} is not a class (0..{NUM_CLASSES - 1})")
    return array


def load_fashion_mnist(root: str | os.PathLike | None = None, download: bool = True) -> tuple[Split, Split]:
    """``((train_images, train_labels), (test_images, test_labels))`` as numpy uint8 arrays.

    Images are ``(N, 28, 28)``, labels ``(N,)`` in 0..9. Missing files are downloaded
    into :func:`data_dir` when ``download`` is true; only the default cache directory is
    created for them: a ``root`` (or ``$NIN_DATA``) that does not exist is refused, not made.

    Raises:
        DataError: if a file is missing (and cannot be downloaded) or is malformed.
    """
    directory = _ready(root, NAMES, download)
    return _pair(directory, "train"), _pair(directory, "test")


def load_split(split: str, root: str | os.PathLike | None = None, download: bool = True) -> Split:
    """One split (``"train"`` or ``"test"``) as :func:`load_fashion_mnist` reads it, from its two files alone."""
    return _pair(_ready(root, FILES[split], download), split)


def locate(root: str | os.PathLike | None = None, download: bool = True) -> Path:
    """The directory of :func:`data_dir` once the four files are there: missing ones are downloaded as
    :func:`load_fashion_mnist` does, and none is read.

    Raises:
        MissingData: if a file is missing and cannot be downloaded.
    """
    return _ready(root, NAMES, download)


def fingerprint(directory: str | os.PathLike) -> str:
    """The SHA-256 of the four files in ``directory`` (as found: gzip or raw), in :data:`NAMES` order: the
    data's identity, which a run records and a resumed run checks."""
    digest = hashlib.sha256()
    for name in NAMES:
        path = _find(Path(directory), name)
        if path is None:
            raise MissingData(f"{name}[.gz] is missing in {Path(directory).resolve()}; {_WHERE}",
                              Path(directory).resolve(), [name])
        digest.update(name.encode())
        with open(path, "rb") as f:
            while chunk := f.read(1 << 22):
                digest.update(chunk)
    return digest.hexdigest()


def source(root: str | os.PathLike | None = None) -> str:
    """Where :func:`data_dir` finds the files: ``"argument"`` (``root``), ``"NIN_DATA"`` or ``"cache"``."""
    return "argument" if root is not None else "NIN_DATA" if os.environ.get("NIN_DATA") else "cache"


def _ready(root, names, download: bool) -> Path:
    """The data directory, once the files ``names`` are there (downloaded if need be)."""
    directory = data_dir(root)
    missing = [name for name in names if _find(directory, name) is None]
    if missing:
        reason = "Downloading is turned off."
        if download and not directory.is_dir() and (root is not None or os.environ.get("NIN_DATA")):
            download, reason = False, ("That is a file, not a directory." if directory.exists() else
                                       "That directory does not exist (only the default cache directory is created).")
        if download:
            try:
                _download(directory, missing)
            except DataError as err:
                reason = f"Downloading them failed: {err}."
            missing = [name for name in names if _find(directory, name) is None]
        if missing:
            where = directory.resolve()
            raise MissingData(f"Fashion-MNIST files missing in {where}: {', '.join(n + '[.gz]' for n in missing)}. "
                              f"{reason} Put the files (gzip or raw) there, or {_WHERE}.", where, missing)
    return directory


def _pair(directory: Path, split: str) -> Split:
    images_name, labels_name = FILES[split]
    images_path, labels_path = _find(directory, images_name), _find(directory, labels_name)
    images, labels = _read(images_path, 3), _read(labels_path, 1)
    if len(images) != len(labels):
        raise DataError(f"{images_path.resolve()} holds {len(images)} images but {labels_path.resolve()} holds "
                        f"{len(labels)} labels; they must pair up: replace them with the original files")
    return images, labels


def _download(directory: Path, names: list[str]) -> None:
    """:func:`nin.download.download`, for :func:`load_fashion_mnist` whose argument ``download`` hides it."""
    from nin.download import download

    download(directory, names)


def _find(directory: Path, name: str) -> Path | None:
    """``name.gz`` or ``name`` in ``directory``, preferring the gzip file; None when neither is there."""
    for candidate in (directory / f"{name}.gz", directory / name):
        if candidate.is_file():
            return candidate
    return None


def _read(path: Path, ndim: int) -> np.ndarray:
    array = read_idx(path)
    if array.ndim != ndim:
        kinds = {3: "images", 1: "labels"}
        raise DataError(f"{path.resolve()}: holds {kinds[array.ndim]}, expected {kinds[ndim]}; {_FIX}")
    return array


def load_splits(root=None, resize: int | None = None, limit_train: int | None = None,
                limit_test: int | None = None, download: bool = True) -> tuple[Split, Split]:
    """What every backend's ``load_data_fashion_mnist`` starts with: the size checked (NiN's minimum),
    the files read (:func:`load_fashion_mnist`) and each split cut to its first ``limit`` examples."""
    if resize is not None:
        spec.check_image_size(resize, resize)
    train, test = load_fashion_mnist(root, download=download)
    return subset(train, limit_train), subset(test, limit_test)


def labels(root=None, split: str = "test") -> np.ndarray:
    """The labels of one split (``"train"`` or ``"test"``), read from its labels file alone."""
    name = FILES[split][1]
    path = _find(data_dir(root), name)
    if path is None:
        where = data_dir(root).resolve()
        raise MissingData(f"{name}[.gz] is missing in {where}; {_WHERE}", where, [name])
    return _read(path, 1)


def subset(split: Split, limit: int | None) -> Split:
    """The first ``limit`` examples of ``split`` (all of them for ``None``)."""
    if limit is None:
        return split
    spec.check_positive_int("a limit on the number of examples", limit)
    return split[0][:limit], split[1][:limit]


class BatchSampler:
    """The index batches of one epoch, shuffled as a function of ``(seed, epoch)`` alone.

    Any epoch can thus be replayed, after a resume too: the trainers call
    :meth:`set_epoch` (as PyTorch's ``DistributedSampler.set_epoch``); a loop that does
    not (``d2l.train_ch6``) still gets a new order every epoch, since each full pass
    moves to the next epoch. The last batch may be smaller, as in the book. In data-parallel training
    (``world``, a :class:`nin.workers.World`), ``batch_size`` is the global batch and each worker gets its
    part of every batch (:meth:`nin.workers.World.part`; a part left empty is skipped).
    """

    def __init__(self, num_examples: int, batch_size: int, shuffle: bool = True, seed: int | None = None,
                 world=None):
        spec.check_positive_int("batch_size", batch_size)
        self.num_examples, self.batch_size, self.shuffle, self.world = num_examples, batch_size, shuffle, world
        self.seed = int(np.random.SeedSequence().entropy % 2**31) if seed is None else seeds.check_seed(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        order = np.arange(self.num_examples)
        if self.shuffle:
            order = np.random.default_rng([self.seed, self.epoch]).permutation(self.num_examples)
        self.epoch += 1
        for start in range(0, self.num_examples, self.batch_size):
            indices = order[start:start + self.batch_size]
            if self.world is not None:
                indices = self.world.part(indices)
            if len(indices):
                yield indices

    def __len__(self) -> int:
        return -(-self.num_examples // self.batch_size)

    def total(self, batch: int) -> int:
        """The examples in batch ``batch`` of an epoch, over all workers."""
        return min(self.batch_size, self.num_examples - batch * self.batch_size)


class Batches:
    """A backend's loader where its framework has none to reuse (JAX, PaddlePaddle): the batches of a split
    in the sampler's order, each ``to_batch(images, labels, resize)`` of the uint8 images and labels it picks."""

    def __init__(self, split: Split, sampler: BatchSampler, resize: int | None, to_batch):
        self.images, self.labels = split
        self.nin_sampler, self.resize, self.to_batch = sampler, resize, to_batch

    def __len__(self) -> int:
        return len(self.nin_sampler)

    def __iter__(self):
        for indices in self.nin_sampler:
            yield self.to_batch(self.images[indices], self.labels[indices], self.resize)


def batch_total(loader, batch: int, X) -> int:
    """The examples of batch ``batch`` of ``loader`` over all workers (of ``X``, for a loader not made by nin)."""
    sampler = getattr(loader, "nin_sampler", None)
    return len(X) if sampler is None else sampler.total(batch)


@contextlib.contextmanager
def whole_batches(loader):
    """Within this block, a worker's ``loader`` gives whole batches, not its part of them."""
    sampler = getattr(loader, "nin_sampler", None)
    world = getattr(sampler, "world", None)
    if world is not None:
        sampler.world = None
    try:
        yield loader
    finally:
        if world is not None:
            sampler.world = world


def set_epoch(loader, epoch: int) -> None:
    """Tell a loader made by a backend's ``load_data_fashion_mnist`` which epoch comes next."""
    sampler = getattr(loader, "nin_sampler", None)
    if sampler is not None:
        sampler.set_epoch(epoch)
