"""nin.download: Fashion-MNIST's files downloaded as a user's machine does. First through a fake
``urllib.request.urlopen`` (atomic landing, fallbacks, broken connections, offline); then from mirrors named by
``NIN_MIRRORS`` on a real HTTP server on loopback (127.0.0.1, a free port), serving small IDX files whose MD5 sums
the tests supply, a wrong file, a truncated file, an HTML error page, a 404 and a connection closed without an
answer.

No test touches the network, the user's ``NIN_DATA`` or the user's cache (``XDG_CACHE_HOME`` is in ``tmp_path``).
"""

from __future__ import annotations

import gzip
import hashlib
import http.server
import io
import os
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from fakedata import check_loaded, idx, images, labels, make_set
from nin import cli, data, download

M1, M2 = "https://mirror-one.invalid/", "https://mirror-two.invalid/"


@pytest.fixture(autouse=True)
def no_user_data(monkeypatch, tmp_path):
    """Neither the user's ``NIN_DATA`` nor the user's cache."""
    monkeypatch.delenv("NIN_DATA", raising=False)
    monkeypatch.delenv("NIN_MIRRORS", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))


class Response(io.BytesIO):
    """What the fake ``urlopen`` serves; records whether the final file existed while it was read."""

    def __init__(self, payload: bytes, final: Path, fail_after: int | None = None):
        super().__init__(payload)
        self.final, self.fail_after, self.final_seen = final, fail_after, []

    def read(self, size=-1):
        self.final_seen.append(self.final.exists())
        if self.fail_after is not None and self.tell() >= self.fail_after:
            raise ConnectionResetError("connection reset by peer")
        return super().read(min(size, 100) if size > 0 else size)


@pytest.fixture
def serve(monkeypatch):
    """Install a fake ``urlopen`` serving ``{url: bytes | exception | Response}``; returns the calls."""
    calls = []

    def install(table: dict):
        def urlopen(url, timeout=None):
            calls.append((url, timeout))
            if url not in table:
                raise urllib.error.HTTPError(url, 404, "Not Found", None, None)
            item = table[url]
            if isinstance(item, Exception):
                raise item
            return item if isinstance(item, Response) else io.BytesIO(item)

        monkeypatch.setattr(urllib.request, "urlopen", urlopen)
        return calls

    return install


def checksums(monkeypatch, payloads: dict) -> None:
    for name, payload in payloads.items():
        monkeypatch.setitem(download.MD5, name, hashlib.md5(payload).hexdigest())


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".part") or p.name.startswith("."))


def test_download_lands_atomically(tmp_path, monkeypatch, serve):
    name = "train-images-idx3-ubyte"
    payload = gzip.compress(idx(images(3)))
    checksums(monkeypatch, {name: payload})
    final = tmp_path / "new" / f"{name}.gz"
    response = Response(payload, final)
    calls = serve({f"{M1}{name}.gz": response})
    assert download.download(tmp_path / "new", [name], mirrors=(M1, M2), timeout=7) == [final]
    assert calls == [(f"{M1}{name}.gz", 7)]
    assert len(response.final_seen) > 5 and not any(response.final_seen)  # streamed; no final file meanwhile
    assert final.read_bytes() == payload
    assert sorted(p.name for p in final.parent.iterdir()) == [final.name]
    np.testing.assert_array_equal(data.read_idx(final), images(3))


def test_load_downloads_only_missing_files(tmp_path, monkeypatch, serve):
    arrays = make_set(tmp_path, gz=False)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    payload = gzip.compress(idx(arrays["t10k-labels-idx1-ubyte"]))
    checksums(monkeypatch, {"t10k-labels-idx1-ubyte": payload})
    calls = serve({f"{download.MIRRORS[0]}t10k-labels-idx1-ubyte.gz": payload})
    check_loaded(data.load_fashion_mnist(tmp_path), arrays)
    assert calls == [(f"{download.MIRRORS[0]}t10k-labels-idx1-ubyte.gz", 30)]
    assert (tmp_path / "t10k-labels-idx1-ubyte.gz").read_bytes() == payload


def test_mirrors_are_the_public_ones():
    assert download.MIRRORS == ("https://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
                            "https://storage.googleapis.com/tensorflow/tf-keras-datasets/")
    assert download.MD5["train-images-idx3-ubyte"] == "8d4fb7e6c68d591d4c3dfef9ec88bf0d"
    assert sorted(download.MD5) == sorted(data.NAMES)


