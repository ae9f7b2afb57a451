"""What a demanding user's bad inputs get: the damaged file refused, the changed data noticed, a failed write
told with its path and what was kept, a run stopped even inside the framework, and one clear line for the rest.
Each case asserts the exit status, the one line on stderr and, where files were there before, that none changed
(their SHA-256), as tests/test_lifecycle.py does."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from fakedata import make_set
from nin import cli, data, export, runs, spec, training, weights
from test_cli_train import _args
from test_lifecycle import _config, checkpoint, one_line, sums


def _error(capsys) -> str:
    return one_line(capsys.readouterr().err)


def _zeros(**args) -> dict:
    return {name: np.zeros(shape, np.float32) for name, shape in spec.weight_shapes(**args).items()}


# 1. Damaged weights are not believed


@pytest.mark.parametrize("damage", ["nan", "random"])
def test_a_damaged_checkpoint_is_refused_on_resume(damage, fake, tmp_path, capsys):
    checkpoint(tmp_path / "run", fake)
    path = tmp_path / "run" / runs.CHECKPOINT
    blob = bytearray(path.read_bytes())
    payload = np.full(100_000, np.nan, np.float32).tobytes() if damage == "nan" else os.urandom(400_000)
    blob[-len(payload) - 1000:-1000] = payload[:len(blob) - 2000]
    path.write_bytes(bytes(blob))
    before = sums(tmp_path)
    assert cli.main(["train", "--resume", str(tmp_path / "run"), "--epochs", "2", "--quiet"]) == 1
    line = _error(capsys)
    assert f"{path} is damaged: its tensors do not match the SHA-256" in line and "start a new run" in line
    assert "lr" not in line and sums(tmp_path) == before


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_weights_are_refused_by_predict_export_and_load_weights(bad, fake, tmp_path, capsys):
    tensors = _zeros()
    tensors["blocks.2.convs.1.bias"][5] = bad
    weights.save(tensors, tmp_path / "w.safetensors")
    before = sums(tmp_path)
    assert cli.main(["predict", "--backend", "torch", "--weights", str(tmp_path / "w.safetensors"), "--data", fake,
                     "--resize", "67"]) == 1
    assert "tensor blocks.2.convs.1.bias holds NaN or infinite values" in _error(capsys)
    assert cli.main(["export", "--weights", str(tmp_path / "w.safetensors"), "--out", str(tmp_path / "w.onnx")]) == 1
    assert "tensor blocks.2.convs.1.bias holds NaN or infinite values" in _error(capsys)
    with pytest.raises(weights.NonFiniteWeights, match="blocks.2.convs.1.bias"):
        weights.load(tmp_path / "w.safetensors")
    assert sums(tmp_path) == before


def test_every_weights_file_carries_the_checksum_of_its_tensors(tmp_path):
    tensors = _zeros()
    weights.save(tensors, tmp_path / "w.safetensors")
    _, meta = weights.load(tmp_path / "w.safetensors")
    assert meta["sha256"] == weights.checksum(tensors)
    tensors["blocks.0.convs.0.bias"][0] = 1.0
    assert weights.checksum(tensors) != meta["sha256"]


# 2. Changed data are noticed, and NIN_DATA applies on resume as --data does


def test_changed_data_are_refused_on_resume_with_a_fork_offered(fake, tmp_path, capsys):
    config = checkpoint(tmp_path / "run", fake)
    config.update(data_sha256=data.fingerprint(fake), data_dir=fake)
    checkpoint(tmp_path / "run2", fake, config_meta=config)
    make_set(Path(fake), n_train=48, n_test=32, seed=7)  # the same files, other images
    before = sums(tmp_path / "run2")
    assert cli.main(["train", "--resume", str(tmp_path / "run2"), "--epochs", "2", "--quiet"]) == 1
    line = _error(capsys)
    assert f"the data in {Path(fake).resolve()} are not those the run trained on" in line
    assert f"--resume {shlex.quote(str(tmp_path / 'run2'))} --out NEW_DIR" in line
    assert sums(tmp_path / "run2") == before


def test_nin_data_applies_on_resume_as_data_does(fake, tmp_path, monkeypatch, capsys):
    checkpoint(tmp_path / "run", fake)
    os.rename(fake, tmp_path / "moved")  # the run's --data is gone: NIN_DATA applies
    (tmp_path / "empty").mkdir()
    monkeypatch.setenv("NIN_DATA", str(tmp_path / "empty"))
    before = sums(tmp_path)
    assert cli.main(["train", "--resume", str(tmp_path / "run"), "--epochs", "2", "--quiet"]) == 1
    assert f"missing in {(tmp_path / 'empty').resolve()}" in _error(capsys)
    assert sums(tmp_path) == before


def test_a_run_records_its_data_and_where_they_came_from(backend_name, backend, fake, tmp_path, monkeypatch):
    monkeypatch.setenv("NIN_DATA", fake)
    args = [a for a in _args(backend_name, fake, tmp_path / "run", "--epochs", "1", "--limit-train", "16",
                             "--limit-test", "20000") if a not in ("--data", fake)]
    assert cli.main(args) == 0
    config = _config(tmp_path / "run")
    assert config["data"] is None and config["data_from"] == "NIN_DATA"
    assert config["data_dir"] == str(Path(fake).resolve()) and config["data_sha256"] == data.fingerprint(fake)
    assert config["limit_test"] == 32  # more than the 32 test images: all of them, recorded as used


# 3. A failed write is one line with the path and what was kept; files follow the umask


def test_a_failed_write_keeps_the_last_checkpoint(fake, tmp_path, monkeypatch):
    checkpoint(tmp_path / "run", fake)
    before = sums(tmp_path)
    original = weights.atomic_write

    def full(path, blob):
        if path.name == runs.METRICS:
            raise OSError(28, "No space left on device", str(path))
        original(path, blob)

    monkeypatch.setattr(weights, "atomic_write", full)
    run = runs.Run(tmp_path / "run", "torch", _config(tmp_path / "run"))
    with pytest.raises(runs.WriteFailed) as err:
        run.save(_zeros(), epoch=1, seed=3, init="xavier", lr=0.1, history=[{}, {}])
    assert str(err.value) == (f"cannot write the files of epoch 2 in {tmp_path / 'run'} (No space left on device: "
                              f"{tmp_path / 'run' / runs.METRICS}); its checkpoint of epoch 1 (the last before this "
                              f"one) is kept")
    assert sums(tmp_path) == before


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_files_follow_the_umask(umask, fake, tmp_path):
    previous = os.umask(umask)
    try:
        checkpoint(tmp_path / "run", fake)
        export.export(tmp_path / "run" / runs.CHECKPOINT, tmp_path / "nin.onnx")
    finally:
        os.umask(previous)
    for name in (runs.CHECKPOINT, runs.METRICS, runs.CURVES):
        assert (tmp_path / "run" / name).stat().st_mode & 0o777 == 0o666 & ~umask, name
    assert (tmp_path / "nin.onnx").stat().st_mode & 0o777 == 0o666 & ~umask


# 4. A run that holds on inside the framework is stopped all the same


def test_a_run_inside_a_long_native_call_is_stopped(fake, tmp_path):
    """The run is one long matrix product (numpy's BLAS, which Python's signal handler cannot interrupt):
    SIGTERM ends the process after the grace period (1 s here), with one line. No framework is imported: the
    watchdog is the command line's, around whatever the framework does."""
    started = tmp_path / "started"
    prelude = (f"import numpy, pathlib, nin.cli, nin.presets\nnin.cli.STOP_GRACE = 1\n"
               f"def slow(*args, **kwargs):\n    a = numpy.ones((9000, 9000))\n"
               f"    pathlib.Path({str(started)!r}).touch()\n    a @ a\n    a @ a\n"
               f"nin.presets.fit = slow\n")
    code = (f"{prelude}from nin.cli import main_exit\nimport sys\n"
            f"sys.argv = ['nin', *{_args('torch', fake, tmp_path / 'run', '--epochs', '1')!r}]\nmain_exit()")
    process = subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.monotonic() + 120
    while not started.exists() and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.1)
    time.sleep(1)  # inside the product
    start = time.monotonic()
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    assert time.monotonic() - start < 10
    assert process.returncode == 128 + signal.SIGTERM
    assert one_line(err) == "nin train: still running 1 s after signal 15, inside the framework; stopped, the last " \
                            "finished epoch's files intact"


