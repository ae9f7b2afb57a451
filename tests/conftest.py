"""Which backends a test run covers, and a loud failure when one of them cannot import.

``NIN_BACKENDS`` (set by each tox env) names the backends, comma-separated; unset, the
run covers all of them (``nin.BACKENDS``). A requested backend that cannot be imported fails the run: no
backend is ever skipped silently (as in einops' test suite).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import nin
from nin import data


def requested_backends() -> list[str]:
    value = os.environ.get("NIN_BACKENDS")
    names = list(nin.BACKENDS) if value is None else [n.strip() for n in value.split(",") if n.strip()]
    unknown = [n for n in names if n not in nin.BACKENDS]
    if unknown or not names:
        raise pytest.UsageError(f"NIN_BACKENDS={value!r}: name one or more of {', '.join(nin.BACKENDS)}")
    return names


REQUESTED = requested_backends()
try:  # the framework that must come first in one process (PaddlePaddle before TensorFlow), now; the rest as used
    nin.backend(nin.import_order(REQUESTED)[0])
except ImportError:
    pass  # the tests that use it fail loudly (import_backend)


def pytest_configure(config):
    """``NIN_MARKERS`` (set by each tox env) selects the tests the env runs, as a marker expression; ``-m`` on the
    command line narrows them further (``tox -- -m "not slow"``)."""
    env = os.environ.get("NIN_MARKERS", "").strip()
    if env:
        given = config.option.markexpr
        config.option.markexpr = f"({env}) and ({given})" if given else env


#: fixtures that make a test one backend's (or every backend's)
BACKEND_FIXTURES = {"backend", "backend_name", "all_backends"}


def covers_a_backend(item) -> bool:
    """Whether a test exercises a backend: through a backend fixture, a parameter that names a backend, or the
    ``per_backend`` marker (tests that run every requested backend themselves)."""
    params = item.callspec.params.values() if hasattr(item, "callspec") else ()
    return bool(BACKEND_FIXTURES & set(getattr(item, "fixturenames", ()))) or item.get_closest_marker(
        "per_backend") is not None or any(isinstance(value, str) and value in nin.BACKENDS for value in params)


def pytest_collection_modifyitems(config, items):
    """``NIN_NEUTRAL=0`` (tox's mxnet, tf, jax and paddle envs) leaves out the tests that exercise no backend
    (the description, the data files, the docs' links, the init's statistics with numpy's draws, ...): the
    torch env runs them, and a second run of the same check tells nothing new."""
    if os.environ.get("NIN_NEUTRAL", "1") != "0":
        return
    neutral = [item for item in items if not covers_a_backend(item)]
    if neutral:
        config.hook.pytest_deselected(items=neutral)
        items[:] = [item for item in items if covers_a_backend(item)]


def import_backend(name: str):
    try:
        return nin.backend(name)
    except ImportError as err:
        pytest.fail(f"backend {name!r} was requested for this run (NIN_BACKENDS="
                    f"{os.environ.get('NIN_BACKENDS', '<unset: all>')}) but cannot be imported: {err}",
                    pytrace=False)


def forward(backend, net, X):
    """The logits of ``net`` for the numpy N,C,H,W batch ``X``, in inference mode, through public names."""
    return backend.logits(net, backend.from_numpy(X))


#: the user's NIN_DATA, read once: the real_data fixture looks there first; every test runs without it
USER_DATA = os.environ.get("NIN_DATA") or None


@pytest.fixture(autouse=True)
def without_the_users_data(monkeypatch):
    """No test sees the user's ``NIN_DATA`` (a test that wants one sets its own): a run resumed without
    ``--data`` would otherwise go on with the user's files."""
    monkeypatch.delenv("NIN_DATA", raising=False)


@pytest.fixture(scope="session")
def real_data() -> Path:
    """The directory of the real Fashion-MNIST files, for the tests that train or compare on real images,
    found as a user's run finds them: ``$NIN_DATA``, else the cache directory, where missing files are
    downloaded once per machine (from ``$NIN_MIRRORS``, else the public mirrors). Where that fails, the tests
    that use it fail, in one line: never a skip."""
    try:
        return data.locate(USER_DATA)
    except data.DataError as err:
        message = str(err)
    pytest.fail(f"the real Fashion-MNIST files are needed: {message}", pytrace=False)


@pytest.fixture
def fake(tmp_path) -> str:
    """A tiny Fashion-MNIST (48 training and 32 test images, random pixels) in ``tmp_path/data``."""
    from fakedata import make_set

    make_set(tmp_path / "data", n_train=48, n_test=32)
    return str(tmp_path / "data")


@pytest.fixture(params=REQUESTED)
def backend_name(request) -> str:
    return request.param


@pytest.fixture
def backend(backend_name):
    """The backend module ``nin.<name>``, once per requested backend."""
    return import_backend(backend_name)


@pytest.fixture
def all_backends() -> dict:
    """All the backends in this process, for the tests marked ``cross``."""
    missing = [n for n in nin.BACKENDS if n not in REQUESTED]
    if missing:
        pytest.fail(f"cross-framework tests need NIN_BACKENDS to name every backend "
                    f"(missing: {', '.join(missing)}); deselect them with -m 'not cross'", pytrace=False)
    return {name: import_backend(name) for name in nin.BACKENDS}
