"""``python -m nin train``: the run directory, the preset it records, interrupting and resuming, and its
errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from fakedata import make_set
from nin import cli, presets, runs, training, weights
from test_cli import run_nin


def _args(backend_name, fake, out, *more):
    return ["train", "--backend", backend_name, "--data", fake, "--resize", "67", "--batch-size", "16",
            "--seed", "3", "--out", str(out), "--quiet", *more]


def _numbers(path):
    records = json.loads((path / runs.METRICS).read_text())["history"]
    return [{k: v for k, v in r.items() if k not in ("examples_per_sec", "seconds")} for r in records]


def test_interrupted_run_resumes_to_the_same_records(backend_name, backend, fake, tmp_path, monkeypatch, capsys):
    assert cli.main(_args(backend_name, fake, tmp_path / "straight", "--epochs", "2")) == 0
    stops = []
    real_stop = training.Meter.stop

    def stop_then_interrupt(meter):  # Ctrl-C during the second epoch's last batch
        stops.append(1)
        if len(stops) == 2:
            raise KeyboardInterrupt
        real_stop(meter)

    monkeypatch.setattr(training.Meter, "stop", stop_then_interrupt)
    out = tmp_path / "interrupted"
    assert cli.main(_args(backend_name, fake, out, "--epochs", "2")) == 130
    assert "--resume" in capsys.readouterr().err
    assert len(_numbers(out)) == 1  # the finished epoch is kept, the running one is lost
    monkeypatch.setattr(training.Meter, "stop", real_stop)
    assert cli.main(["train", "--resume", str(out), "--quiet"]) == 0
    assert _numbers(out) == _numbers(tmp_path / "straight")
    assert cli.main(["train", "--resume", str(out), "--epochs", "3", "--quiet"]) == 0
    assert [r["epoch"] for r in _numbers(out)] == [0, 1, 2]
    assert sorted(os.listdir(out)) == sorted([runs.CHECKPOINT, runs.METRICS, runs.CURVES])


def test_kill_keeps_the_finished_epochs(backend_name, backend, fake, tmp_path):
    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "nin", *_args(backend_name, fake, out, "--epochs", "1000")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while not (out / runs.METRICS).exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and f"--resume {out}" in err
    records = json.loads((out / runs.METRICS).read_text())["history"]
    _, meta = runs.Run(out, backend_name).load()
    assert len(records) >= 1 and meta["history"][: len(records)] == records[: len(meta["history"])]


@pytest.mark.parametrize("args, message", [
    (["train"], "name a backend with --backend"),
    (["train", "--resume", "{tmp}/nowhere"], "no checkpoint to resume from"),
    (["train", "--backend", "torch", "--resize", "28"], "28x28 are too small for NiN"),
    (["train", "--backend", "torch", "--epochs", "0"], "num_epochs must be a positive integer"),
    (["train", "--backend", "torch", "--lr", "-1"], "lr must be positive"),
    (["train", "--backend", "torch", "--init", "he"], "argument --init: invalid choice: 'he'"),
])
def test_train_errors_before_any_framework(args, message, tmp_path):
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    result = run_nin(*args, prelude="import sys; sys.modules['torch'] = None")
    assert result.returncode != 0 and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr


def test_missing_data_offline_is_one_line(backend_name, backend, tmp_path, monkeypatch, capsys):
    def offline(url, *args, **kwargs):
        raise urllib.error.URLError("no network here")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    (tmp_path / "empty").mkdir()  # a folder that does not exist is refused without downloading (test_lifecycle.py)
    status = cli.main(_args(backend_name, str(tmp_path / "empty"), tmp_path / "run"))
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 1 and len(err) == 1
    assert "Fashion-MNIST files missing in" in err[0] and "no network here" in err[0] and "--data DIR" in err[0]
    assert not (tmp_path / "run").exists()


def test_corrupt_data_file_is_named(backend_name, backend, fake, tmp_path, capsys):
    path = os.path.join(fake, "t10k-labels-idx1-ubyte.gz")
    with open(path, "r+b") as f:
        f.truncate(30)
    assert cli.main(_args(backend_name, fake, tmp_path / "run")) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "t10k-labels-idx1-ubyte.gz" in err[0]


def test_existing_run_is_not_overwritten(backend_name, backend, fake, tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.main(_args(backend_name, fake, out, "--epochs", "1")) == 0
    before = (out / runs.CHECKPOINT).read_bytes()
    assert cli.main(_args(backend_name, fake, out, "--epochs", "1")) == 1
    assert f"continue it with --resume {out}" in capsys.readouterr().err
    assert (out / runs.CHECKPOINT).read_bytes() == before


def test_predict_reports_the_runs_test_accuracy(backend_name, backend, fake, tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.main(_args(backend_name, fake, out, "--epochs", "1")) == 0
    capsys.readouterr()
    assert cli.main(["predict", "--backend", backend_name, "--weights", str(out / runs.CHECKPOINT),
                     "--data", fake, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    record = json.loads((out / runs.METRICS).read_text())["history"][-1]
    assert result["resize"] == 67 and result["images"] == 32 == len(result["predictions"])
    assert result["accuracy"] == record["test_acc"]  # the same weights on the same test images
    assert cli.main(["predict", "--backend", backend_name, "--weights", str(out / runs.CHECKPOINT),
                     "--data", fake, "--limit", "10"]) == 0
    assert capsys.readouterr().out.startswith("test acc ")


@pytest.mark.parametrize("content, message", [(None, "no such weights file"),
                                              (b"garbage", "is not a readable safetensors weights file")])
def test_predict_refuses_bad_weights_in_one_line(content, message, tmp_path):
    path = tmp_path / "w.safetensors"
    if content is not None:
        path.write_bytes(content)
    result = run_nin("predict", "--backend", "torch", "--weights", str(path),
                     prelude="import sys; sys.modules['torch'] = None")
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and len(lines) == 1 and message in lines[0]


def test_a_stop_asked_by_a_signal_waits_for_the_batch_and_a_second_one_does_not():
    with pytest.raises(KeyboardInterrupt):
        training.ask_stop()  # outside train's epochs (a framework importing, say): at once
    with training.stoppable():
        training.ask_stop()  # during an epoch: nothing raised where the signal lands...
        with pytest.raises(KeyboardInterrupt):
            training.check_stop()  # ...but after the running batch
        training.check_stop()  # once
        training.ask_stop()
        with pytest.raises(KeyboardInterrupt):
            training.ask_stop()  # a second signal before the batch ends: at once
        training.check_stop()


def _config(path: Path) -> tuple[dict, dict]:
    """The config in ``metrics.json`` and in the checkpoint."""
    return json.loads((path / runs.METRICS).read_text())["config"], weights.load(path / runs.CHECKPOINT)[1][
        "config"]


def test_cli_records_the_preset_and_resume_keeps_it(backend_name, backend, tmp_path):
    make_set(tmp_path / "data", n_train=48, n_test=32)
    out = tmp_path / "run"
    assert cli.main(["train", "--backend", backend_name, "--preset", "cpu", "--data", str(tmp_path / "data"),
                     "--resize", "67", "--batch-size", "16", "--epochs", "2", "--warmup", "0.5", "--seed", "3",
                     "--out", str(out), "--quiet"]) == 0
    expected = dict(presets.resolve("cpu", backend_name), resize=67, batch_size=16, epochs=2, warmup=0.5)
    in_metrics, in_checkpoint = _config(out)
    assert in_metrics == in_checkpoint
    assert in_metrics["preset"] == "cpu" and in_metrics["seed"] == 3 and in_metrics["backend"] == backend_name
    assert {key: in_metrics[key] for key in presets.SETTINGS} == expected
    assert cli.main(["train", "--resume", str(out), "--epochs", "3", "--quiet"]) == 0
    resumed, _ = _config(out)
    assert resumed == dict(in_metrics, epochs=3)
    assert len(json.loads((out / runs.METRICS).read_text())["history"]) == 3


def test_cli_book_preset_is_the_default(tmp_path, backend_name):
    make_set(tmp_path / "data", n_train=16, n_test=16)
    out = tmp_path / "run"
    assert cli.main(["train", "--backend", backend_name, "--data", str(tmp_path / "data"), "--resize", "67",
                     "--epochs", "1", "--seed", "0", "--out", str(out), "--quiet"]) == 0
    config, _ = _config(out)
    assert config["preset"] == "book"
    assert {key: config[key] for key in presets.SETTINGS} == dict(presets.PRESETS["book"], resize=67, epochs=1)
