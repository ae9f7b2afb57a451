"""A run's life from the command line: resuming and forking, the run directory and its lock,
divergence, memory, interrupts, and the one-line errors of what is left. Each case asserts the exit
status, the one line on stderr (no traceback) and, where files were there before, that none changed."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

import nin
from fakedata import make_set
from nin import cli, presets, runs, spec, training, weights
from test_cli import run_nin
from test_cli_train import _args

#: a prelude for run_nin: no framework can be imported, so what is refused is refused before any
NO_FRAMEWORK = "import sys; sys.modules.update(torch=None, mxnet=None, tensorflow=None)"
#: a prelude for run_nin: Ctrl-C while the framework (its import name in {}) starts to import
CTRL_C_AT_IMPORT = """
import os, signal, sys
signal.signal(signal.SIGINT, signal.default_int_handler)  # a shell starts background jobs with Ctrl-C ignored
class CtrlC:
    def find_spec(self, name, path=None, target=None):
        if name == {!r}:
            os.kill(os.getpid(), signal.SIGINT)
        return None
sys.meta_path.insert(0, CtrlC())
"""


def sums(*roots) -> dict:
    """Every file under ``roots`` and its SHA-256: what must not change."""
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for root in roots
            for p in sorted(Path(root).rglob("*")) if p.is_file()}


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err and "\x1b" not in err, err
    return lines[0]


def _error(capsys) -> str:
    captured = capsys.readouterr()
    return one_line(captured.err)


def checkpoint(out, fake, done=1, epochs=2, config_meta=None, **settings) -> dict:
    """A run directory with ``done`` finished epochs, written without a framework (zero weights)."""
    config = presets.config("torch", "book", seed=3, data=fake, **{"resize": 67, "batch_size": 16, "epochs": epochs,
                                                                    **settings})
    history = [{"epoch": e, "train_loss": 2.3, "train_acc": 0.1, "test_acc": 0.1, "examples_per_sec": 10.0,
                "seconds": 1.0} for e in range(done)]
    tensors = {name: np.zeros(shape, np.float32) for name, shape in spec.weight_shapes().items()}
    run = runs.Run(out, config["backend"], config if config_meta is None else config_meta)
    run.save(tensors, epoch=done - 1, seed=config["seed"], init=config["init"], lr=config["lr"], history=history)
    return config


def _records(out) -> list[dict]:
    text = (Path(out) / runs.METRICS).read_text()
    return json.loads(text, parse_constant=lambda name: pytest.fail(f"{name} in metrics.json"))["history"]


def _config(out) -> dict:
    return weights.load(Path(out) / runs.CHECKPOINT)[1]["config"]


# 1. --resume applies what it can and refuses the rest, naming the flag and the run's value

@pytest.mark.parametrize("flag, value, key", [
    ("--lr", "0.05", "lr"), ("--batch-size", "8", "batch_size"), ("--resize", "96", "resize"),
    ("--preset", "cpu", "preset"), ("--schedule", "cosine", "schedule"), ("--warmup", "0.5", "warmup"),
    ("--limit-train", "8", "limit_train"), ("--limit-test", "8", "limit_test"),
])
def test_resume_refuses_a_setting_that_changes_the_experiment_and_offers_a_fork(flag, value, key, fake, tmp_path,
                                                                                capsys):
    config = checkpoint(tmp_path / "run", fake)
    before = sums(tmp_path)
    assert cli.main(["train", "--resume", str(tmp_path / "run"), flag, value, "--epochs", "3"]) == 1
    line = _error(capsys)
    assert f"{flag} {value}: the run in {tmp_path / 'run'} has {key} {config[key]!r}" in line
    assert f"fork the run: --resume {tmp_path / 'run'} --out NEW_DIR {flag} {value}" in line
    assert sums(tmp_path) == before


@pytest.mark.parametrize("flag, value, key", [("--seed", "4", "seed"), ("--init", "kaiming", "init"),
                                              ("--num-1x1", "1", "num_1x1"), ("--head", "gradual", "head")])
def test_resume_and_fork_refuse_what_the_checkpoint_fixes(flag, value, key, fake, tmp_path, capsys):
    config = checkpoint(tmp_path / "run", fake)
    before = sums(tmp_path)
    for out in ([], ["--out", str(tmp_path / "fork")]):
        assert cli.main(["train", "--resume", str(tmp_path / "run"), flag, value, *out]) == 1
        line = _error(capsys)
        assert f"{flag} {value}: the run in {tmp_path / 'run'} has {key} {config[key]!r}" in line
        assert "start a new run" in line
    assert sums(tmp_path) == before


def test_resume_refuses_epochs_already_done_and_says_when_a_run_is_finished(fake, tmp_path, capsys):
    run = str(tmp_path / "run")
    checkpoint(run, fake, done=2, epochs=2)
    before = sums(tmp_path)
    assert cli.main(["train", "--resume", run, "--epochs", "2"]) == 1
    line = _error(capsys)
    assert f"--epochs 2: the run in {run} has finished 2 epochs already; pass more than 2" in line
    assert cli.main(["train", "--resume", run, "--data", fake]) == 1  # nothing to apply --data to
    assert "has finished its 2 epochs; pass --epochs 3 or more" in _error(capsys)
    assert cli.main(["train", "--resume", run]) == 0  # nothing asked of a finished run
    assert "has finished its 2 epochs" in capsys.readouterr().out
    assert sums(tmp_path) == before


def test_resume_applies_data_and_stores_paths_resolved(backend_name, backend, tmp_path, monkeypatch, capsys):
    make_set(tmp_path / "data", n_train=48, n_test=32)
    monkeypatch.chdir(tmp_path)
    assert cli.main(_args(backend_name, "data", "run", "--epochs", "1")) == 0  # as the README: a relative --data
    assert _config("run")["data"] == str((tmp_path / "data").resolve())
    os.rename(tmp_path / "data", tmp_path / "moved")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    before = sums(tmp_path)
    assert cli.main(["train", "--resume", "../run", "--epochs", "2", "--quiet"]) == 1
    line = _error(capsys)
    assert f"missing in {tmp_path / 'data'}" in line and "does not exist" in line and "--data DIR" in line
    assert not (tmp_path / "data").exists() and sums(tmp_path) == before  # the old path is not made again
    assert cli.main(["train", "--resume", "../run", "--epochs", "2", "--data", "../moved", "--quiet"]) == 0
    assert _config(tmp_path / "run")["data"] == str((tmp_path / "moved").resolve())
    assert [r["epoch"] for r in _records(tmp_path / "run")] == [0, 1]


def test_a_bfloat16_run_goes_on_in_float32_in_any_backend(backend_name, backend, fake, tmp_path, capsys):
    run = str(tmp_path / "run")
    checkpoint(run, fake, precision="bfloat16")
    if "bfloat16" not in backend.PRECISIONS:
        before = sums(tmp_path)
        assert cli.main(["train", "--resume", run, "--backend", backend_name, "--quiet"]) == 1
        line = _error(capsys)
        assert f"the run in {run} computes in bfloat16" in line and "--precision float32" in line
        assert sums(tmp_path) == before
    assert cli.main(["train", "--resume", run, "--backend", backend_name, "--precision", "float32", "--quiet"]) == 0
    config = _config(run)
    assert config["backend"] == backend_name and config["precision"] == "float32"
    assert len(_records(run)) == 2


def test_fork_goes_on_in_a_new_directory_with_new_settings(backend_name, backend, fake, tmp_path, capsys):
    old, new = tmp_path / "old", tmp_path / "new"
    checkpoint(old, fake, epochs=1)
    before = sums(old)
    assert cli.main(["train", "--resume", str(old), "--out", str(new), "--backend", backend_name, "--lr", "0.05",
                     "--batch-size", "8", "--epochs", "2", "--quiet"]) == 0
    assert sums(old) == before  # the run forked from is only read
    config, records = _config(new), _records(new)
    assert (config["lr"], config["batch_size"], config["epochs"]) == (0.05, 8, 2)
    assert config["fork_of"] == {"run": str(old.resolve()), "epoch": 0}
    assert records[0] == _records(old)[0] and len(records) == 2
    before = sums(tmp_path)
    assert cli.main(["train", "--resume", str(old), "--out", str(new), "--epochs", "3"]) == 1
    assert f"{new} already holds a run" in _error(capsys)
    assert sums(tmp_path) == before


# 2. --out is made (or refused) and locked before the first batch

@pytest.mark.parametrize("where, message", [("file", "is a file, not a directory"),
                                            ("file/run", "cannot create it (Not a directory)")])
def test_out_that_cannot_be_a_directory_is_refused_at_once(where, message, fake, tmp_path):
    (tmp_path / "file").write_text("mine")
    before = sums(tmp_path)
    result = run_nin(*_args("torch", fake, tmp_path / where), prelude=NO_FRAMEWORK)
    line = one_line(result.stderr)
    assert result.returncode == 1 and f"{tmp_path / where}" in line and message in line
    assert line.endswith("; choose another --out")
    assert sums(tmp_path) == before


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes in any directory")
def test_out_that_cannot_be_written_is_refused_at_once(fake, tmp_path):
    (tmp_path / "locked").mkdir(mode=0o500)
    result = run_nin(*_args("torch", fake, tmp_path / "locked"), prelude=NO_FRAMEWORK)
    assert result.returncode == 1 and "cannot write there" in one_line(result.stderr)


def test_a_second_run_into_a_busy_out_is_refused_and_a_killed_runs_lock_is_taken_over(backend_name, backend, fake,
                                                                                        tmp_path):
    out = tmp_path / "run"
    first = subprocess.Popen([sys.executable, "-m", "nin", *_args(backend_name, fake, out, "--epochs", "1000")],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 240
        while not (out / runs.CHECKPOINT).exists() and time.monotonic() < deadline and first.poll() is None:
            time.sleep(0.1)
        assert (out / runs.LOCK).read_text().strip() == str(first.pid)
        for args in (_args(backend_name, fake, out, "--epochs", "1"), ["train", "--resume", str(out), "--quiet"]):
            start = time.monotonic()
            second = subprocess.run([sys.executable, "-m", "nin", *args], capture_output=True, text=True, timeout=120)
            assert second.returncode == 1 and time.monotonic() - start < 30
            assert f"{out} is in use by another run (process {first.pid}" in one_line(second.stderr)
        assert first.poll() is None  # the first run goes on
    finally:
        first.kill()  # SIGKILL: its lock file stays behind, with no process holding it
        first.communicate(timeout=60)
    assert (out / runs.LOCK).exists()
    (out / f".{runs.CHECKPOINT}.x1y2z3.part").write_bytes(b"half a checkpoint")  # as a kill mid-write leaves
    done = weights.load(out / runs.CHECKPOINT)[1]["epoch"] + 1  # metrics.json may be one epoch ahead
    assert cli.main(["train", "--resume", str(out), "--epochs", str(done + 1), "--quiet"]) == 0
    assert len(_records(out)) == done + 1
    assert sorted(os.listdir(out)) == sorted([runs.CHECKPOINT, runs.METRICS, runs.CURVES])


# 3. divergence is a failure, and nothing non-finite is written

@pytest.mark.parametrize("lr", ["inf", "nan", "-inf"])
def test_non_finite_lr_is_refused_up_front(lr, fake, tmp_path):
    result = run_nin(*_args("torch", fake, tmp_path / "run", f"--lr={lr}"), prelude=NO_FRAMEWORK)
    assert result.returncode == 1 and f"lr must be positive and finite, got {float(lr)}" in one_line(result.stderr)
    assert not (tmp_path / "run").exists()


def test_a_diverging_run_fails_and_saves_nothing(backend_name, backend, fake, tmp_path, capsys):
    assert cli.main(_args(backend_name, fake, tmp_path / "run", "--lr", "1e30", "--epochs", "2")) == 1
    line = _error(capsys)
    assert "became" in line and "at epoch 1, batch " in line and "the run diverged" in line
    assert "nothing was saved; start again with a lower --lr" in line
    assert not (tmp_path / "run").exists()


def test_nan_in_a_later_epoch_keeps_the_last_good_checkpoint(backend_name, backend, fake, tmp_path, monkeypatch,
                                                             capsys):
    out = tmp_path / "run"
    assert cli.main(_args(backend_name, fake, out, "--epochs", "1")) == 0
    before = sums(tmp_path)
    real_add = training.Meter.add
    monkeypatch.setattr(training.Meter, "add", lambda meter, loss, *rest: real_add(meter, float("nan"), *rest))
    assert cli.main(["train", "--resume", str(out), "--epochs", "2", "--quiet"]) == 1
    line = _error(capsys)
    assert "the training loss became nan at epoch 2, batch 1" in line
    assert f"the last good checkpoint is kept in {out}: fork it with a lower rate" in line and "--lr 0.01" in line
    assert sums(tmp_path) == before
    assert len(_records(out)) == 1


# 4. predict refuses weights for another number of classes

def test_predict_refuses_weights_for_100_classes(fake, tmp_path):
    path = tmp_path / "w100.safetensors"
    weights.save({name: np.zeros(shape, np.float32) for name, shape in spec.weight_shapes(num_classes=100).items()},
                 path)
    result = run_nin("predict", "--backend", "torch", "--weights", str(path), "--data", fake, prelude=NO_FRAMEWORK)
    line = one_line(result.stderr)
    assert result.returncode == 1 and "holds a NiN for 100 classes" in line and "Fashion-MNIST has 10 classes" in line


# 5. memory, interrupts at start-up, bad checkpoint metadata: one line each

def test_what_cannot_fit_in_memory_is_refused_before_any_framework(fake, tmp_path):
    path = tmp_path / "w.safetensors"
    weights.save({name: np.zeros(shape, np.float32) for name, shape in spec.weight_shapes().items()}, path)
    for args, fix in [(_args("torch", fake, tmp_path / "run", "--resize", "100000"), "lower --batch-size or --resize"),
                      (("summary", "--backend", "torch", "--input-shape", "100000,3,224,224"), "smaller --input-shape"),
                      (("predict", "--backend", "torch", "--weights", str(path), "--resize", "100000"),
                       "lower --batch-size or --resize")]:
        result = run_nin(*args, prelude=NO_FRAMEWORK)
        line = one_line(result.stderr)
        assert result.returncode == 1 and "GiB of memory" in line and "GiB available" in line and fix in line
    assert not (tmp_path / "run").exists()


class ResourceExhaustedError(Exception):
    """Named as TensorFlow's."""


