"""Shared pieces of the file-format loaders: the error type and a tensor data set."""
from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset


from ..errors import DatasetError  # noqa: E402,F401 (the loaders import it from here)


class ArrayImageDataset(Dataset):
    """Images held in memory as ``uint8 [N, H, W, C]`` with int64 labels; ``transform`` gets a
    ``uint8 [C, H, W]`` tensor and returns the float tensor the model sees."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform, num_classes: int):
        if len(images) != len(labels):
            raise DatasetError(f"{len(images)} images but {len(labels)} labels")
        self.images = images
        self.labels = np.asarray(labels, dtype=np.int64)
        self.transform = transform
        self.num_classes = int(num_classes)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i):
        img = torch.from_numpy(np.ascontiguousarray(self.images[i].transpose(2, 0, 1)))
        return self.transform(img), int(self.labels[i])
