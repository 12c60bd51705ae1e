"""Data sets by name: ``get_dataset(name, root=None, seed=0) -> DataSplits``.

Every loader returns a :class:`DataSplits`: a train and a test :class:`torch.utils.data.Dataset`
yielding ``(x, label)`` pairs, plus the metadata the model config needs (``num_classes``,
``input_shape`` = the shape of one sample *per step*, ``frames``).

* ``frames=False``: a sample is a static image ``[C, H, W]``; the model presents it at every step
  (direct encoding).
* ``frames=True``: a sample is an event-frame sequence ``[T, C, H, W]``; the training loop turns a
  batch ``[B, T, C, H, W]`` into the package's time-major ``[T, B, C, H, W]``.

To add a data set, write ``lmh_deploy/data/<name>.py`` with a function
``load(root: str | None, seed: int, **options) -> DataSplits`` and add one line to
:data:`LOADERS` (``"name": "lmh_deploy.data.<module>:<function>"``). Loaders are imported only when
chosen, so heavy optional dependencies (torchvision, tonic, ...) stay optional.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass

from torch.utils.data import Dataset

#: name -> "module:function" of its loader. Constant table: extend it by editing this file.
LOADERS: dict[str, str] = {
    "digits": "lmh_deploy.data.digits:load_digits",
    "mnist5k": "lmh_deploy.data.mnist5k:load_mnist5k",
    "mnist5k-14": "lmh_deploy.data.mnist5k:load_mnist5k_14",
    "cifar10": "lmh_deploy.data.cifar:load_cifar10",
    "cifar100": "lmh_deploy.data.cifar:load_cifar100",
    "tinyimagenet": "lmh_deploy.data.imagefolder:load_tinyimagenet",
    "imagenet": "lmh_deploy.data.imagefolder:load_imagenet",
    "dvscifar10": "lmh_deploy.data.dvs:load_dvscifar10",
}

DATASET_NAMES = tuple(LOADERS)


from ..errors import UnknownDatasetError  # noqa: E402,F401


@dataclass(frozen=True)
class DataSplits:
    """A data set's two splits and what a model needs to know about its samples."""

    name: str
    train: Dataset
    test: Dataset
    num_classes: int
    input_shape: tuple  # one sample per step, e.g. (1, 8, 8)
    frames: bool = False  # True: samples are [T, *input_shape] event frames
    # The input grid a deployed model rounds its input to (a power of two) and the largest input
    # magnitude: every sample of the set is exactly representable on it (digits: k/16 in [0, 1]).
    # None: the fold's defaults (2**-8, 8.0). See lmh_deploy.graph.schema.
    input_quantum: float | None = None
    input_bound: float | None = None
    # Normalized 8-bit images x = (p / scale - mean_c) / std_c: {"mean": [C], "std": [C],
    # "scale": 255}. The fold then deploys the raw pixels (p - round(scale mean_c)) / 256 (exact on
    # the grid 2**-8, bound 1) and folds the normalization into the first layer.
    input_norm: dict | None = None


def get_dataset(name: str, root: str | None = None, seed: int = 0, **options) -> DataSplits:
    """Load data set ``name`` (see :data:`DATASET_NAMES`); ``root`` is where downloadable sets
    live (ignored by bundled ones such as digits); ``seed`` is for loaders that draw a split."""
    if name not in LOADERS:
        raise UnknownDatasetError(
            f"unknown dataset {name!r}; choose one of {', '.join(DATASET_NAMES)}")
    module, func = LOADERS[name].split(":")
    return getattr(importlib.import_module(module), func)(root=root, seed=seed, **options)


__all__ = ["DATASET_NAMES", "DataSplits", "LOADERS", "UnknownDatasetError", "get_dataset"]
