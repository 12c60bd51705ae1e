"""Tiny-ImageNet (ImageNet-200) and ImageNet-1k from their folder layouts (no download).

Accepted layouts of ``root`` (``--data-dir``):

* **Tiny-ImageNet** (the official ``tiny-imagenet-200.zip`` extracted): ``wnids.txt``,
  ``train/<wnid>/images/*.JPEG`` and ``val/images/*.JPEG`` with ``val/val_annotations.txt``
  (``file<TAB>wnid<TAB>...`` per line). A ``val/<wnid>/*.JPEG`` tree also works.
* **ImageNet** (ILSVRC-2012 after the usual ``valprep`` step): ``train/<wnid>/*.JPEG`` and
  ``val/<wnid>/*.JPEG``.

Class indices are the sorted wnids of the train split. Images are decoded lazily with Pillow
(imported when needed; ``pip install pillow``), converted to RGB, and go through the transforms
of :mod:`lmh_deploy.data.transforms` as ``uint8 [3, H, W]``.
"""
from __future__ import annotations

import os

import numpy as np
import torch
from torch.utils.data import Dataset

from .base import DatasetError

IMG_EXT = (".jpeg", ".jpg", ".png", ".bmp", ".webp")


def _images_in(d: str) -> list[str]:
    return sorted(os.path.join(d, f) for f in os.listdir(d) if f.lower().endswith(IMG_EXT))


def _class_tree(split_dir: str, classes: list[str] | None = None):
    """``split_dir/<wnid>/[images/]*.JPEG`` -> (samples [(path, label)], classes)."""
    if classes is None:
        classes = sorted(e for e in os.listdir(split_dir) if os.path.isdir(os.path.join(split_dir, e)))
    if not classes:
        raise DatasetError(f"{split_dir}: no class folders <wnid>/ found; expected "
                           f"{split_dir}/<wnid>/*.JPEG")
    index = {c: i for i, c in enumerate(classes)}
    samples = []
    for c in classes:
        d = os.path.join(split_dir, c)
        if not os.path.isdir(d):
            continue
        if os.path.isdir(os.path.join(d, "images")):
            d = os.path.join(d, "images")
        samples += [(p, index[c]) for p in _images_in(d)]
    return samples, classes


def list_samples(root: str, name: str, train: bool):
    """-> (samples [(path, label)], classes [wnid])."""
    if not os.path.isdir(root):
        raise DatasetError(f"{root}: no such directory; point --data-dir at the extracted {name} "
                           f"folder (with train/ and val/)")
    train_dir = os.path.join(root, "train")
    if not os.path.isdir(train_dir):
        raise DatasetError(f"{root}: missing train/ folder; expected the {name} layout "
                           f"train/<wnid>/... and val/...")
    _, classes = _class_tree(train_dir)
    if name == "tinyimagenet":
        wnids = os.path.join(root, "wnids.txt")
        if os.path.isfile(wnids):
            with open(wnids) as fh:
                listed = sorted(w.strip() for w in fh if w.strip())
            if listed != classes:
                raise DatasetError(f"{wnids}: lists {len(listed)} classes but train/ has {len(classes)} "
                                   f"folders; the extraction is incomplete")
    if train:
        samples, _ = _class_tree(train_dir, classes)
    else:
        val = os.path.join(root, "val")
        ann = os.path.join(val, "val_annotations.txt")
        if os.path.isfile(ann):
            index = {c: i for i, c in enumerate(classes)}
            samples = []
            with open(ann) as fh:
                for ln, line in enumerate(fh, 1):
                    parts = line.strip().split("\t")
                    if not parts or not parts[0]:
                        continue
                    if len(parts) < 2 or parts[1] not in index:
                        raise DatasetError(f"{ann}:{ln}: expected 'file<TAB>wnid' with a wnid of train/, "
                                           f"got {line.strip()[:60]!r}")
                    samples.append((os.path.join(val, "images", parts[0]), index[parts[1]]))
        elif os.path.isdir(val):
            samples, _ = _class_tree(val, classes)
        else:
            raise DatasetError(f"{root}: missing val/ folder (val/<wnid>/*.JPEG or val/images + "
                               f"val/val_annotations.txt)")
    if not samples:
        raise DatasetError(f"{root}: no images found for the {'train' if train else 'val'} split")
    return samples, classes


def decode_image(path: str) -> torch.Tensor:
    """Decode one image file -> ``uint8 [3, H, W]``; a missing or corrupt file is a DatasetError."""
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover
        raise ImportError("reading image folders needs Pillow: pip install pillow") from None
    if not os.path.isfile(path):
        raise DatasetError(f"{path}: image file missing; re-extract the data set")
    try:
        with Image.open(path) as im:
            arr = np.asarray(im.convert("RGB"), dtype=np.uint8)
    except Exception as e:
        raise DatasetError(f"{path}: cannot decode image ({type(e).__name__}: {e}); replace or delete "
                           f"the file") from None
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))


class ImageFolderDataset(Dataset):
    """Lazily decoded images of a folder layout; ``transform(uint8 [3, H, W]) -> float``."""

    def __init__(self, samples, classes, transform):
        self.samples = list(samples)
        self.classes = list(classes)
        self.num_classes = len(classes)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i):
        path, label = self.samples[i]
        return self.transform(decode_image(path)), int(label)


def folder_dataset(root: str, name: str = "tinyimagenet", train: bool = True, size: int | None = None,
                   augment: bool = True, autoaugment: bool = True, cutout: int | None = None):
    """Tiny-ImageNet (64x64, RandomCrop(64, 4)) or ImageNet (224, RandomResizedCrop) data set."""
    from .transforms import image_eval_transform, image_train_transform

    if name not in ("tinyimagenet", "imagenet"):
        raise DatasetError(f"unknown folder data set {name!r}; choose tinyimagenet or imagenet")
    size = size or (64 if name == "tinyimagenet" else 224)
    samples, classes = list_samples(root, name, train)
    tf = (image_train_transform(name, size, autoaugment, cutout) if (train and augment)
          else image_eval_transform(name, size))
    if name == "tinyimagenet" and not (train and augment):
        from .transforms import Compose, Resize
        if size != 64:
            tf = Compose([Resize(size), tf])
    return ImageFolderDataset(samples, classes, tf)


def _load(name: str, root, seed: int = 0, size: int | None = None, augment: bool = True,
          autoaugment: bool = True, cutout: int | None = None, **_):
    from . import DataSplits

    if root is None:
        raise DatasetError(f"{name} needs --data-dir pointing at the extracted folder with train/ and "
                           f"val/ (no download here)")
    size = size or (64 if name == "tinyimagenet" else 224)
    train = folder_dataset(root, name, True, size, augment, autoaugment, cutout)
    test = folder_dataset(root, name, False, size)
    from .transforms import input_norm

    return DataSplits(name=name, train=train, test=test, num_classes=train.num_classes,
                      input_shape=(3, size, size), frames=False, input_quantum=2.0 ** -8,
                      input_bound=1.0, input_norm=input_norm(name))


def load_tinyimagenet(root=None, seed: int = 0, **options):
    """Registry loader (``get_dataset("tinyimagenet", root)``), 64 x 64, 200 classes."""
    return _load("tinyimagenet", root, seed, **options)


def load_imagenet(root=None, seed: int = 0, **options):
    """Registry loader (``get_dataset("imagenet", root)``), 224 x 224."""
    return _load("imagenet", root, seed, **options)
