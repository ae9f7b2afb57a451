"""The benchmarks run, on a tiny budget (they are measurements, not tests: this only checks that
they work and report what they promise)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REQUESTED
from fakedata import make_class_set

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow  # each starts a benchmark script in a process of its own: tens of seconds


# The benchmark scripts hold no framework's code: they call the backends' public hooks (and nin.book's loops), which
# each framework's env tests itself. So they run where the backend-neutral tests run (NIN_NEUTRAL: the torch env,
# with its backend), once: a second env would check the same script again.

def test_training_benchmark_reports_every_requested_backend(tmp_path):
    make_class_set(tmp_path / "data", n_train=16, n_test=16)
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "train.py"), "--backends", ",".join(REQUESTED), "--images", "16",
         "--epochs", "2", "--resize", "67", "--batch-size", "8", "--data", str(tmp_path / "data"),
         "--matmul-size", "512", "--json", str(tmp_path / "b.json")],
        capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    written = json.loads((tmp_path / "b.json").read_text())
    report = written["results"]
    assert written["machine"].endswith(" CPUs")
    assert list(report) == REQUESTED
    for name, r in report.items():
        assert "unsupported" not in r, r
        assert set(r) >= {"train_eps", "book_train_eps", "infer_eps", "gflops_achieved", "matmul_gflops"}, name
        assert all(r[key] > 0 for key in ("train_eps", "book_train_eps", "infer_eps", "gflops_achieved"))
        assert r["matmul_gflops"] == max(x["own_matmul_gflops"] for x in report.values())
        assert f"| {name} | {r['train_eps']:.1f} |" in result.stdout
    assert "512x512 matmul" in result.stdout


def test_accuracy_benchmark_tabulates_every_run_and_resumes_a_stopped_grid(tmp_path):
    """The grid's bookkeeping: its table, its resume, the rows kept when a run is gone."""
    make_class_set(tmp_path / "data", n_train=16, n_test=16)
    grid = [sys.executable, str(ROOT / "benchmarks" / "accuracy.py"), "--backends", ",".join(REQUESTED),
            "--seeds", "0,1", "--runs", str(tmp_path / "runs"), "--data", str(tmp_path / "data"),
            "--md", str(tmp_path / "a.md"), "--png", str(tmp_path / "a.png")]
    command = [*grid, "--json", str(tmp_path / "a.json"), "--", "--epochs", "2", "--resize", "67", "--batch-size", "8"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    written = json.loads((tmp_path / "a.json").read_text())
    rows = written["rows"]
    assert [(r["backend"], r["seed"]) for r in rows] == [(b, s) for b in REQUESTED for s in (0, 1)]
    for r in rows:
        assert r["config"]["preset"] == "cpu" and r["config"]["resize"] == 67 and len(r["history"]) == 2
        assert r["final_test_acc"] == r["history"][-1]["test_acc"] and r["minutes"] > 0
        assert r["machines"] == [written["machine"]]
        assert f"| {r['backend']} | {r['seed']} | {r['config']['precision']} | {r['final_test_acc']:.3f} |" in (
            (tmp_path / "a.md").read_text())
    assert f"- {rows[0]['machines'][0]}: {rows[0]['backend']} 0, " in (tmp_path / "a.md").read_text()
    assert (tmp_path / "a.png").read_bytes()[:4] == b"\x89PNG"
    # the class units of a finished run (benchmarks/units.py): its test accuracy is the run's last
    run = tmp_path / "runs" / f"{REQUESTED[0]}-cpu-seed0"
    units = [sys.executable, str(ROOT / "benchmarks" / "units.py"), str(run), "--data", str(tmp_path / "data"),
             "--json", str(tmp_path / "u.json")]
    result = subprocess.run(units, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    (found,) = json.loads((tmp_path / "u.json").read_text())["rows"]
    assert found["test_acc"] == rows[0]["final_test_acc"] and found["images"] == 16 and len(found["share_on"]) == 10
    assert found["units_never_on"] == sum(share == 0 for share in found["share_on"])
    assert f"{found['units_never_on']} of 10 class units never on" in result.stdout
    # a second call trains nothing: every run is finished, and is read back
    again = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and "nin train" not in again.stdout
    assert json.loads((tmp_path / "a.json").read_text())["rows"] == rows
    # a run whose directory is gone keeps its recorded row in the report, and only there
    gone = tmp_path / "runs" / f"{REQUESTED[0]}-cpu-seed1"
    shutil.rmtree(gone)
    kept = subprocess.run([*grid, "--json", str(tmp_path / "a.json"), "--report-only"], capture_output=True,
                          text=True, timeout=600)
    assert kept.returncode == 0 and f"{gone} is not here" in kept.stdout, kept.stderr[-2000:]
    assert json.loads((tmp_path / "a.json").read_text())["rows"] == rows
    elsewhere = subprocess.run([*grid, "--json", str(tmp_path / "b.json"), "--report-only"], capture_output=True,
                               text=True, timeout=600)
    assert elsewhere.returncode == 0, elsewhere.stderr[-2000:]
    assert [(r["backend"], r["seed"]) for r in json.loads((tmp_path / "b.json").read_text())["rows"]] == [
        (b, s) for b in REQUESTED for s in (0, 1) if (b, s) != (REQUESTED[0], 1)]


def test_inference_benchmark_reports_every_backend_and_onnx_runtime(tmp_path):
    make_class_set(tmp_path / "data", n_train=8, n_test=16)
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "inference.py"), "--backends", ",".join(REQUESTED), "--images", "16",
         "--resize", "67", "--data", str(tmp_path / "data"), "--matmul-size", "512",
         "--json", str(tmp_path / "i.json")],
        capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads((tmp_path / "i.json").read_text())
    assert report["machine"].endswith(" CPUs")
    assert list(report["results"]) == [*REQUESTED, "onnxruntime"]
    assert all(r["batch1_eps"] > 0 and r["batch128_eps"] > 0 for r in report["results"].values())
    assert report["matmul_gflops"] > 0 and "| onnxruntime |" in result.stdout and "512x512 matmul" in result.stdout


