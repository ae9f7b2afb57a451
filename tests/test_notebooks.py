"""The notebooks in notebooks/ run from top to bottom without an error (in tox, the all env; alone:
tox -e all -- -m notebooks).

Each notebook is executed from a copy in memory, in the notebooks folder as Jupyter runs it, with the
budget ``NIN_BUDGET`` names (tox: ``smoke``, 256 images for 2 epochs: every cell runs; whether the model learns
is tests/test_training.py's check, in every framework); the committed files are left as they are. The kernel is
ipykernel on this Python (the notebooks' ``python3``). The data are found as users' runs find them (the
``real_data`` fixture: ``NIN_DATA``, else the cache, downloading there) and handed to the kernel as ``NIN_DATA``;
without the files the notebooks stop at their first code cell with a message that says what is missing.

To refresh the committed outputs after changing a notebook, run this file (from any directory):

    python tests/test_notebooks.py --inplace                          # every notebook, small budget
    NIN_BUDGET=book python tests/test_notebooks.py --inplace notebooks/nin_torch.ipynb
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import pytest

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
EXPECTED = ("compare_frameworks.ipynb", "nin_jax.ipynb", "nin_mxnet.ipynb", "nin_paddle.ipynb", "nin_tf.ipynb",
            "nin_torch.ipynb")
PATHS = sorted(NOTEBOOKS.glob("*.ipynb"))
CELL_TIMEOUT = 900  # seconds per cell: the small budget needs a few minutes at most, the smoke budget seconds

pytestmark = pytest.mark.notebooks


def execute(path: Path, budget: str | None = None, timeout: int | None = CELL_TIMEOUT, data: Path | None = None):
    """Run the notebook at ``path`` in a fresh kernel and return it with its outputs (the file is not written).

    ``budget`` sets ``NIN_BUDGET`` for the kernel (None: the environment's, else the notebooks' default);
    ``data`` sets ``NIN_DATA`` (None: the environment's);
    ``timeout`` is in seconds per cell (None: no limit).
    Raises nbclient's ``CellExecutionError`` (with the cell's traceback) on the first error.
    """
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    env = dict(os.environ)
    if budget is not None:
        env["NIN_BUDGET"] = budget
    if data is not None:
        env["NIN_DATA"] = str(data)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", record_timing=False,
                            resources={"metadata": {"path": str(path.parent)}})
    # This Python's ipykernel, whatever "python3" kernel specs other environments installed.
    client.create_kernel_manager().kernel_spec.argv = [sys.executable, "-m", "ipykernel_launcher", "-f",
                                                       "{connection_file}"]
    client.execute(env=env)
    return nb


def outputs(nb, output_type: str | None = None) -> list:
    return [out for cell in nb.cells if cell.cell_type == "code" for out in cell.get("outputs", [])
            if output_type is None or out.get("output_type") == output_type]


def test_the_six_notebooks_are_there():
    assert sorted(p.name for p in PATHS) == sorted(EXPECTED)


@pytest.mark.parametrize("path", PATHS, ids=[p.stem for p in PATHS])
def test_committed_with_outputs(path):
    """Committed as run: every code cell has run, in order, and the curves are PNG images."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
    counts = [cell.execution_count for cell in nb.cells if cell.cell_type == "code"]
    assert counts == list(range(1, len(counts) + 1)), f"{path.name}: not run top to bottom in one kernel: {counts}"
    assert not outputs(nb, "error"), f"{path.name} was committed with an error in its outputs"
    assert any("image/png" in out.get("data", {}) for out in outputs(nb)), f"{path.name} has no PNG plot"


@pytest.mark.slow
@pytest.mark.parametrize("path", PATHS, ids=[p.stem for p in PATHS])
def test_runs_top_to_bottom(path, real_data):
    nb = execute(path, budget=os.environ.get("NIN_BUDGET", "smoke"), data=real_data)
    assert not outputs(nb, "error")
    assert any("image/png" in out.get("data", {}) for out in outputs(nb)), f"{path.name} drew no PNG plot"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Execute the notebooks; with --inplace, save their outputs.")
    parser.add_argument("notebooks", nargs="*", type=Path, help="default: every notebook in notebooks/")
    parser.add_argument("--inplace", action="store_true", help="write the executed notebooks back")
    parser.add_argument("--timeout", type=int, help=f"seconds per cell (default {CELL_TIMEOUT}; none with "
                                                    "NIN_BUDGET=book, whose training cells run for hours on a CPU)")
    args = parser.parse_args(argv)
    if args.timeout is None and os.environ.get("NIN_BUDGET") != "book":
        args.timeout = CELL_TIMEOUT
    import nbformat

    for path in args.notebooks or PATHS:
        start = time.perf_counter()
        nb = execute(path.resolve(), timeout=args.timeout)
        if args.inplace:
            nbformat.write(nb, path)
        print(f"{path}: ran in {time.perf_counter() - start:.0f} s (NIN_BUDGET={os.environ.get('NIN_BUDGET', 'small')})"
              + (", saved" if args.inplace else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
