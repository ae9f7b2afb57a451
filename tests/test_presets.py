"""Presets (``--preset book|cpu|cpu-long``) and budgets (``nin.presets.BUDGETS``): their settings, explicit settings
over a preset, the refusal of unknown ones, and ``presets.train``."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

import nin
from fakedata import make_set
from nin import presets, runs, weights


def test_book_preset_is_the_books_settings():
    book = presets.PRESETS["book"]
    assert (book["epochs"], book["lr"], book["batch_size"], book["resize"]) == (10, 0.1, 128, 224)
    assert (book["init"], book["precision"], book["schedule"], book["warmup"]) == ("xavier", "float32", "constant", 0)


def test_cpu_long_is_the_cpu_preset_over_three_times_the_epochs():
    assert presets.PRESETS["cpu-long"] == dict(presets.PRESETS["cpu"], epochs=3 * presets.PRESETS["cpu"]["epochs"])


def test_every_preset_fixes_every_setting():
    for name, settings in presets.PRESETS.items():
        assert tuple(settings) == presets.SETTINGS, name


def test_explicit_settings_override_the_preset(backend_name, backend):
    resolved = presets.resolve("cpu", backend_name, lr=0.02, resize=None, epochs=3)
    expected = dict(presets.PRESETS["cpu"], lr=0.02, epochs=3)
    expected["precision"] = "bfloat16" if "bfloat16" in backend.PRECISIONS else "float32"
    assert resolved == expected


def test_cpu_preset_uses_bfloat16_only_where_the_backend_offers_it(backend_name, backend):
    assert presets.resolve("cpu", backend_name)["precision"] in backend.PRECISIONS
    assert presets.resolve("cpu", backend_name, precision="float32")["precision"] == "float32"
    # asked for explicitly, bfloat16 is kept: the backend itself then says why it cannot
    assert presets.resolve("cpu", backend_name, precision="bfloat16")["precision"] == "bfloat16"


def test_unknown_preset_or_setting_is_refused():
    with pytest.raises(ValueError, match="unknown preset 'gpu'; choose one of book, cpu, cpu-long"):
        presets.resolve("gpu", "torch")
    with pytest.raises(ValueError, match="no setting momentum"):
        presets.resolve("cpu", "torch", momentum=0.9)


def _config(path: Path) -> tuple[dict, dict]:
    """The config in ``metrics.json`` and in the checkpoint."""
    return json.loads((path / runs.METRICS).read_text())["config"], weights.load(path / runs.CHECKPOINT)[1][
        "config"]


def test_python_preset_train_writes_the_run(backend_name, tmp_path):
    make_set(tmp_path / "data", n_train=16, n_test=16)
    history = presets.train(backend_name, "cpu", seed=1, data=tmp_path / "data", resize=67, epochs=2,
                            out=tmp_path / "run", quiet=True)
    config, _ = _config(tmp_path / "run")
    assert len(history) == 2 and config["preset"] == "cpu" and config["init"] == "primed"
    with pytest.raises(ValueError, match="already holds a run"):
        presets.train(backend_name, "cpu", seed=1, data=tmp_path / "data", resize=67, epochs=2, out=tmp_path / "run")


@pytest.mark.parametrize("name", list(presets.BUDGETS))
def test_every_budget_is_a_valid_run(name, tmp_path):
    b = presets.budget(name)
    config = presets.config(next(iter(nin.BACKENDS)), b["preset"], seed=0, data=tmp_path, limit_train=b["limit_train"],
                            limit_test=b["limit_test"], precision="float32", **b["settings"])
    presets.check(config, memory=False)
    assert all(config[key] == value for key, value in b["settings"].items())
    assert b["runs"] is None or not Path(b["runs"]).is_absolute()


def test_an_unknown_budget_is_refused_with_the_known_ones():
    with pytest.raises(ValueError, match="unknown budget 'tiny'; choose one of small, smoke, cpu, book"):
        presets.budget("tiny")
    before = copy.deepcopy(presets.BUDGETS)
    presets.budget("small")["settings"]["epochs"] += 1  # a copy: the budget itself is unchanged
    assert presets.BUDGETS == before