def test_workers_benchmark_reports_the_ratio_of_two_workers_to_one_process(tmp_path):
    make_class_set(tmp_path / "data", n_train=64, n_test=16)
    name = REQUESTED[0]
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / "workers.py"), "--backends", name, "--images", "64",
                    "--resize", "67", "--epochs", "2", "--data", str(tmp_path / "data"), "--json",
                    str(tmp_path / "w.json"), "--md", str(tmp_path / "w.md")], check=True, timeout=300)
    report = json.loads((tmp_path / "w.json").read_text())
    result = report["backends"][name]
    assert report["workers"] == 2 and result["one"]["examples_per_sec"] > 0 and result["many"]["examples_per_sec"] > 0
    assert result["ratio"] == pytest.approx(result["many"]["examples_per_sec"] / result["one"]["examples_per_sec"])
    assert f"| {name} |" in (tmp_path / "w.md").read_text()


def test_exercise_screens_add_seeds_to_those_recorded_and_the_report_tabulates_them(tmp_path, monkeypatch):
    """``benchmarks/experiments.py``: a screen's seeds accumulate in its results file, and ``report`` puts them
    beside the cpu preset's rows (here: none) from those files only."""
    make_class_set(tmp_path / "data", n_train=16, n_test=16)
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import experiments

    for name in ("RESULTS", "UNITS", "OUT"):
        monkeypatch.setattr(experiments, name, tmp_path / name.lower())
    experiments.RESULTS.mkdir()
    monkeypatch.setattr(experiments, "SCREENS", {"tiny": {"epochs": 2, "resize": 67, "batch_size": 8}})
    for seed in (0, 1):
        assert experiments.main(["tuning", "--screens", "tiny", "--seeds", str(seed), "--backend", REQUESTED[0],
                                 "--data", str(tmp_path / "data"), "--runs", str(tmp_path / "runs")]) == 0
    name = experiments.result_name("tune", "tiny", REQUESTED[0])
    rows = json.loads((experiments.RESULTS / f"{name}.json").read_text())["rows"]
    assert [(r["seed"], r["config"]["epochs"], r["config"]["resize"]) for r in rows] == [(0, 2, 67), (1, 2, 67)]
    assert experiments.main(["report", "--backend", REQUESTED[0]]) == 0
    accs = [r["final_test_acc"] for r in rows]
    assert (f"| tiny | epochs=2, resize=67, batch_size=8 | 0, 1 | {sum(accs) / 2:.3f} ± "
            in (experiments.OUT / "tuning.md").read_text())
    assert "| cpu | the cpu preset: " in (experiments.OUT / "tuning.md").read_text()
    assert (experiments.OUT / "tuning.png").read_bytes()[:4] == b"\x89PNG"


def test_exercise_variants_record_runs_and_class_units_and_the_report_tabulates_them(tmp_path, monkeypatch):
    """``benchmarks/experiments.py variants``: a variant's run (the cpu preset on a tiny set) lands in its results
    file with its class units counted, and ``report`` puts both in the variant's row, the other variants not run."""
    make_class_set(tmp_path / "data", n_train=16, n_test=16)
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import experiments

    for name in ("RESULTS", "UNITS", "OUT"):
        monkeypatch.setattr(experiments, name, tmp_path / name.lower())
    experiments.RESULTS.mkdir()
    assert experiments.main(["variants", "--only", "gradual-n1", "--seeds", "0", "--backend", REQUESTED[0],
                             "--data", str(tmp_path / "data"), "--runs", str(tmp_path / "runs")]) == 0
    name = experiments.result_name("variant", "gradual-n1", REQUESTED[0])
    [row] = json.loads((experiments.RESULTS / f"{name}.json").read_text())["rows"]
    [counted] = json.loads((experiments.UNITS / f"{name}.json").read_text())["rows"]
    assert (row["seed"], row["config"]["num_1x1"], row["config"]["head"]) == (0, 1, "gradual")
    assert counted["test_acc"] == pytest.approx(row["final_test_acc"], abs=1 / 16)  # one image either way
    assert experiments.main(["report", "--backend", REQUESTED[0]]) == 0
    table = (experiments.OUT / "variants.md").read_text()
    assert (f"| 1, gradual | 1,949,396 | 94.8 M | 117 MiB | 0 | {row['final_test_acc']:.3f} | "
            f"{row['best_test_acc']:.3f} | {row['final_train_loss']:.3f} | {row['minutes_per_epoch']:.2f} | "
            f"{counted['units_never_on']} (seed 0); the least on for {100 * counted['least_share_on']:.0f}% of the "
            "images |") in table
    assert "| 1, one-step | 1,769,112 | 94.6 M | 115 MiB | - | not run yet |" in table