class MXNetError(RuntimeError):
    """Named as MXNet's, whose messages hold a C++ stack."""


@pytest.mark.parametrize("error", [
    RuntimeError("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate memory: you "
                 "tried to allocate 60211200000 bytes. Error code 12 (Cannot allocate memory)"),
    ResourceExhaustedError("Exception encountered when calling Conv2D.call().\n\n\x1b[1m{{function_node x}} OOM when "
                           "allocating tensor with shape[128,96,54,54]\x1b[0m\n\nArguments received by Conv2D.call():\n"
                           "  • inputs=tf.Tensor(shape=(128, 224, 224, 1), dtype=float32)"),
    MemoryError("Unable to allocate 596. GiB for an array with shape (128, 1, 100000, 100000)"),
    MXNetError('Traceback (most recent call last):\n  File "../src/storage/./cpu_device_storage.h", line 74\n'
               "MXNetError: Failed to allocate CPU Memory"),
])
def test_a_framework_running_out_of_memory_is_one_line(error, backend_name, backend, fake, tmp_path, monkeypatch,
                                                       capsys):
    def add(meter, *batch):
        raise error

    monkeypatch.setattr(training.Meter, "add", add)
    assert cli.main(_args(backend_name, fake, tmp_path / "run", "--epochs", "1")) == 1
    line = _error(capsys)
    assert line.startswith("nin train: error: out of memory (") and line.endswith("; lower --batch-size or --resize")
    assert "Arguments received" not in line
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("command", ["train", "summary"])
def test_ctrl_c_during_start_up_is_one_line(command, backend_name, backend, fake, tmp_path):
    args = _args(backend_name, fake, tmp_path / "run") if command == "train" else ["summary", "--backend", backend_name]
    result = run_nin(*args, prelude=CTRL_C_AT_IMPORT.format(nin.BACKENDS[backend_name][0]))
    assert result.returncode == 130 and "interrupted" in one_line(result.stderr)
    assert "--resume" not in result.stderr and not (tmp_path / "run").exists()