# 5-7. One line at the start for what would fail later, or mislead


def test_an_opset_out_of_range_is_refused_before_anything_is_written(tmp_path, capsys):
    weights.save(_zeros(), tmp_path / "w.safetensors")
    before = sums(tmp_path)
    assert cli.main(["export", "--weights", str(tmp_path / "w.safetensors"), "--out", str(tmp_path / "w.onnx"),
                     "--opset", "99"]) == 1
    assert "opset 99 is newer than the newest the installed onnx" in _error(capsys)
    assert sums(tmp_path) == before


def test_a_fixed_size_export_is_predicted_at_its_size(fake, tmp_path, capsys):
    weights.save(_zeros(), tmp_path / "w.safetensors")
    assert cli.main(["export", "--weights", str(tmp_path / "w.safetensors"), "--out", str(tmp_path / "w.onnx"),
                     "--resize", "96"]) == 0
    assert f"--weights {tmp_path / 'w.onnx'} --resize 96" in capsys.readouterr().out
    assert cli.main(["predict", "--backend", "onnxruntime", "--weights", str(tmp_path / "w.onnx"), "--data", fake]) == 0
    assert "resize 96" in capsys.readouterr().out


def test_symlink_loops_are_named(fake, tmp_path, monkeypatch, capsys):
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    assert cli.main(_args("torch", str(tmp_path / "loop"), tmp_path / "run")) == 1
    assert f"{tmp_path / 'loop'}: a symbolic link that leads back to itself" in _error(capsys)
    assert cli.main(_args("torch", fake, tmp_path / "loop")) == 1
    assert f"{tmp_path / 'loop'} is a symbolic link to nowhere (a loop, or a missing target)" in _error(capsys)
    monkeypatch.setenv("NIN_DATA", str(tmp_path / "loop"))
    with pytest.raises(data.DataError, match="a symbolic link that leads back to itself"):
        data.load_fashion_mnist()


