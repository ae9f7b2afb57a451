"""nin.data: reading and checking Fashion-MNIST's IDX files, with no network.

Every test writes small synthetic IDX files in ``tmp_path`` (downloading them: ``tests/test_download.py``).
One test reads the real files, found as a user's run finds them (the ``real_data`` fixture).
"""

from __future__ import annotations

import gzip
import urllib.error
import urllib.request

import numpy as np
import pytest

from fakedata import check_loaded, idx, images, labels, make_set, write
from nin import data


@pytest.fixture(autouse=True)
def no_network(monkeypatch, tmp_path):
    """No test touches the network, the user's ``NIN_DATA`` or the user's cache."""
    def refuse(url, *args, **kwargs):
        raise AssertionError(f"a test tried to open {url}")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    monkeypatch.delenv("NIN_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))


@pytest.mark.parametrize("gz", [True, False], ids=["gz", "raw"])
def test_good_set_loads(tmp_path, gz):
    arrays = make_set(tmp_path, gz=gz)
    check_loaded(data.load_fashion_mnist(tmp_path, download=False), arrays)


def test_gzip_is_detected_by_magic_not_suffix(tmp_path):
    x = images(3)
    (tmp_path / "a").write_bytes(gzip.compress(idx(x)))
    (tmp_path / "b.gz").write_bytes(idx(x))
    for name in ("a", "b.gz"):
        np.testing.assert_array_equal(data.read_idx(tmp_path / name), x)


def test_gz_is_preferred_when_both_exist(tmp_path):
    arrays = make_set(tmp_path, gz=True)
    make_set(tmp_path, gz=False, seed=100)
    check_loaded(data.load_fashion_mnist(tmp_path, download=False), arrays)


def test_read_idx_returns_writable_arrays(tmp_path):
    y = labels(5)
    path = write(tmp_path / "labels", idx(y), gz=True)
    got = data.read_idx(path)
    got[0] = 1
    assert got.shape == (5,) and got.dtype == np.uint8 and got[0] == 1


@pytest.mark.parametrize("gz", [True, False], ids=["gz", "raw"])
def test_truncated_file(tmp_path, gz):
    path = write(tmp_path / "train-images-idx3-ubyte", idx(images(2))[:-10], gz)
    with pytest.raises(data.DataError) as err:
        data.read_idx(path)
    message = str(err.value)
    assert str(path.resolve()) in message and "truncated" in message
    assert f"means {16 + 2 * 784} bytes, found {16 + 2 * 784 - 10}" in message


def test_trailing_garbage(tmp_path):
    path = write(tmp_path / "train-labels-idx1-ubyte", idx(labels(3)) + b"junk", gz=False)
    with pytest.raises(data.DataError, match=f"trailing bytes.*means {8 + 3} bytes, found {8 + 3 + 4}") as err:
        data.read_idx(path)
    assert str(path.resolve()) in str(err.value)


@pytest.mark.parametrize("magic", [0x0802, 0x0901, 0x0D03, 0x12345678])
def test_wrong_magic(tmp_path, magic):
    path = write(tmp_path / "train-images-idx3-ubyte", idx(images(2), magic=magic), gz=True)
    with pytest.raises(data.DataError) as err:
        data.read_idx(path)
    message = str(err.value)
    assert str(path.resolve()) in message
    assert f"magic number 0x{magic:08x} is not 0x00000803 (images) or 0x00000801 (labels)" in message


def test_header_too_short(tmp_path):
    path = write(tmp_path / "file", b"\x00\x00", gz=False)
    with pytest.raises(data.DataError, match="2 bytes is too short for an IDX header"):
        data.read_idx(path)


def test_wrong_image_size(tmp_path):
    path = write(tmp_path / "train-images-idx3-ubyte", idx(images(2, size=(27, 28))), gz=True)
    with pytest.raises(data.DataError, match="images are 27x28, Fashion-MNIST's are 28x28") as err:
        data.read_idx(path)
    assert str(path.resolve()) in str(err.value)


def test_zero_items(tmp_path):
    path = write(tmp_path / "labels", idx(np.zeros(0, np.uint8)), gz=False)
    with pytest.raises(data.DataError, match="holds 0 items"):
        data.read_idx(path)


def test_mismatched_counts(tmp_path):
    make_set(tmp_path)
    labels_path = write(tmp_path / "t10k-labels-idx1-ubyte", idx(labels(5)), gz=True)
    with pytest.raises(data.DataError) as err:
        data.load_fashion_mnist(tmp_path, download=False)
    message = str(err.value)
    images_path = (tmp_path / "t10k-images-idx3-ubyte.gz").resolve()
    assert f"{images_path} holds 4 images but {labels_path.resolve()} holds 5 labels" in message


def test_images_and_labels_swapped(tmp_path):
    arrays = make_set(tmp_path)
    path = write(tmp_path / "train-labels-idx1-ubyte", idx(arrays["train-images-idx3-ubyte"]), gz=True)
    with pytest.raises(data.DataError, match="holds images, expected labels") as err:
        data.load_fashion_mnist(tmp_path, download=False)
    assert str(path.resolve()) in str(err.value)


def test_labels_out_of_range(tmp_path):
    y = labels(4)
    y[2] = 10
    path = write(tmp_path / "train-labels-idx1-ubyte", idx(y), gz=True)
    with pytest.raises(data.DataError, match=r"label 10 at index 2 is not a class \(0..9\)") as err:
        data.read_idx(path)
    assert str(path.resolve()) in str(err.value)


@pytest.mark.parametrize("damage", ["flipped", "cut", "garbage"])
def test_corrupt_gzip(tmp_path, damage):
    packed = bytearray(gzip.compress(idx(images(2))))
    if damage == "flipped":
        packed[20:40] = bytes(20)
    elif damage == "cut":
        packed = packed[: len(packed) // 2]
    else:
        packed += b"not gzip"
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(bytes(packed))
    with pytest.raises(data.DataError, match="corrupt gzip data") as err:
        data.read_idx(path)
    assert str(path.resolve()) in str(err.value)


def test_unreadable_path(tmp_path):
    with pytest.raises(data.DataError, match="cannot read it"):
        data.read_idx(tmp_path / "nothing-here")


def test_data_dir_precedence(tmp_path, monkeypatch):
    env_dir, root_dir = tmp_path / "env", tmp_path / "root"
    assert data.data_dir() == tmp_path / "xdg-cache" / "nin" / "fashion-mnist"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert data.data_dir() == tmp_path / "home" / ".cache" / "nin" / "fashion-mnist"
    monkeypatch.setenv("NIN_DATA", str(env_dir))
    assert data.data_dir() == env_dir
    assert data.data_dir(root_dir) == root_dir
    assert data.data_dir(str(root_dir)) == root_dir


def test_nin_data_and_root_are_used_by_load(tmp_path, monkeypatch):
    env_arrays = make_set(tmp_path / "env", seed=1)
    root_arrays = make_set(tmp_path / "root", gz=False, seed=2)
    monkeypatch.setenv("NIN_DATA", str(tmp_path / "env"))
    check_loaded(data.load_fashion_mnist(download=False), env_arrays)
    check_loaded(data.load_fashion_mnist(tmp_path / "root", download=False), root_arrays)


def test_missing_files_without_download(tmp_path):
    make_set(tmp_path)
    (tmp_path / "train-labels-idx1-ubyte.gz").unlink()
    (tmp_path / "t10k-images-idx3-ubyte.gz").unlink()
    with pytest.raises(data.DataError) as err:
        data.load_fashion_mnist(tmp_path, download=False)
    message = str(err.value)
    assert f"missing in {tmp_path.resolve()}: train-labels-idx1-ubyte[.gz], t10k-images-idx3-ubyte[.gz]. " in message
    assert "train-images" not in message and "t10k-labels" not in message and "\n" not in message
    assert "NIN_DATA" in message and "Downloading is turned off." in message
    assert (err.value.directory, err.value.names) == (tmp_path.resolve(), ["train-labels-idx1-ubyte",
                                                                            "t10k-images-idx3-ubyte"])


def test_missing_directory_without_download(tmp_path):
    with pytest.raises(data.DataError, match="missing in .*nowhere: train-images-idx3-ubyte") as err:
        data.load_fashion_mnist(tmp_path / "nowhere", download=False)
    assert all(name in str(err.value) for name in data.NAMES)
    assert not (tmp_path / "nowhere").exists()


def test_real_fashion_mnist(real_data):
    (x_train, y_train), (x_test, y_test) = data.load_fashion_mnist(real_data, download=False)
    assert x_train.shape == (60000, 28, 28) and y_train.shape == (60000,)
    assert x_test.shape == (10000, 28, 28) and y_test.shape == (10000,)
    assert {a.dtype for a in (x_train, y_train, x_test, y_test)} == {np.dtype(np.uint8)}
    assert np.bincount(y_train, minlength=10).tolist() == [6000] * 10
    assert np.bincount(y_test, minlength=10).tolist() == [1000] * 10
    assert y_train[:10].tolist() == [9, 0, 0, 3, 0, 2, 7, 2, 5, 5]
    assert y_test[:10].tolist() == [9, 2, 1, 1, 6, 1, 4, 6, 5, 7]
    assert x_train.min() == 0 and x_train.max() == 255
    assert abs(x_train.mean() / 255 - 0.2860) < 0.001  # Fashion-MNIST's well-known mean
