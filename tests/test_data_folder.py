"""Tiny-ImageNet / ImageNet folder layouts fabricated with Pillow."""
import os

import numpy as np
import pytest
import torch
from PIL import Image

from lmh_deploy.data.base import DatasetError
from lmh_deploy.data.imagefolder import decode_image, folder_dataset, list_samples


def _img(path, seed, size=64):
    arr = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    Image.fromarray(arr).save(path, format="PNG" if path.endswith(".png") else "JPEG", quality=95)
    return arr


def _tiny(root, wnids=("n01", "n02", "n03"), per=2):
    os.makedirs(root)
    with open(os.path.join(root, "wnids.txt"), "w") as fh:
        fh.write("\n".join(wnids) + "\n")
    for i, w in enumerate(wnids):
        d = os.path.join(root, "train", w, "images")
        os.makedirs(d)
        for k in range(per):
            _img(os.path.join(d, f"{w}_{k}.JPEG"), 10 * i + k)
    os.makedirs(os.path.join(root, "val", "images"))
    lines = []
    for k, w in enumerate(reversed(wnids)):
        _img(os.path.join(root, "val", "images", f"val_{k}.JPEG"), 100 + k)
        lines.append(f"val_{k}.JPEG\t{w}\t0\t0\t63\t63")
    with open(os.path.join(root, "val", "val_annotations.txt"), "w") as fh:
        fh.write("\n".join(lines) + "\n")


def test_tiny_imagenet_layout(tmp_path):
    root = str(tmp_path / "tiny-imagenet-200")
    _tiny(root)
    tr, classes = list_samples(root, "tinyimagenet", True)
    assert classes == ["n01", "n02", "n03"] and len(tr) == 6
    assert [lab for _, lab in tr] == [0, 0, 1, 1, 2, 2]
    va, _ = list_samples(root, "tinyimagenet", False)
    assert [lab for _, lab in va] == [2, 1, 0]
    ds = folder_dataset(root, "tinyimagenet", train=True)
    x, y = ds[3]
    assert x.shape == (3, 64, 64) and x.dtype == torch.float32 and y == 1
    ev = folder_dataset(root, "tinyimagenet", train=False)
    assert ev[0][0].shape == (3, 64, 64)


def test_imagenet_layout_png_exact(tmp_path):
    root = tmp_path / "imagenet"
    arrs = {}
    for split in ("train", "val"):
        for w in ("n1", "n2"):
            d = root / split / w
            d.mkdir(parents=True)
            arrs[(split, w)] = _img(str(d / "a.png"), hash((split, w)) % 1000, size=40)
    samples, classes = list_samples(str(root), "imagenet", False)
    assert classes == ["n1", "n2"] and [lab for _, lab in samples] == [0, 1]
    got = decode_image(samples[1][0])
    np.testing.assert_array_equal(got.numpy().transpose(1, 2, 0), arrs[("val", "n2")])  # lossless PNG
    ds = folder_dataset(str(root), "imagenet", train=True, size=32)
    assert ds[0][0].shape == (3, 32, 32)
    assert folder_dataset(str(root), "imagenet", train=False, size=32)[0][0].shape == (3, 32, 32)


def test_missing_and_corrupt(tmp_path):
    with pytest.raises(DatasetError, match="no such directory"):
        list_samples(str(tmp_path / "none"), "imagenet", True)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="missing train/"):
        list_samples(str(tmp_path / "empty"), "imagenet", True)
    root = str(tmp_path / "tiny")
    _tiny(root)
    bad = os.path.join(root, "train", "n02", "images", "n02_1.JPEG")
    open(bad, "wb").write(b"\xff\xd8\xff\xe0 not really a jpeg")
    ds = folder_dataset(root, "tinyimagenet", train=True)
    with pytest.raises(DatasetError) as e:
        ds[3]
    assert "n02_1.JPEG: cannot decode" in str(e.value) and "\n" not in str(e.value)
    os.remove(os.path.join(root, "val", "images", "val_1.JPEG"))
    ev = folder_dataset(root, "tinyimagenet", train=False)
    with pytest.raises(DatasetError, match="val_1.JPEG: image file missing"):
        ev[1]
    with open(os.path.join(root, "val", "val_annotations.txt"), "a") as fh:
        fh.write("val_9.JPEG\tn99\n")
    with pytest.raises(DatasetError, match="val_annotations.txt:4"):
        list_samples(root, "tinyimagenet", False)