def test_bad_checksum_falls_back_to_second_mirror(tmp_path, monkeypatch, serve):
    name = "t10k-images-idx3-ubyte"
    good = gzip.compress(idx(images(3)))
    checksums(monkeypatch, {name: good})
    calls = serve({f"{M1}{name}.gz": gzip.compress(idx(images(3, seed=9))), f"{M2}{name}.gz": good})
    download.download(tmp_path, [f"{name}.gz"], mirrors=(M1, M2))
    assert [url for url, _ in calls] == [f"{M1}{name}.gz", f"{M2}{name}.gz"]
    assert (tmp_path / f"{name}.gz").read_bytes() == good
    assert leftovers(tmp_path) == []


def test_broken_connection_falls_back_to_second_mirror(tmp_path, monkeypatch, serve):
    name = "t10k-images-idx3-ubyte"
    good = gzip.compress(idx(images(3)))
    checksums(monkeypatch, {name: good})
    final = tmp_path / f"{name}.gz"
    serve({f"{M1}{name}.gz": Response(good, final, fail_after=300), f"{M2}{name}.gz": good})
    download.download(tmp_path, [name], mirrors=(M1, M2))
    assert final.read_bytes() == good and leftovers(tmp_path) == []


def test_all_mirrors_bad_leaves_nothing(tmp_path, monkeypatch, serve):
    name = "train-images-idx3-ubyte"
    checksums(monkeypatch, {name: b"the real bytes"})
    serve({f"{M1}{name}.gz": b"wrong bytes", f"{M2}{name}.gz": b"other wrong bytes"})
    with pytest.raises(data.DataError) as err:
        download.download(tmp_path, [name], mirrors=(M1, M2))
    message = str(err.value)
    assert f"could not download {name}.gz into {tmp_path.resolve()}" in message
    assert f"{M1}{name}.gz: MD5 {hashlib.md5(b'wrong bytes').hexdigest()} is not the official" in message
    assert f"{M2}{name}.gz: MD5 {hashlib.md5(b'other wrong bytes').hexdigest()} is not the official" in message
    assert list(tmp_path.iterdir()) == []


def test_offline_fails_fast(tmp_path, serve):
    make_set(tmp_path)
    (tmp_path / "train-images-idx3-ubyte.gz").unlink()
    calls = serve({url: urllib.error.URLError("[Errno -3] Temporary failure in name resolution")
                   for url in (f"{m}train-images-idx3-ubyte.gz" for m in download.MIRRORS)})
    start = time.monotonic()
    with pytest.raises(data.DataError) as err:
        data.load_fashion_mnist(tmp_path)
    assert time.monotonic() - start < 1
    message = str(err.value)
    assert f"missing in {tmp_path.resolve()}: train-images-idx3-ubyte[.gz]. " in message and "\n" not in message
    assert "Downloading them failed: could not download" in message
    assert "NIN_DATA" in message and "NIN_MIRRORS" in message and "--" not in message
    assert message.count("Temporary failure in name resolution") == 2
    assert [url for url, _ in calls] == [f"{m}train-images-idx3-ubyte.gz" for m in download.MIRRORS]
    assert sorted(os.listdir(tmp_path)) == sorted(f"{n}.gz" for n in data.NAMES if n != "train-images-idx3-ubyte")


def test_download_refuses_unknown_names(tmp_path):
    with pytest.raises(data.DataError, match="unknown Fashion-MNIST file.*cifar"):
        download.download(tmp_path, ["cifar"])



SMALL = {"train-images-idx3-ubyte": images(6), "train-labels-idx1-ubyte": labels(6),
         "t10k-images-idx3-ubyte": images(4, seed=1), "t10k-labels-idx1-ubyte": labels(4, seed=1)}
FILES = {f"{name}.gz": gzip.compress(idx(array), mtime=0) for name, array in SMALL.items()}
HTML = b"<!DOCTYPE html><html><body><h1>Service unavailable</h1></body></html>"


class Mirrors(http.server.BaseHTTPRequestHandler):
    """``/good/`` serves the files; ``/wrong/`` other files, ``/truncated/`` half of each (its length says all),
    ``/html/`` an HTML page with status 200, ``/missing/`` a 404, ``/silent/`` closes without an answer."""

    def do_GET(self):
        self.server.requests.append(self.path)
        mirror, _, name = self.path.strip("/").partition("/")
        body = FILES.get(name)
        if mirror == "silent" or body is None and mirror != "missing":
            return  # the connection closes with nothing said
        if mirror == "missing":
            self.send_error(404)
            return
        if mirror == "wrong":
            body = gzip.compress(body + b"x")
        elif mirror == "html":
            body = HTML
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[:len(body) // 2] if mirror == "truncated" else body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    """The mirrors on 127.0.0.1 at a free port, in a thread that is ended after the test."""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Mirrors)
    httpd.requests = []
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=10)
    assert not thread.is_alive()


