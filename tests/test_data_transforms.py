"""Augmentations written in torch (no torchvision): exact small cases."""
import numpy as np
import pytest
import torch

from lmh_deploy.data import transforms as T


def test_random_crop_pads_with_zeros_and_keeps_content():
    x = torch.arange(1, 17, dtype=torch.uint8).reshape(1, 4, 4)
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        y = T.RandomCrop(4, 2)(x, g)
        assert y.shape == (1, 4, 4)
        # every non-zero pixel is an original value in the original relative order
        nz = y[y > 0]
        assert set(nz.tolist()) <= set(range(1, 17))
    crops = {tuple(T.RandomCrop(4, 2)(x, g).flatten().tolist()) for _ in range(200)}
    assert len(crops) == 25  # 5 x 5 offsets


def test_flip_and_cutout():
    x = torch.arange(6, dtype=torch.float32).reshape(1, 2, 3)
    assert torch.equal(T.RandomHorizontalFlip(1.0)(x), x.flip(-1))
    y = T.Cutout(2)(torch.ones(3, 8, 8), torch.Generator().manual_seed(1))
    zeros = (y == 0).all(0)
    assert 1 <= int(zeros.sum()) <= 4 and (y[:, zeros] == 0).all()
    frames = T.Cutout(4)(torch.ones(5, 2, 8, 8))
    assert ((frames == 0).sum(dim=(1, 2, 3)) == (frames[0] == 0).sum()).all()  # same square every frame


def test_autoaugment_ops_exact():
    img = torch.tensor([[[0, 100], [200, 255]]], dtype=torch.uint8)
    assert torch.equal(T.apply_op(img, "Invert", 0), 255 - img)
    assert torch.equal(T.apply_op(img, "Solarize", 128), torch.tensor([[[0, 100], [55, 0]]], dtype=torch.uint8))
    assert torch.equal(T.apply_op(img, "Posterize", 4), torch.tensor([[[0, 96], [192, 240]]], dtype=torch.uint8))
    assert torch.equal(T.apply_op(img, "Brightness", -0.5), torch.tensor([[[0, 50], [100, 128]]], dtype=torch.uint8))
    ac = T.apply_op(torch.tensor([[[50, 100], [150, 150]]], dtype=torch.uint8), "AutoContrast", 0)
    assert ac.min() == 0 and ac.max() == 255
    big = torch.arange(16, dtype=torch.uint8).reshape(1, 4, 4)
    tx = T.apply_op(big, "TranslateX", 1)  # shift right by one, fill 128
    assert torch.equal(tx[0, :, 1:], big[0, :, :-1]) and (tx[0, :, 0] == 128).all()
    rot = T.apply_op(big, "Rotate", 90)
    assert torch.equal(rot[0], torch.rot90(big[0], 1))  # counter-clockwise
    eq = T.apply_op(torch.tensor([[[10, 10, 20, 30]]], dtype=torch.uint8), "Equalize", 0)
    assert eq[0, 0, 0] < eq[0, 0, 2] < eq[0, 0, 3]
    assert T.magnitude("Posterize", 9, (32, 32)) == 4 and T.magnitude("Posterize", 0, (32, 32)) == 8
    assert T.magnitude("TranslateX", 9, (32, 32)) == pytest.approx(150 / 331 * 32)


@pytest.mark.parametrize("policy", ["cifar10", "imagenet"])
def test_autoaugment_policies_run(policy):
    assert len(T.POLICIES[policy]) == 25
    g = torch.Generator().manual_seed(0)
    img = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (3, 32, 32), dtype=np.uint8))
    aa = T.AutoAugment(policy)
    outs = [aa(img, g) for _ in range(60)]
    assert all(o.shape == img.shape and o.dtype == torch.uint8 for o in outs)
    assert sum(not torch.equal(o, img) for o in outs) > 20
    for sub in T.POLICIES[policy]:  # every op at its magnitude, both signs
        for name, _, b in sub:
            for sign in (1, -1):
                T.apply_op(img, name, sign * T.magnitude(name, b, (32, 32)))


def test_pipelines_and_nda():
    tf = T.image_train_transform("cifar10", 32)
    out = tf(torch.zeros(3, 32, 32, dtype=torch.uint8), torch.Generator().manual_seed(0))
    assert out.shape == (3, 32, 32) and out.dtype == torch.float32
    nda = T.NDA()
    g = torch.Generator().manual_seed(3)
    x = torch.rand(10, 2, 48, 48)
    for _ in range(6):
        y = nda(x, g)
        assert y.shape == x.shape and torch.isfinite(y).all()
    assert torch.allclose(T._affine_float(x, [[1, 0, 0], [0, 1, 0]]), x, atol=1e-5)
