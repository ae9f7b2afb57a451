"""The three backend modules expose the same names, in the same order, with the same
signatures and docstrings, except where the book's own signatures differ.

The sources are read with ``ast``, so this runs in every env, whatever is installed;
``test_imported_module_matches_its_source`` ties the source to the imported module.
"""

import ast
import inspect
from pathlib import Path

import pytest

import nin

SOURCES = {name: Path(nin.__file__).with_name(f"{name}.py") for name in nin.BACKENDS}
# The book's block signatures (d2l.ai, "Network in Network"): PyTorch needs the input channels.
# Beyond the book, all three take the same ``num_1x1`` (exercise 2).
BOOK_NIN_BLOCK = {
    "mxnet": ["num_channels", "kernel_size", "strides", "padding", "num_1x1"],
    "torch": ["in_channels", "out_channels", "kernel_size", "strides", "padding", "num_1x1"],
    "tf": ["num_channels", "kernel_size", "strides", "padding", "num_1x1"],
}


def _public(name: str) -> dict:
    """Public top-level definitions of ``nin/<name>.py``: name -> (params, defaults, docstring)."""
    tree = ast.parse(SOURCES[name].read_text())
    api = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "__all__" for t in node.targets):
            api["__all__"] = ast.literal_eval(node.value)
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and not node.name.startswith("_"):
            func = node
            if isinstance(node, ast.ClassDef):
                func = next(n for n in node.body if isinstance(n, ast.FunctionDef) and n.name == "__init__")
            args = [a.arg for a in func.args.args + func.args.kwonlyargs if a.arg != "self"]
            defaults = [ast.unparse(d) for d in func.args.defaults + func.args.kw_defaults if d is not None]
            api[node.name] = (args, defaults, ast.get_docstring(node))
    return api


APIS = {name: _public(name) for name in nin.BACKENDS}


def test_same_public_names_in_the_same_order():
    orders = {name: [k for k in api if k != "__all__"] for name, api in APIS.items()}
    assert orders["mxnet"] == orders["torch"] == orders["tf"]
    for name, api in APIS.items():
        assert api["__all__"] == orders[name], f"nin/{name}.py: __all__ is not its public definitions"


@pytest.mark.parametrize("public", [k for k in APIS["torch"] if k != "__all__"])
def test_same_signatures_and_docstrings(public):
    specs = {name: api[public] for name, api in APIS.items()}
    docs = {spec[2] for spec in specs.values()}
    assert len(docs) == 1 and None not in docs, f"{public}: docstrings differ or are missing"
    if public == "nin_block":
        assert {name: s[0] for name, s in specs.items()} == BOOK_NIN_BLOCK
        assert all(s[1] == ["spec.NUM_1X1"] for s in specs.values())
    else:
        assert specs["mxnet"][:2] == specs["torch"][:2] == specs["tf"][:2], public


def test_imported_module_matches_its_source(backend_name, backend):
    api = APIS[backend_name]
    assert backend.__all__ == api["__all__"]
    for public in backend.__all__:
        params = list(inspect.signature(getattr(backend, public)).parameters)
        assert params == api[public][0], public