@pytest.mark.parametrize("meta", ["not settings", [1, 2], {"backend": "torch"}, None])
def test_checkpoint_whose_config_is_not_settings_is_one_line(meta, fake, tmp_path, capsys):
    meta = {**presets.config("torch", data=fake), "lr": "fast"} if meta is None else meta
    checkpoint(tmp_path / "run", fake, config_meta=meta)
    before = sums(tmp_path)
    assert cli.main(["train", "--resume", str(tmp_path / "run")]) == 1
    line = _error(capsys)
    assert f"{tmp_path / 'run' / runs.CHECKPOINT}: its run settings cannot be read" in line
    if not isinstance(meta, dict):
        path = str(tmp_path / "run" / runs.CHECKPOINT)
        assert cli.main(["predict", "--backend", "torch", "--weights", path, "--data", fake]) == 1
        assert "its 'config' metadata is not an object of run settings" in _error(capsys)
    assert sums(tmp_path) == before


# 6. the smaller cases

@pytest.mark.parametrize("seed", ["-5", str(2**31), str(2**64), "1.5"])
def test_seed_out_of_range_names_seed_with_one_rule(seed, fake, tmp_path):
    result = run_nin("train", "--backend", "torch", "--data", fake, "--seed", seed, "--out", str(tmp_path / "run"),
                     prelude=NO_FRAMEWORK)
    assert result.returncode == 2 and not (tmp_path / "run").exists()
    assert f"argument --seed: must be an integer from 0 to {2**31 - 1}, got '{seed}'" in one_line(result.stderr)


