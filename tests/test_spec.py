"""The framework-free description against values derived by hand from the book."""

import pytest

from nin import spec

# By hand, for a 1x224x224 image: conv 11/4 -> (224-11)//4+1 = 54; pool 3/2 -> 26;
# conv 5 pad 2 -> 26; pool -> 12; conv 3 pad 1 -> 12; pool -> 5; dropout 5; conv 3 pad 1 -> 5.
BOOK_SIZES = [54, 26, 26, 12, 12, 5, 5, 5, 1]
BOOK_CHANNELS = [96, 96, 256, 256, 384, 384, 384, 10, 10]
# k*k*in*out + out per convolution, then out*out + out for each of the two 1x1 convolutions.
BOOK_BLOCK_PARAMS = [
    11 * 11 * 1 * 96 + 96 + 2 * (96 * 96 + 96),          # 30,336
    5 * 5 * 96 * 256 + 256 + 2 * (256 * 256 + 256),     # 746,240
    3 * 3 * 256 * 384 + 384 + 2 * (384 * 384 + 384),    # 1,180,800
    3 * 3 * 384 * 10 + 10 + 2 * (10 * 10 + 10),         # 34,790
]


def test_book_model_shapes_at_224():
    rows = spec.layer_table((1, 1, 224, 224), num_classes=10)
    assert [r.kind for r in rows] == ["nin_block", "maxpool", "nin_block", "maxpool", "nin_block",
                                      "maxpool", "dropout", "nin_block", "global_avg_pool", "flatten"]
    assert [r.shape for r in rows[:-1]] == [(1, c, s, s) for c, s in zip(BOOK_CHANNELS, BOOK_SIZES, strict=True)]
    assert rows[-1].shape == (1, 10)


def test_book_model_parameters():
    assert BOOK_BLOCK_PARAMS == [30_336, 746_240, 1_180_800, 34_790]
    rows = spec.layer_table((1, 1, 224, 224), num_classes=10)
    assert [r.params for r in rows if r.kind == "nin_block"] == BOOK_BLOCK_PARAMS
    assert sum(r.params for r in rows if r.kind != "nin_block") == 0
    assert sum(r.params for r in rows) == 1_992_166
    assert spec.total_params(in_channels=1, num_classes=10) == 1_992_166


def test_parameters_scale_with_channels_and_classes():
    # Three input channels add 11*11*96*2 weights to the first convolution; 100 classes
    # change only the last block: 3*3*384*k + k + 2*(k*k + k).
    assert spec.total_params(3, 10) - spec.total_params(1, 10) == 11 * 11 * 96 * 2
    last = [3 * 3 * 384 * k + k + 2 * (k * k + k) for k in (10, 100)]
    assert spec.total_params(1, 100) - spec.total_params(1, 10) == last[1] - last[0]


def test_parameters_do_not_depend_on_image_size():
    counts = {sum(r.params for r in spec.layer_table((2, 3, s, s), 100)) for s in (67, 96, 101, 224)}
    assert counts == {spec.total_params(3, 100)}


def test_odd_and_rectangular_sizes():
    # 101 -> (101-11)//4+1 = 23 -> pool 11 -> 11 -> pool 5 -> 5 -> pool 2.
    rows = spec.layer_table((4, 3, 101, 150), num_classes=100)
    assert rows[0].shape == (4, 96, 23, 35)
    assert rows[5].shape == (4, 384, 2, 3)
    assert rows[-2].shape == (4, 100, 1, 1)
    assert rows[-1].shape == (4, 100)


def test_minimum_image_size_is_67():
    # 67 -> 15 -> 7 -> 7 -> 3 -> 3 -> 1; 66 -> 14 -> 6 -> 6 -> 2 -> 2 -> 0.
    assert spec.min_image_size() == 67
    assert spec.layer_table((1, 1, 67, 67))[5].shape == (1, 384, 1, 1)
    with pytest.raises(ValueError, match="66x67 are too small.*at least 67x67.*resize=224"):
        spec.layer_table((1, 1, 66, 67))


def test_fashion_mnist_size_is_refused_with_advice():
    with pytest.raises(ValueError) as err:
        spec.check_input_shape((128, 1, 28, 28))
    message = str(err.value)
    assert "28x28" in message and "67x67" in message and "resize=224" in message


