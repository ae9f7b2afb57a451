"""``import nin``, ``nin.backend`` and ``python -m nin summary``: what users type, and their errors."""

import json
import subprocess
import sys

import pytest

import nin
from conftest import REQUESTED
from nin import spec

FRAMEWORKS = ("mxnet", "torch", "tensorflow", "keras", "jax", "flax", "optax", "paddle")


def run_nin(*args, prelude=""):
    """``python -m nin ARGS`` in a fresh interpreter; ``prelude`` runs first (to hide a framework)."""
    code = f"{prelude}\nfrom nin.cli import main_exit\nimport sys\nsys.argv = ['nin', *{list(args)!r}]\nmain_exit()"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)


def test_import_nin_imports_no_framework():
    code = f"import sys, nin, nin.spec, nin.cli; print(sorted(set(sys.modules) & set({FRAMEWORKS!r})))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_unknown_backend_lists_the_known_ones():
    with pytest.raises(ValueError, match="unknown backend 'caffe'; known backends: mxnet, torch, tf, jax, paddle"):
        nin.backend("caffe")


def test_import_order_puts_paddle_before_tensorflow():
    assert nin.import_order(["tf", "jax", "paddle", "mxnet"]) == ["paddle", "tf", "jax", "mxnet"]
    assert nin.import_order(list(nin.BACKENDS)).index("paddle") < nin.import_order(list(nin.BACKENDS)).index("tf")


@pytest.mark.parametrize("name", [name for name in REQUESTED if name == "paddle"] or [pytest.param(
    "paddle", marks=pytest.mark.skip(reason="needs PaddlePaddle installed: the paddle and all envs check it"))])
def test_paddle_after_tensorflow_is_refused_not_a_crash(name):
    """PaddlePaddle 3.3.1 imported after TensorFlow crashes the process: nin.paddle says what to do instead."""
    code = ("import sys; sys.modules['tensorflow'] = type(sys)('tensorflow')\n"  # as if TensorFlow were imported
            "try:\n    import nin.paddle\nexcept ImportError as err:\n    print(err)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and "import nin.paddle (or paddle) before nin.tf (or tensorflow)" in out.stdout


@pytest.mark.parametrize("name", list(nin.BACKENDS))
def test_missing_framework_names_the_pip_extra(name, monkeypatch):
    framework, extra, _ = nin.BACKENDS[name]
    monkeypatch.setitem(sys.modules, framework, None)  # makes `import <framework>` fail
    monkeypatch.delitem(sys.modules, f"nin.{name}", raising=False)
    monkeypatch.delattr(nin, name, raising=False)
    with pytest.raises(ImportError, match=rf"pip install 'nin\[{extra}\]'"):
        nin.backend(name)


def test_cli_missing_framework_is_one_line():
    result = run_nin("summary", "--backend", "torch", prelude="import sys; sys.modules['torch'] = None")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "nin summary: error: the 'torch' backend needs PyTorch (import 'torch' failed): "
        "install it with  pip install 'nin[torch]'"]


@pytest.mark.parametrize("args, message", [
    (["--backend", "caffe"], "argument --backend: invalid choice: 'caffe'"),
    (["--backend", "torch", "--input-shape", "1,1,224"], "expected N,C,H,W as four integers"),
    (["--backend", "torch", "--input-shape", "1,1,28,28"], "28x28 are too small for NiN: it needs at least 67x67"),
    (["--backend", "torch", "--input-shape", "1,1,-3,224"], "input shape H must be a positive integer, got -3"),
    (["--backend", "torch", "--num-classes", "0"], "num_classes must be a positive integer, got 0"),
])
def test_cli_errors_are_one_clear_line(args, message):
    # These are refused before any framework is imported: they run in every env.
    result = run_nin("summary", *args, prelude="import sys; sys.modules['torch'] = None")
    assert result.returncode != 0 and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in result.stderr


def test_cli_json_is_one_object_built_by_the_framework(backend_name, backend):
    result = run_nin("summary", "--backend", backend_name, "--json", "--input-shape", "2,3,101,101",
                     "--num-classes", "100")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)  # the whole of stdout is one JSON object
    assert set(summary) == {"backend", "input_shape", "num_classes", "num_1x1", "head", "layers", "total_params"}
    assert summary["backend"] == backend_name
    assert (summary["input_shape"], summary["num_classes"]) == ([2, 3, 101, 101], 100)
    expected = spec.layer_table((2, 3, 101, 101), 100)
    assert [(r["kind"], r["shape"], r["params"]) for r in summary["layers"]] == [
        (r.kind, list(r.shape), r.params) for r in expected]
    assert all(set(r) == {"name", "kind", "shape", "native_shape", "params"} for r in summary["layers"])
    assert summary["total_params"] == sum(r["params"] for r in summary["layers"]) == spec.total_params(3, 100)


def test_cli_table_is_the_books(backend_name, backend):
    result = run_nin("summary", "--backend", backend_name)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    rows = spec.layer_table()
    assert len(lines) == 2 + len(rows) + 1
    assert lines[-1].split() == ["total", f"{spec.total_params():,}"]
    assert lines[2 + 1].split()[-1] == "0"  # the first max-pooling holds no parameters
    assert lines[2].split()[-1] == f"{rows[0].params:,}"
