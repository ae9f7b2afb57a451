"""Downloading Fashion-MNIST's four files into the cache (:func:`nin.data.data_dir`), from the public mirrors or
those ``$NIN_MIRRORS`` names (:func:`default_mirrors`). Only downloaded bytes are checked against the official MD5
sums, and a file appears under its final name only once its checksum is right: a failed download leaves no file.

The download is a few lines of the standard library rather than pooch: pooch would replace only the
fetch-and-check of one URL (about ten lines), while the mirror list and its per-mirror report, and the directory
rules (``NIN_DATA``, the XDG cache), stay ours either way; it would add requests, platformdirs and packaging to
every install.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import tempfile
import urllib.parse
import urllib.request
from pathlib import Path

from nin.data import _WHERE, NAMES, DataError

#: Public copies of the files, tried in order unless ``$NIN_MIRRORS`` names others; a file's URL is
#: mirror + name + ".gz".
MIRRORS = (
    "https://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    "https://storage.googleapis.com/tensorflow/tf-keras-datasets/",
)
#: MD5 of the official ``.gz`` files, checked on download only.
MD5 = {
    "train-images-idx3-ubyte": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte": "bb300cfdad3c16e7a12a480ee83cd310",
}

def default_mirrors() -> tuple[str, ...]:
    """The base URLs to download from, in order: those of ``$NIN_MIRRORS`` (comma-separated), else :data:`MIRRORS`.

    ``NIN_MIRRORS`` replaces the public mirrors, as pip's ``--index-url`` replaces its default index: for a
    proxy, a cluster's internal mirror, or a public mirror that cannot be reached.

    Raises:
        DataError: if one of its entries is not an http(s) or file URL.
    """
    value = os.environ.get("NIN_MIRRORS", "")
    urls = [url.strip() for url in value.split(",") if url.strip()]
    for url in urls:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https", "file") or not (parts.netloc or parts.scheme == "file"):
            raise DataError(f"NIN_MIRRORS={value!r}: {url!r} is not an http(s) URL; give base URLs separated by "
                            "commas, such as https://example.org/fashion-mnist/")
    return tuple(url if url.endswith("/") else url + "/" for url in urls) or MIRRORS


def download(directory: str | os.PathLike, names=None, mirrors=None, timeout: float = 30) -> list[Path]:
    """Download the ``.gz`` files ``names`` (default: all four) into ``directory``.

    Each file is fetched from the first of ``mirrors`` (default: :func:`default_mirrors`) that serves
    it with the official MD5 sum, written to a temporary file, checked, then renamed to its
    final name: a failed download leaves no file behind.

    Returns:
        The paths of the downloaded files.

    Raises:
        DataError: for an unknown name, or a file no mirror served correctly (each mirror's error, on one line).
    """
    directory = Path(directory)
    urls = default_mirrors() if mirrors is None else tuple(mirrors)
    names = [name.removesuffix(".gz") for name in (NAMES if names is None else names)]
    unknown = [name for name in names if name not in MD5]
    if unknown:
        raise DataError(f"unknown Fashion-MNIST file(s) {', '.join(unknown)}; known: {', '.join(NAMES)}")
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DataError(f"{directory}: cannot create the data directory ({err}); {_WHERE}") from err
    paths = []
    for name in names:
        final, errors = directory / f"{name}.gz", []
        for mirror in urls:
            url = f"{mirror}{name}.gz"
            try:
                _fetch(url, final, MD5[name], timeout)
                break
            except (OSError, ValueError, http.client.HTTPException) as err:
                errors.append(f"{url}: {_reason(err)}")
        else:
            raise DataError(f"could not download {final.name} into {directory.resolve()} ({'; '.join(errors)})")
        paths.append(final)
    return paths


def _fetch(url: str, final: Path, md5: str, timeout: float) -> None:
    """Stream ``url`` into a temporary file next to ``final``, check its MD5, then rename it."""
    tmp = tempfile.NamedTemporaryFile(dir=final.parent, prefix=f".{final.name}.", suffix=".part", delete=False)
    try:
        digest, size = hashlib.md5(usedforsecurity=False), 0
        with tmp, urllib.request.urlopen(url, timeout=timeout) as response:
            while chunk := response.read(1 << 20):
                digest.update(chunk)
                tmp.write(chunk)
                size += len(chunk)
            unread = getattr(response, "length", None)  # http.client ends a short body quietly: its length says so
        if unread:
            raise DataError(f"truncated: {size} bytes read, {unread} more expected")
        if digest.hexdigest() != md5:
            with open(tmp.name, "rb") as f:
                start = f.read(16)
            what = "" if start.startswith(b"\x1f\x8b") else f", and not a gzip file (it starts with {start!r})"
            raise DataError(f"MD5 {digest.hexdigest()} is not the official {md5}{what}")
        os.replace(tmp.name, final)
    finally:
        if os.path.exists(tmp.name):
            os.unlink(tmp.name)


def _reason(err: Exception) -> str:
    """What went wrong with one URL, on one line (the OS error behind a URLError, an incomplete read's counts)."""
    reason = getattr(err, "reason", None)
    if isinstance(err, http.client.IncompleteRead):
        text = f"truncated: {len(err.partial)} bytes read, {err.expected} more expected"
    elif isinstance(err, http.client.RemoteDisconnected):
        text = f"no answer ({err})"
    elif isinstance(reason, BaseException):
        text = str(reason)
    else:
        text = str(err) or type(err).__name__
    return " ".join(text.split())


