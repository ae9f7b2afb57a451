"""Downloading Fashion-MNIST as a user's machine does, from mirrors named by ``NIN_MIRRORS``: a real HTTP
server on loopback (127.0.0.1, a free port) serves small IDX files whose MD5 sums the tests supply, a wrong
file, a truncated file, an HTML error page, a 404 and a connection closed without an answer.

The user's ``NIN_DATA`` and cache are never touched: the cache is ``XDG_CACHE_HOME`` in ``tmp_path``.
"""

from __future__ import annotations

import gzip
import hashlib
import http.server
import threading

import pytest

from fakedata import idx, images, labels
from nin import cli, data

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
    monkeypatch.setattr(data, "MD5", {name.removesuffix(".gz"): hashlib.md5(body).hexdigest()
                                      for name, body in FILES.items()})


def test_nin_mirrors_replaces_the_public_mirrors(monkeypatch):
    monkeypatch.delenv("NIN_MIRRORS", raising=False)
    assert data.default_mirrors() == data.MIRRORS
    monkeypatch.setenv("NIN_MIRRORS", " http://127.0.0.1:9/a , https://mirror.example/b/,")
    assert data.default_mirrors() == ("http://127.0.0.1:9/a/", "https://mirror.example/b/")
    monkeypatch.setenv("NIN_MIRRORS", "")
    assert data.default_mirrors() == data.MIRRORS


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