def test_seed_rule_from_python_in_every_backend(backend_name, backend, fake):
    with pytest.raises(ValueError, match=r"seed must be an integer from 0 to 2147483647 \(2\*\*31 - 1\), got -5"):
        backend.load_data_fashion_mnist(16, 67, fake, seed=-5)
    train_iter, test_iter = backend.load_data_fashion_mnist(16, 67, fake, seed=0)
    for seed in (-1, 2**31, 2**64):
        with pytest.raises(ValueError, match="seed must be an integer from 0 to 2147483647"):
            backend.train(backend.NiN(), train_iter, test_iter, 1, 0.1, seed=seed, quiet=True)
    with pytest.raises(ValueError, match="seed must be an integer"):
        presets.config(backend_name, seed=2**64)
    assert presets.config(backend_name, seed=2**31 - 1)["seed"] == 2**31 - 1


def test_ctrl_c_in_the_first_epoch_names_no_directory(backend_name, backend, fake, tmp_path, monkeypatch, capsys):
    def interrupt(meter):
        raise KeyboardInterrupt

    monkeypatch.setattr(training.Meter, "stop", interrupt)
    assert cli.main(_args(backend_name, fake, tmp_path / "run", "--epochs", "2")) == 130
    assert _error(capsys) == "nin train: interrupted before an epoch finished; nothing was saved"
    assert not (tmp_path / "run").exists()


