"""Parameters, MACs, FLOPs and memory (:mod:`nin.resources`): by hand, on the command line, against the frameworks."""

import itertools
import json

import pytest

from conftest import REQUESTED, import_backend
from nin import book, spec
from nin.resources import resources
from test_cli import run_nin

VARIANTS = list(itertools.product(spec.NUM_1X1_CHOICES, spec.HEADS))  # (num_1x1, head)
BOOK = (spec.NUM_1X1, spec.HEAD)
COLUMNS = ("params", "macs", "flops", "activations", "train_bytes")
# PyTorch's own FLOP counter and allocator: these tests run where the run covers PyTorch.
TORCH = [name for name in REQUESTED if name == "torch"] or [pytest.param("torch", marks=pytest.mark.skip(
    reason="checks against PyTorch's FLOP counter and allocator: they run in the torch env"))]


def book_convs(num_1x1: int = 2) -> list[tuple[int, int, int, int]]:
    """The book's convolutions at 1x224x224 as ``(in, out, kernel, output size)``, from its shape table.

    54 = (224 - 11) // 4 + 1; each max-pooling (3, stride 2) then gives 26, 12 and 5.
    """
    blocks = [(1, 96, 11, 54), (96, 256, 5, 26), (256, 384, 3, 12), (384, 10, 3, 5)]
    return [conv for i, o, k, size in blocks for conv in [(i, o, k, size)] + [(o, o, 1, size)] * num_1x1]


def test_book_macs_and_params_by_hand():
    found = resources((1, 1, 224, 224), 10)["totals"]
    assert found["macs"] == sum(size * size * k * k * i * o for i, o, k, size in book_convs()) == 762_297_352
    assert found["flops"] == 2 * found["macs"]
    assert found["params"] == sum(k * k * i * o + o for i, o, k, _ in book_convs()) == 1_992_166
    assert resources(num_1x1=1)["totals"]["params"] == sum(k * k * i * o + o for i, o, k, _ in book_convs(1)) \
        == 1_769_112


def test_book_memory_by_hand():
    found = resources((1, 1, 224, 224), 10, batch_size=128)
    relu_outputs = sum(size * size * o for _, o, _, size in book_convs())  # one per convolution
    pooled = 96 * 26 * 26 + 256 * 12 * 12 + 384 * 5 * 5  # max-pooling outputs, each with int64 indices
    kept = relu_outputs * 4 + pooled * (4 + 8) + 2 * 384 * 5 * 5 * 4 + 10 * 4  # + dropout output, mask; logits
    assert found["memory"]["kept_for_backward"] == 128 * kept
    image = 128 * 224 * 224 * 4
    assert found["totals"]["train_bytes"] == 2 * 1_992_166 * 4 + image + 128 * kept
    # The largest operation: the first block's ReLUs, from 96x54x54 to 96x54x54.
    assert found["totals"]["predict_bytes"] == 1_992_166 * 4 + image + 128 * 2 * 96 * 54 * 54 * 4


@pytest.mark.parametrize("num_1x1, head", VARIANTS)
@pytest.mark.parametrize("input_shape, num_classes", [((1, 1, 224, 224), 10), ((2, 3, 101, 120), 100),
                                                      ((1, 1, 67, 67), 10)])
def test_columns_sum_to_totals(input_shape, num_classes, num_1x1, head):
    found = resources(input_shape, num_classes, num_1x1=num_1x1, head=head)
    for column in COLUMNS:
        assert sum(row[column] for row in found["layers"]) == found["totals"][column], column
    assert found["totals"]["flops"] == 2 * found["totals"]["macs"]
    assert found["totals"]["params"] == spec.total_params(input_shape[1], num_classes, num_1x1, head)
    table = spec.layer_table(input_shape, num_classes, num_1x1, head)
    assert [(r["kind"], tuple(r["shape"]), r["params"]) for r in found["layers"]] == [
        (r.kind, r.shape, r.params) for r in table]
    memory = found["memory"]
    assert found["totals"]["predict_bytes"] == memory["weights"] + memory["image_batch"] + memory["largest_operation"]
    assert found["totals"]["train_bytes"] == sum(memory[k] for k in (
        "weights", "gradients", "optimizer_state", "image_batch", "kept_for_backward"))
    assert set(found["conventions"]) >= {"macs", "flops", "predict_bytes", "train_bytes"}


def test_batch_size_scales_what_depends_on_it():
    one, many = resources((1, 1, 96, 96)), resources((1, 1, 96, 96), batch_size=32)
    assert resources((32, 1, 96, 96)) == {**many, "input_shape": [32, 1, 96, 96]}  # the default: N
    assert many["batch_size"] == 32 and many["layers"][0]["shape"][0] == 32
    assert many["totals"]["params"] == one["totals"]["params"]
    for column in ("macs", "flops", "activations"):
        assert many["totals"][column] == 32 * one["totals"][column]
    weights = 2 * one["memory"]["weights"]
    assert many["totals"]["train_bytes"] - weights == 32 * (one["totals"]["train_bytes"] - weights)


@pytest.mark.parametrize("kwargs, message", [
    ({"input_shape": (1, 1, 28, 28)}, "28x28 are too small for NiN: it needs at least 67x67"),
    ({"input_shape": (1, 1, 224)}, "input shape must be N,C,H,W"),
    ({"num_classes": 0}, "num_classes must be a positive integer, got 0"),
    ({"batch_size": 0}, "batch_size must be a positive integer, got 0"),
    ({"batch_size": 2.5}, "batch_size must be a positive integer, got 2.5"),
    ({"batch_size": True}, "batch_size must be a positive integer, got True"),
    ({"num_1x1": 3}, "num_1x1 must be one of 0, 1, 2, got 3"),
    ({"head": "sudden"}, "head must be one of one-step, gradual, got 'sudden'"),
])
def test_errors_say_what_is_wrong(kwargs, message):
    with pytest.raises(ValueError, match=message):
        resources(**kwargs)