def test_nin_data_that_is_a_file_is_called_a_file(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("not a folder")
    monkeypatch.setenv("NIN_DATA", str(tmp_path / "file"))
    with pytest.raises(data.DataError, match="That is a file, not a directory"):
        data.load_fashion_mnist()


def test_suggested_commands_quote_their_paths(fake, tmp_path, capsys):
    out = tmp_path / "my runs" / "run 1"
    checkpoint(out, fake)
    assert cli.main(_args("torch", fake, out)) == 1
    assert f"continue it with --resume {shlex.quote(str(out))}, or choose another --out" in _error(capsys)


def test_summary_out_of_memory_names_num_classes_too():
    assert "--num-classes" in cli._OOM_FIX["summary"]


def test_resources_columns_never_run_together(capsys):
    assert cli.main(["resources", "--input-shape", "100000,1,224,224"]) == 0
    lines = capsys.readouterr().out.splitlines()
    header, total = lines[1], next(line for line in lines if line.startswith("total"))
    assert "  MACs" in header and "  activations" in header and "  train bytes" in header
    assert len(total.split()) == 5  # "total" and four numbers, each apart from the next


def test_a_stray_onnx_folder_is_named(tmp_path):
    (tmp_path / "onnx").mkdir()
    code = "import sys; sys.path.insert(0, '.'); from nin import export; export._onnx()"
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
    if "ImportError" not in result.stderr:  # the installed onnx took precedence over the empty folder
        (tmp_path / "onnx" / "__init__.py").write_text("")
        result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert "not the onnx package: a folder or file named onnx in the working directory" in result.stderr


# 8. The Python API names the argument before it changes anything


def test_the_python_api_names_the_argument(backend_name, backend, fake):
    train_iter, test_iter = backend.load_data_fashion_mnist(16, 67, fake, seed=0)
    net = backend.NiN()
    backend.init_weights(net, "kaiming", 0)
    before = backend.get_weights(net)
    with pytest.raises(ValueError, match="lr must be positive and finite, got '0.1'"):
        backend.train(net, train_iter, test_iter, 1, "0.1", quiet=True)
    with pytest.raises(ValueError, match="train_iter must be batches .* got NoneType"):
        backend.train(net, None, test_iter, 1, 0.1, quiet=True)
    with pytest.raises(ValueError, match="train_iter holds no batches"):
        backend.train(net, [], test_iter, 1, 0.1, quiet=True)
    after = backend.get_weights(net)
    assert all((after[name] == before[name]).all() for name in before)  # nothing was re-initialized
    with pytest.raises(ValueError, match="dropout must be in \\[0, 1\\), got '0.5'"):
        backend.NiN(dropout="0.5")
    history = backend.train(net, train_iter, test_iter, np.int64(1), np.float32(0.05), quiet=True, seed=0,
                            init="kaiming")
    assert len(history) == 1


def test_training_watchdog_does_nothing_off_the_main_thread():
    import threading

    done = []
    thread = threading.Thread(target=lambda: done.append(training.watchdog(1).__enter__() is None))
    thread.start()
    thread.join()
    assert done == [True]