@pytest.mark.parametrize("shape, match", [
    ((1, 1, 224), "N,C,H,W"),
    ((1, 0, 224, 224), "input shape C must be a positive integer, got 0"),
    ((1, 1, -5, 224), "input shape H must be a positive integer, got -5"),
    ((0, 1, 224, 224), "input shape N"),
    ((1, 1, 224.0, 224), "input shape H"),
])
def test_malformed_shapes_are_refused(shape, match):
    with pytest.raises(ValueError, match=match):
        spec.check_input_shape(shape)


@pytest.mark.parametrize("kwargs, match", [
    ({"num_classes": 0}, "num_classes must be a positive integer, got 0"),
    ({"num_classes": True}, "num_classes"),
    ({"dropout": 1.0}, r"dropout must be in \[0, 1\)"),
    ({"dropout": -0.1}, "dropout"),
])
def test_nonsense_model_arguments_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        spec.architecture(**kwargs)


def test_architecture_is_the_books():
    layers = spec.architecture()
    blocks = [(b.out_channels, b.kernel_size, b.strides, b.padding) for b in layers
              if isinstance(b, spec.NinBlock)]
    assert blocks == [(96, 11, 4, 0), (256, 5, 1, 2), (384, 3, 1, 1), (10, 3, 1, 1)]
    assert all(b.num_1x1 == 2 for b in layers if isinstance(b, spec.NinBlock))
    pools = [(p.pool_size, p.strides) for p in layers if isinstance(p, spec.MaxPool)]
    assert pools == [(3, 2)] * 3
    assert [d.rate for d in layers if isinstance(d, spec.Dropout)] == [0.5]
    assert tuple(layer.kind for layer in layers) == tuple(
        k for k in ("nin_block", "maxpool") * 3) + ("dropout", "nin_block", "global_avg_pool", "flatten")
    assert set(layer.kind for layer in layers) == set(spec.KINDS)


def test_one_1x1_per_block_has_1769112_parameters():
    # Each block loses one 1x1 convolution: c*c + c for c = 96, 256, 384, 10.
    dropped = sum(c * c + c for c in (96, 256, 384, 10))
    assert spec.total_params(num_1x1=1) == 1_992_166 - dropped == 1_769_112
    assert spec.total_params(num_1x1=0) == 1_992_166 - 2 * dropped


def test_gradual_head_narrows_by_one_factor():
    # 384 * (10/384)^(1/3) = 113.6 -> 114, 384 * (10/384)^(2/3) = 33.7 -> 34, then 10.
    last = [layer for layer in spec.architecture(head="gradual") if isinstance(layer, spec.NinBlock)][-1]
    assert last.channels == (114, 34, 10)
    assert last.params(384) == 3 * 3 * 384 * 114 + 114 + 114 * 34 + 34 + 34 * 10 + 10
    one = [layer for layer in spec.architecture(head="gradual", num_1x1=1) if isinstance(layer, spec.NinBlock)][-1]
    assert one.channels == (62, 10)  # 384 * (10/384)^(1/2) = 62.0
    assert [b.channels for b in spec.architecture(head="gradual", num_1x1=0) if b.kind == "nin_block"][-1] == (10,)
    rows = spec.layer_table((1, 1, 224, 224), head="gradual")
    assert rows[-3].shape == (1, 10, 5, 5) and rows[-1].shape == (1, 10)


@pytest.mark.parametrize("kwargs, match", [
    ({"num_1x1": 3}, "num_1x1 must be one of 0, 1, 2, got 3"),
    ({"head": "slow"}, "head must be one of one-step, gradual, got 'slow'"),
])
def test_unknown_variants_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        spec.architecture(**kwargs)


def test_block_channels():
    assert spec.block_channels(96) == (96, 96, 96)
    assert spec.block_channels(96, num_1x1=0) == (96,)
    assert spec.block_channels((114, 34, 10)) == (114, 34, 10)
    with pytest.raises(ValueError, match="num_1x1=1 has 2 convolutions, but 3 widths were given"):
        spec.block_channels((114, 34, 10), num_1x1=1)


def test_layer_kinds_are_the_architectures_in_order():
    for num_1x1 in spec.NUM_1X1_CHOICES:
        for head in spec.HEADS:
            assert spec.LAYER_KINDS == tuple(layer.kind for layer in spec.architecture(num_1x1=num_1x1, head=head))


def test_the_last_block_is_the_heads():
    assert spec.head_channels(10, 2, "one-step") == 10
    assert spec.head_channels(10, 2, "gradual") == (114, 34, 10)
    assert spec.head_channels(10, 0, "gradual") == (10,)
    assert spec.architecture(head="gradual")[7].channels == (114, 34, 10)
