"""The benchmarks run, on a tiny budget (they are measurements, not tests: this only checks that
they work and report what they promise)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from conftest import REQUESTED
from fakedata import make_class_set

ROOT = Path(__file__).resolve().parents[1]


def test_training_benchmark_reports_every_requested_backend(tmp_path):
    make_class_set(tmp_path / "data", n_train=16, n_test=16)
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "train.py"), "--backends", ",".join(REQUESTED), "--images", "16",
         "--epochs", "2", "--resize", "67", "--batch-size", "8", "--data", str(tmp_path / "data"),
         "--json", str(tmp_path / "b.json")],
        capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads((tmp_path / "b.json").read_text())["results"]
    assert list(report) == REQUESTED
    for name, r in report.items():
        assert "unsupported" not in r, r
        assert set(r) >= {"train_eps", "book_train_eps", "infer_eps", "gflops_achieved", "matmul_gflops"}, name
        assert all(r[key] > 0 for key in ("train_eps", "book_train_eps", "infer_eps", "gflops_achieved"))
        assert r["matmul_gflops"] == max(x["own_matmul_gflops"] for x in report.values())
        assert f"| {name} | {r['train_eps']:.1f} |" in result.stdout
