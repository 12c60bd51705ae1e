"""scikit-learn's bundled 8x8 digits (1,797 images, no download) as a fixed stratified split.

Inputs are the raw pixel values 0..16 divided by 16, so every input is exactly representable
in float32 (k/16); shape ``[1, 8, 8]``. The split is fixed (360 test images, stratified by class,
``random_state=0``) and does not depend on the training seed, so accuracies are comparable across
runs.
"""
from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import TensorDataset

from . import DataSplits

TEST_SIZE = 360
SPLIT_SEED = 0


def digits_arrays() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_train [1437,1,8,8] float32, y_train int64, x_test [360,1,8,8], y_test): x = pixel/16."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    x = (data.data.astype(np.float32) / np.float32(16.0)).reshape(-1, 1, 8, 8)
    y = data.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=TEST_SIZE, stratify=y,
                                              random_state=SPLIT_SEED)
    return x_tr, y_tr, x_te, y_te


def load_digits(root: str | None = None, seed: int = 0) -> DataSplits:
    """The digits split as in-memory tensors (``root`` and ``seed`` are unused: bundled, fixed)."""
    x_tr, y_tr, x_te, y_te = digits_arrays()
    return DataSplits(
        name="digits",
        train=TensorDataset(torch.from_numpy(x_tr), torch.from_numpy(y_tr)),
        test=TensorDataset(torch.from_numpy(x_te), torch.from_numpy(y_te)),
        num_classes=10,
        input_shape=(1, 8, 8),
        input_quantum=1 / 16,  # pixels are k/16, k = 0..16: exact on the deployed input grid
        input_bound=1.0,
    )
