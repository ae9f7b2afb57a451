"""The backend contract: every backend module exposes the book's names (``nin.api.BOOK_NAMES``) and the hooks
of the protocol ``nin.api.Backend``, in the same order, with the same signatures, except where the book's own
signatures differ.

The sources are read with ``ast``, so this runs in every env, whatever is installed;
``test_imported_module_matches_its_source`` ties the source to the imported module. Docstrings
are each framework's own: they must exist for the book's names, not be identical.
"""

import ast
import inspect
from pathlib import Path

import pytest

import nin
from nin import api

SOURCES = {name: Path(nin.__file__).with_name(f"{name}.py") for name in nin.BACKENDS}
# The book's block signatures (d2l.ai, "Network in Network"): PyTorch and Flax NNX need the input
# channels (PaddlePaddle too), and NNX the ``rngs`` its weights are drawn from. Beyond the book, all take the same
# ``num_1x1`` (exercise 2).
BOOK_NIN_BLOCK = {
    "mxnet": ["num_channels", "kernel_size", "strides", "padding", "num_1x1"],
    "torch": ["in_channels", "out_channels", "kernel_size", "strides", "padding", "num_1x1"],
    "tf": ["num_channels", "kernel_size", "strides", "padding", "num_1x1"],
    "jax": ["in_channels", "out_channels", "kernel_size", "strides", "padding", "rngs", "num_1x1"],
    "paddle": ["in_channels", "out_channels", "kernel_size", "strides", "padding", "num_1x1"],
}
# What a backend's public signatures add to the others' where its framework needs it: an NNX model
# is built from the ``nnx.Rngs`` it draws its weights and dropout masks from (keyword-only, with a default).
EXTRA_ARGS = {("jax", "NiN"): (["rngs"], ["None"])}
BOUND = [f.__name__ for f in api.BOOK_FUNCTIONS]


def _public(name: str) -> dict:
    """Public top-level names of ``nin/<name>.py``, in source order: name -> (params, defaults, docstring);
    the names bound from :mod:`nin.api` and the constants -> None."""
    tree = ast.parse(SOURCES[name].read_text())
    public = {}
    for node in tree.body:
        if isinstance(node, ast.Assign):
            for target in node.targets:
                names = [t.id for t in getattr(target, "elts", [target]) if isinstance(t, ast.Name)]
                public.update({n: None for n in names if not n.startswith("_")})
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and not node.name.startswith("_"):
            func = node
            if isinstance(node, ast.ClassDef):
                func = next(n for n in node.body if isinstance(n, ast.FunctionDef) and n.name == "__init__")
            args = [a.arg for a in func.args.args + func.args.kwonlyargs if a.arg != "self"]
            defaults = [ast.unparse(d) for d in func.args.defaults + func.args.kw_defaults if d is not None]
            public[node.name] = (args, defaults, ast.get_docstring(node))
    return public


PUBLIC = {name: _public(name) for name in nin.BACKENDS}


def test_same_public_names_in_the_same_order():
    orders = {name: [k for k in public if k != "__all__"] for name, public in PUBLIC.items()}
    assert all(order == orders["torch"] for order in orders.values()), orders
    assert orders["torch"] == ["PRECISIONS", "nin_block", "NiN", "summary", *BOUND,
                               *[hook for hook in api.HOOKS if hook != "PRECISIONS"]]
    assert api.BOOK_NAMES == ("nin_block", "NiN", "summary", *BOUND)


@pytest.mark.parametrize("public", [k for k, v in PUBLIC["torch"].items() if v is not None and k != "__all__"])
def test_same_signatures(public):
    specs = {name: p[public] for name, p in PUBLIC.items()}
    if public == "nin_block":
        assert {name: s[0] for name, s in specs.items()} == BOOK_NIN_BLOCK
        assert all(s[1] == ["spec.NUM_1X1"] for s in specs.values())
    else:
        for name, s in specs.items():
            args, defaults = EXTRA_ARGS.get((name, public), ([], []))
            assert s[0][len(s[0]) - len(args):] == args and s[1][len(s[1]) - len(defaults):] == defaults
            assert (s[0][:len(s[0]) - len(args)], s[1][:len(s[1]) - len(defaults)]) == specs["torch"][:2], (
                name, public)


@pytest.mark.parametrize("public", ["nin_block", "NiN", "summary"])
def test_the_books_names_have_their_own_docstrings(public):
    for name, p in PUBLIC.items():
        assert p[public][2], f"nin/{name}.py: {public} has no docstring"


def test_imported_module_matches_its_source(backend_name, backend):
    public = PUBLIC[backend_name]
    assert backend.__all__ == api.BOOK_NAMES
    for name in backend.__all__:
        params = list(inspect.signature(getattr(backend, name)).parameters)
        if name in BOUND:  # written once (nin.api, nin.training), with the backend as first argument
            function = {f.__name__: f for f in api.BOOK_FUNCTIONS}[name]
            assert params == list(inspect.signature(function).parameters)[1:], name
            assert getattr(backend, name).__doc__ == function.__doc__
        else:
            assert params == public[name][0], name


def test_backend_implements_the_protocol(backend_name, backend):
    """Each hook of ``nin.api.Backend`` is there, with the protocol's parameters (``self`` aside)."""
    assert set(backend.PRECISIONS) <= {"float32", "bfloat16"} and "float32" in backend.PRECISIONS
    assert api.HOOKS == ("PRECISIONS", "default_device", "from_numpy", "to_numpy", "loader", "init_weights",
                         "get_weights", "set_weights", "seed_epoch", "trainer", "logits", "to_onnx", "join", "all_sum")
    for hook in api.HOOKS[1:]:
        expected = list(inspect.signature(getattr(api.Backend, hook)).parameters)[1:]
        assert list(inspect.signature(getattr(backend, hook)).parameters) == expected, hook
        assert PUBLIC[backend_name][hook][0] == expected, hook