NO_FRAMEWORK = "import sys; sys.modules.update(dict.fromkeys(['mxnet', 'torch', 'tensorflow', 'keras']))"


def test_cli_json_is_one_object_without_a_framework():
    result = run_nin("resources", "--json", "--input-shape", "2,3,101,120", "--num-classes", "100",
                     "--batch-size", "4", "--num-1x1", "1", "--head", "gradual", prelude=NO_FRAMEWORK)
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)  # the whole of stdout is one JSON object
    assert {"layers", "totals"} <= set(found)
    assert set(found["totals"]) >= {"params", "macs", "flops", "predict_bytes", "train_bytes"}
    assert found == json.loads(json.dumps(resources((2, 3, 101, 120), 100, 4, 1, "gradual")))


def test_cli_table_columns_sum_to_the_total_line():
    result = run_nin("resources", "--batch-size", "128", prelude=NO_FRAMEWORK)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    found = resources(batch_size=128)
    rows = lines[2:2 + len(found["layers"])]
    total = lines[2 + len(found["layers"])].split()
    assert total[0] == "total"
    numbers = [[int(cell.replace(",", "")) for cell in row.split()[-4:]] for row in rows]
    assert [sum(column) for column in zip(*numbers, strict=True)] == [int(t.replace(",", "")) for t in total[1:]]
    assert total[1:] == [f"{found['totals'][k]:,}" for k in ("params", "macs", "activations", "train_bytes")]
    text = result.stdout
    assert f"{found['totals']['flops']:,}" in text and f"{found['totals']['predict_bytes']:,}" in text


@pytest.mark.parametrize("args, message", [
    (["--input-shape", "1,1,28,28"], "28x28 are too small for NiN: it needs at least 67x67"),
    (["--batch-size", "0"], "batch_size must be a positive integer, got 0"),
    (["--batch-size", "x"], "argument --batch-size: invalid int value: 'x'"),
    (["--num-1x1", "3"], "argument --num-1x1: invalid choice: 3"),
    (["--head", "sudden"], "argument --head: invalid choice: 'sudden'"),
    (["--num-classes", "0"], "num_classes must be a positive integer, got 0"),
])
def test_cli_errors_are_one_line(args, message):
    result = run_nin("resources", *args, prelude=NO_FRAMEWORK)
    assert result.returncode != 0 and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in result.stderr


def _model(backend, num_classes: int, in_channels: int, num_1x1: int, head: str):
    if (num_1x1, head) == BOOK:
        return backend.NiN(num_classes=num_classes, in_channels=in_channels)
    return backend.NiN(num_classes=num_classes, in_channels=in_channels, num_1x1=num_1x1, head=head)


def test_params_are_the_frameworks_own_count(backend_name, backend):
    for (num_1x1, head), (in_channels, num_classes) in itertools.product(VARIANTS, [(1, 10), (3, 100)]):
        net = _model(backend, num_classes, in_channels, num_1x1, head)
        backend.summary(net, (1, in_channels, 67, 67))  # Gluon and Keras know their shapes after a first call
        found = resources((1, in_channels, 67, 67), num_classes, num_1x1=num_1x1, head=head)
        assert book.module(backend_name).num_params(net) == found["totals"]["params"], (num_1x1, head)


@pytest.mark.parametrize("name", TORCH)
def test_macs_are_pytorchs_flop_count(name):
    """PyTorch's FlopCounterMode counts 2 FLOPs per multiply-accumulate of each convolution, and nothing else here."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    backend = import_backend(name)
    for (num_1x1, head), shape in itertools.product(VARIANTS, [(1, 1, 224, 224), (2, 3, 101, 120)]):
        net = _model(backend, 10, shape[1], num_1x1, head).eval()
        counter = FlopCounterMode(display=False)
        with counter, torch.no_grad():
            net(torch.zeros(shape))
        counts = counter.get_flop_counts()["Global"]
        assert {str(op) for op in counts} == {"aten.convolution"}
        assert counter.get_total_flops() == resources(shape, 10, num_1x1=num_1x1, head=head)["totals"]["flops"]


@pytest.mark.parametrize("name", TORCH)
def test_training_memory_is_near_pytorchs_peak(name):
    """The estimate is within 30% of the peak of PyTorch's CPU allocator over one training step.

    Measured with ``torch.profiler.profile(profile_memory=True)``: every allocation and free of
    PyTorch's CPU allocator is an event with a signed size; their running sum, in time order, from
    before the model is built to after the SGD step, peaks at the step's memory (weights, gradients,
    image batch, saved activations, and the temporaries the estimate leaves out). Batch 8 at 224x224.
    """
    import torch
    from torch.profiler import ProfilerActivity, profile

    backend = import_backend(name)
    shape = (8, 1, 224, 224)
    torch.manual_seed(0)
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        net = backend.NiN()
        optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
        X, y = torch.rand(shape), torch.randint(0, 10, (shape[0],))
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(net(X), y).backward()
        optimizer.step()
    events = sorted((e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"),
                    key=lambda e: e.start_ns())
    assert events, "the profiler recorded no allocations"
    peak = max(itertools.accumulate(e.nbytes() for e in events))
    estimate = resources(shape)["totals"]["train_bytes"]
    assert abs(estimate - peak) <= 0.3 * peak, f"estimated {estimate:,} bytes, measured peak {peak:,}"