@pytest.fixture
def cache(monkeypatch, tmp_path):
    """An empty cache directory of this test's own; no ``NIN_DATA``."""
    monkeypatch.delenv("NIN_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache" / "nin" / "fashion-mnist"


def url(server, mirror: str) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}/{mirror}/"


def small_checksums(monkeypatch):
    monkeypatch.setattr(download, "MD5", {name.removesuffix(".gz"): hashlib.md5(body).hexdigest()
                                      for name, body in FILES.items()})


def test_nin_mirrors_replaces_the_public_mirrors(monkeypatch):
    monkeypatch.delenv("NIN_MIRRORS", raising=False)
    assert download.default_mirrors() == download.MIRRORS
    monkeypatch.setenv("NIN_MIRRORS", " http://127.0.0.1:9/a , https://mirror.example/b/,")
    assert download.default_mirrors() == ("http://127.0.0.1:9/a/", "https://mirror.example/b/")
    monkeypatch.setenv("NIN_MIRRORS", "")
    assert download.default_mirrors() == download.MIRRORS


def test_a_bad_nin_mirrors_is_refused_in_one_line(monkeypatch, cache):
    monkeypatch.setenv("NIN_MIRRORS", "http://127.0.0.1:9/a,mirror.example/b")
    with pytest.raises(data.DataError) as err:
        data.locate()
    message = str(err.value)
    assert "NIN_MIRRORS=" in message and "'mirror.example/b' is not an http(s) URL" in message
    assert "\n" not in message and not cache.exists()


def test_the_cache_is_filled_once_and_reused(monkeypatch, server, cache):
    small_checksums(monkeypatch)
    monkeypatch.setenv("NIN_MIRRORS", f"{url(server, 'missing')},{url(server, 'good')}")
    (x_train, y_train), (x_test, y_test) = data.load_fashion_mnist()
    assert (x_train == SMALL["train-images-idx3-ubyte"]).all() and (y_test == SMALL["t10k-labels-idx1-ubyte"]).all()
    assert sorted(p.name for p in cache.iterdir()) == sorted(FILES)
    assert all((cache / name).read_bytes() == body for name, body in FILES.items())
    assert sorted(server.requests) == sorted(f"/{m}/{name}" for name in FILES for m in ("missing", "good"))
    server.requests.clear()
    assert data.locate() == cache
    data.load_fashion_mnist()
    assert server.requests == []  # read from the cache, not downloaded again


def test_every_bad_mirror_is_named_in_one_line_and_nothing_is_left(monkeypatch, server, cache):
    small_checksums(monkeypatch)
    bad = ("wrong", "truncated", "html", "missing", "silent")
    monkeypatch.setenv("NIN_MIRRORS", ",".join(url(server, m) for m in bad))
    with pytest.raises(data.MissingData) as err:
        data.load_fashion_mnist()
    message = str(err.value)
    assert "\n" not in message and "NIN_MIRRORS" in message and "NIN_DATA" in message
    name = "train-images-idx3-ubyte.gz"
    assert f"could not download {name} into {cache.resolve()}" in message
    reasons = {"wrong": "MD5 ", "truncated": "truncated: ", "html": "MD5 ", "missing": "HTTP Error 404",
               "silent": "no answer"}
    assert all(f"{url(server, m)}{name}: {reason}" in message for m, reason in reasons.items()), message
    assert "not a gzip file (it starts with b'<!DOCTYPE html><h'" not in message  # 16 bytes are shown, not more
    assert "not a gzip file (it starts with b'<!DOCTYPE html><'" in message
    assert server.requests == [f"/{m}/{name}" for m in bad]  # each mirror once, in order; the first file stops it
    assert list(cache.iterdir()) == []  # no partial file, no temporary file


def test_a_command_with_official_checksums_names_the_mirror(backend_name, monkeypatch, server, cache, tmp_path,
                                                            capsys):
    """The files a loopback mirror serves are not the official ones: a command that needs the data fails in
    one line that names the mirror and says what was wrong, and the cache holds no partial file."""
    monkeypatch.setenv("NIN_MIRRORS", url(server, "good"))
    status = cli.main(["train", "--backend", backend_name, "--epochs", "1", "--resize", "67", "--limit-train", "8",
                       "--limit-test", "8", "--out", str(tmp_path / "run"), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 1 and len(err) == 1, err
    md5 = hashlib.md5(FILES["train-images-idx3-ubyte.gz"]).hexdigest()
    assert f"{url(server, 'good')}train-images-idx3-ubyte.gz: MD5 {md5} is not the official" in err[0]
    assert "NIN_MIRRORS" in err[0] and "--data DIR" in err[0]
    assert list(cache.iterdir()) == [] and not (tmp_path / "run" / "checkpoint.safetensors").exists()