def test_a_missing_data_folder_is_not_created(backend_name, backend, tmp_path, capsys):
    missing = tmp_path / "nowhere" / "data"
    assert cli.main(_args(backend_name, str(missing), tmp_path / "run")) == 1
    line = _error(capsys)
    assert f"missing in {missing}" in line and "That directory does not exist" in line and "--data DIR" in line
    assert not (tmp_path / "nowhere").exists() and not (tmp_path / "run").exists()


def test_predict_reads_the_test_files_alone_and_pytorch_metadata(backend_name, backend, fake, tmp_path, monkeypatch,
                                                                 capsys):
    from safetensors.numpy import save_file

    def offline(url, *args, **kwargs):
        raise urllib.error.URLError("no network here")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    for name in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"):
        os.unlink(os.path.join(fake, name))
    path = tmp_path / "torch_style.safetensors"
    save_file({name: np.zeros(shape, np.float32) for name, shape in spec.weight_shapes().items()}, str(path),
              metadata={"format": "pt"})  # what PyTorch's safetensors files carry
    assert weights.load(path)[1] == {"format": "pt"}
    assert cli.main(["predict", "--backend", backend_name, "--weights", str(path), "--data", fake, "--resize", "67",
                     "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["images"] == 32


def test_an_error_from_inside_a_keras_model_is_one_plain_line(backend_name, backend, fake, tmp_path, monkeypatch,
                                                              capsys):
    """Keras wraps what a model raises in its own message, in bold (ANSI codes): the line is the error alone.
    Images too small for the model reach it here through a loader that resizes them to 30x30."""
    path = tmp_path / "w.safetensors"
    weights.save({name: np.zeros(shape, np.float32) for name, shape in spec.weight_shapes().items()}, path)
    real_loader = backend.loader
    monkeypatch.setattr(backend, "loader", lambda split, sampler, resize: real_loader(split, sampler, 30))
    assert cli.main(["predict", "--backend", backend_name, "--weights", str(path), "--data", fake,
                     "--resize", "67"]) == 1
    line = _error(capsys)
    assert "images of 30x30 are too small for NiN" in line
    assert "Exception encountered" not in line and "Arguments received" not in line
