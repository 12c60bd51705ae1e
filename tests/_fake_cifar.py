"""A tiny CIFAR-10 archive in the official pickle layout (``cifar-10-batches-py``): ``n_train``
images in each of the five training batches and ``n_test`` in ``test_batch``, seeded."""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np


def write_fake_cifar10(root, n_train: int = 4, n_test: int = 6, seed: int = 0) -> Path:
    """Write ``root/cifar-10-batches-py/{data_batch_1..5,test_batch}``; return ``root``."""
    d = Path(root) / "cifar-10-batches-py"
    d.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for f in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        n = n_test if f == "test_batch" else n_train
        batch = {b"batch_label": b"fake", b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                 b"labels": [int(v) for v in rng.integers(0, 10, n)]}
        (d / f).write_bytes(pickle.dumps(batch, protocol=2))
    return Path(root)
