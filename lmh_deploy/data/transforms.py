"""Image and event-frame augmentations of the papers, in torch only (no torchvision).

Images travel through the pipeline as ``uint8`` tensors ``[C, H, W]`` until :class:`ToFloat`
turns them into normalized float32; :class:`Cutout` then works on the float tensor. Every
random transform takes a ``torch.Generator`` (``gen``) so a data-loader worker can be seeded.

* :class:`RandomCrop`       -- zero-pad by ``padding`` then crop ``size`` x ``size`` at a random place.
* :class:`RandomHorizontalFlip` -- ``x[..., ::-1]`` with probability p.
* :class:`AutoAugment`      -- the CIFAR-10 and ImageNet policies of Cubuk et al. (2019):
  one of 25 sub-policies, each two (op, probability, magnitude-bin) triples, 10 bins.
* :class:`Cutout`           -- DeVries & Taylor (2017): zero one ``length`` x ``length`` square
  whose centre is uniform over the image (clipped at the borders).
* :class:`NDA`              -- neuromorphic data augmentation for event frames ``[T, C, H, W]``
  (Li et al., 2022): flip, then one of roll (+-5 px) / rotate (+-15 deg) / shear (+-30 deg),
  the same for every frame, then Cutout.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

# per-dataset normalization (mean, std) and the Cutout side length used by the papers' code.
# The means are the papers' values rounded to whole pixel values k/255 (a change of < 0.5/255):
# the value the normalization maps to 0 is then the pixel k itself, so the deployed graph takes
# raw pixels (p - k)/256 exactly and the zero padding of the normalized image is u = 0
# (lmh_deploy.fold, DataSplits.input_norm). Papers' means (255 x): cifar10 125.3 123.0 113.9,
# cifar100 129.3 124.1 112.4, tinyimagenet 122.5 114.3 101.4, imagenet 123.7 116.3 103.5.
MEAN_STD = {
    "cifar10": ((125 / 255, 123 / 255, 114 / 255), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((129 / 255, 124 / 255, 112 / 255), (0.2673, 0.2564, 0.2762)),
    "tinyimagenet": ((122 / 255, 114 / 255, 101 / 255), (0.2770, 0.2691, 0.2821)),
    "imagenet": ((124 / 255, 116 / 255, 104 / 255), (0.229, 0.224, 0.225)),
}


def input_norm(dataset: str) -> dict:
    """The :attr:`DataSplits.input_norm` of a normalized image data set (see :data:`MEAN_STD`)."""
    mean, std = MEAN_STD[dataset]
    return {"mean": [float(v) for v in mean], "std": [float(v) for v in std], "scale": 255.0}


CUTOUT_LENGTH = {"cifar10": 16, "cifar100": 8, "tinyimagenet": 16, "imagenet": 56, "dvscifar10": 12}


def _rand(gen) -> float:
    return float(torch.rand((), generator=gen))


def _randint(lo: int, hi: int, gen) -> int:
    """Uniform integer in [lo, hi] (inclusive)."""
    return int(torch.randint(lo, hi + 1, (), generator=gen))


class Compose:
    def __init__(self, transforms):
        self.transforms = list(transforms)

    def __call__(self, x, gen=None):
        for t in self.transforms:
            x = t(x, gen)
        return x


class RandomCrop:
    """Pad with zeros by ``padding`` on every side, then crop ``size`` at a uniform offset."""

    def __init__(self, size: int, padding: int = 4):
        self.size, self.padding = int(size), int(padding)

    def __call__(self, x, gen=None):
        p = self.padding
        if p:
            x = F.pad(x, (p, p, p, p))
        h, w = x.shape[-2:]
        i, j = _randint(0, h - self.size, gen), _randint(0, w - self.size, gen)
        return x[..., i:i + self.size, j:j + self.size]


class RandomResizedCrop:
    """ImageNet-style crop: area fraction in ``scale``, aspect ratio log-uniform in ``ratio``,
    resized bilinearly to ``size`` (falls back to a centre crop after 10 tries)."""

    def __init__(self, size: int, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)):
        self.size, self.scale, self.ratio = int(size), scale, ratio

    def __call__(self, x, gen=None):
        h, w = x.shape[-2:]
        for _ in range(10):
            area = h * w * (self.scale[0] + _rand(gen) * (self.scale[1] - self.scale[0]))
            logr = math.log(self.ratio[0]) + _rand(gen) * (math.log(self.ratio[1]) - math.log(self.ratio[0]))
            ar = math.exp(logr)
            cw, ch = int(round(math.sqrt(area * ar))), int(round(math.sqrt(area / ar)))
            if 0 < cw <= w and 0 < ch <= h:
                i, j = _randint(0, h - ch, gen), _randint(0, w - cw, gen)
                return resize(x[..., i:i + ch, j:j + cw], self.size, square=True)
        return CenterCrop(self.size)(resize(x, self.size), gen)


def resize(x, size: int, square: bool = False):
    """Bilinear (antialiased) resize of ``[C, H, W]`` (any dtype): to ``size`` x ``size`` when
    ``square`` or the input is square, else so that the shorter side equals ``size``."""
    dtype = x.dtype
    h, w = x.shape[-2:]
    if square or h == w:
        out_hw = (size, size)
    else:
        s = size / min(h, w)
        out_hw = (max(size, int(round(h * s))), max(size, int(round(w * s))))
    y = F.interpolate(x.float().unsqueeze(0), size=out_hw, mode="bilinear", align_corners=False,
                      antialias=True)[0]
    return y.round().clamp(0, 255).to(dtype) if dtype == torch.uint8 else y.to(dtype)


class Resize:
    def __init__(self, size: int):
        self.size = int(size)

    def __call__(self, x, gen=None):
        return resize(x, self.size)


class CenterCrop:
    def __init__(self, size: int):
        self.size = int(size)

    def __call__(self, x, gen=None):
        h, w = x.shape[-2:]
        i, j = (h - self.size) // 2, (w - self.size) // 2
        return x[..., i:i + self.size, j:j + self.size]


class RandomHorizontalFlip:
    def __init__(self, p: float = 0.5):
        self.p = p

    def __call__(self, x, gen=None):
        return x.flip(-1) if _rand(gen) < self.p else x


class ToFloat:
    """``uint8 [C, H, W]`` -> ``(x / 255 - mean) / std`` float32."""

    def __init__(self, mean, std):
        self.mean = torch.tensor(mean, dtype=torch.float32).reshape(-1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).reshape(-1, 1, 1)

    def __call__(self, x, gen=None):
        return (x.float() / 255.0 - self.mean) / self.std


class Cutout:
    """Zero a ``length`` x ``length`` square centred at a uniform pixel (clipped at the edges),
    on every channel (and every frame of a ``[T, C, H, W]`` input)."""

    def __init__(self, length: int):
        self.length = int(length)

    def __call__(self, x, gen=None):
        if self.length <= 0:
            return x
        h, w = x.shape[-2:]
        cy, cx = _randint(0, h - 1, gen), _randint(0, w - 1, gen)
        y0, y1 = max(0, cy - self.length // 2), min(h, cy + self.length // 2)
        x0, x1 = max(0, cx - self.length // 2), min(w, cx + self.length // 2)
        x = x.clone()
        x[..., y0:y1, x0:x1] = 0
        return x


# ---------------------------------------------------------------------------------------------
# AutoAugment (Cubuk et al., 2019) on uint8 [C, H, W]
# ---------------------------------------------------------------------------------------------


def _affine(img, matrix, fill=128):
    """Apply the inverse-mapping affine ``matrix`` (2x3, pixel coordinates about the image
    centre: output pixel p samples input at ``A p + b``) with nearest sampling and ``fill``."""
    c, h, w = img.shape
    a = torch.tensor(matrix, dtype=torch.float32)
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32),
                            indexing="ij")
    cx, cy = (w - 1) / 2, (h - 1) / 2
    px, py = xs - cx, ys - cy
    sx = a[0, 0] * px + a[0, 1] * py + a[0, 2] + cx
    sy = a[1, 0] * px + a[1, 1] * py + a[1, 2] + cy
    ix, iy = torch.round(sx).long(), torch.round(sy).long()
    valid = (ix >= 0) & (ix < w) & (iy >= 0) & (iy < h)
    out = torch.full_like(img, fill)
    out[:, valid] = img[:, iy[valid], ix[valid]]
    return out


def _blend(img, degenerate, factor):
    """PIL ImageEnhance: ``degenerate + factor * (img - degenerate)``, clipped to 0..255."""
    return (degenerate.float() + factor * (img.float() - degenerate.float())).clamp(0, 255).round().to(torch.uint8)


def _gray(img):
    if img.shape[0] == 1:
        return img.float()
    r, g, b = img[0].float(), img[1].float(), img[2].float()
    return (0.299 * r + 0.587 * g + 0.114 * b).unsqueeze(0)


def _equalize_channel(ch):
    hist = torch.bincount(ch.flatten().long(), minlength=256)
    nz = hist[hist > 0]
    if nz.numel() <= 1:
        return ch
    step = (hist.sum() - nz[-1]) // 255
    if step == 0:
        return ch
    lut = (torch.cumsum(hist, 0) + step // 2) // step
    lut = torch.cat([torch.zeros(1, dtype=lut.dtype), lut[:-1]]).clamp(0, 255)
    return lut[ch.long()].to(torch.uint8)


def _autocontrast(img):
    out = []
    for ch in img:
        lo, hi = ch.min().float(), ch.max().float()
        if hi <= lo:
            out.append(ch)
        else:
            out.append(((ch.float() - lo) * (255.0 / (hi - lo))).clamp(0, 255).round().to(torch.uint8))
    return torch.stack(out)


def _sharpness(img, factor):
    k = torch.tensor([[1, 1, 1], [1, 5, 1], [1, 1, 1]], dtype=torch.float32) / 13.0
    c = img.shape[0]
    blurred = F.conv2d(img.float().unsqueeze(1), k.reshape(1, 1, 3, 3), padding=1).squeeze(1)
    blurred = blurred.round().clamp(0, 255)
    degenerate = img.float().clone()
    degenerate[:, 1:-1, 1:-1] = blurred[:, 1:-1, 1:-1]  # borders unchanged, as in PIL
    return _blend(img, degenerate.expand(c, -1, -1), factor)


def apply_op(img, name: str, mag: float):
    """One AutoAugment operation on ``uint8 [C, H, W]`` with a signed magnitude ``mag``."""
    h, w = img.shape[-2:]
    if name == "ShearX":
        return _affine(img, [[1, mag, 0], [0, 1, 0]])
    if name == "ShearY":
        return _affine(img, [[1, 0, 0], [mag, 1, 0]])
    if name == "TranslateX":
        return _affine(img, [[1, 0, -mag], [0, 1, 0]])
    if name == "TranslateY":
        return _affine(img, [[1, 0, 0], [0, 1, -mag]])
    if name == "Rotate":  # counter-clockwise by mag degrees
        r = math.radians(mag)
        return _affine(img, [[math.cos(r), -math.sin(r), 0], [math.sin(r), math.cos(r), 0]])
    if name == "Brightness":
        return _blend(img, torch.zeros_like(img), 1.0 + mag)
    if name == "Color":
        return _blend(img, _gray(img).expand_as(img), 1.0 + mag)
    if name == "Contrast":
        mean = _gray(img).mean().round()
        return _blend(img, torch.full_like(img, int(mean)), 1.0 + mag)
    if name == "Sharpness":
        return _sharpness(img, 1.0 + mag)
    if name == "Posterize":
        shift = 8 - int(mag)
        return ((img >> shift) << shift).to(torch.uint8)
    if name == "Solarize":
        return torch.where(img >= int(mag), 255 - img, img)
    if name == "AutoContrast":
        return _autocontrast(img)
    if name == "Equalize":
        return torch.stack([_equalize_channel(ch) for ch in img])
    if name == "Invert":
        return 255 - img
    raise ValueError(f"unknown AutoAugment op {name!r}")


_SIGNED = {"ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate", "Brightness", "Color",
           "Contrast", "Sharpness"}


def magnitude(name: str, bin_: int | None, size: tuple) -> float:
    """The magnitude of bin ``bin_`` (0..9) for an op on an image of size (H, W)."""
    if bin_ is None:
        return 0.0
    f = bin_ / 9.0
    if name in ("ShearX", "ShearY"):
        return 0.3 * f
    if name == "TranslateX":
        return 150.0 / 331.0 * size[1] * f
    if name == "TranslateY":
        return 150.0 / 331.0 * size[0] * f
    if name == "Rotate":
        return 30.0 * f
    if name in ("Brightness", "Color", "Contrast", "Sharpness"):
        return 0.9 * f
    if name == "Posterize":
        return 8 - round(bin_ / 2.25)
    if name == "Solarize":
        return 255.0 * (1.0 - f)
    return 0.0


POLICIES = {
    "cifar10": [
        (("Invert", 0.1, None), ("Contrast", 0.2, 6)), (("Rotate", 0.7, 2), ("TranslateX", 0.3, 9)),
        (("Sharpness", 0.8, 1), ("Sharpness", 0.9, 3)), (("ShearY", 0.5, 8), ("TranslateY", 0.7, 9)),
        (("AutoContrast", 0.5, None), ("Equalize", 0.9, None)), (("ShearY", 0.2, 7), ("Posterize", 0.3, 7)),
        (("Color", 0.4, 3), ("Brightness", 0.6, 7)), (("Sharpness", 0.3, 9), ("Brightness", 0.7, 9)),
        (("Equalize", 0.6, None), ("Equalize", 0.5, None)), (("Contrast", 0.6, 7), ("Sharpness", 0.6, 5)),
        (("Color", 0.7, 7), ("TranslateX", 0.5, 8)), (("Equalize", 0.3, None), ("AutoContrast", 0.4, None)),
        (("TranslateY", 0.4, 3), ("Sharpness", 0.2, 6)), (("Brightness", 0.9, 6), ("Color", 0.2, 8)),
        (("Solarize", 0.5, 2), ("Invert", 0.0, None)), (("Equalize", 0.2, None), ("AutoContrast", 0.6, None)),
        (("Equalize", 0.2, None), ("Equalize", 0.6, None)), (("Color", 0.9, 9), ("Equalize", 0.6, None)),
        (("AutoContrast", 0.8, None), ("Solarize", 0.2, 8)), (("Brightness", 0.1, 3), ("Color", 0.7, 0)),
        (("Solarize", 0.4, 5), ("AutoContrast", 0.9, None)), (("TranslateY", 0.9, 9), ("TranslateY", 0.7, 9)),
        (("AutoContrast", 0.9, None), ("Solarize", 0.8, 3)), (("Equalize", 0.8, None), ("Invert", 0.1, None)),
        (("TranslateY", 0.7, 9), ("AutoContrast", 0.9, None)),
    ],
    "imagenet": [
        (("Posterize", 0.4, 8), ("Rotate", 0.6, 9)), (("Solarize", 0.6, 5), ("AutoContrast", 0.6, None)),
        (("Equalize", 0.8, None), ("Equalize", 0.6, None)), (("Posterize", 0.6, 7), ("Posterize", 0.6, 6)),
        (("Equalize", 0.4, None), ("Solarize", 0.2, 4)), (("Equalize", 0.4, None), ("Rotate", 0.8, 8)),
        (("Solarize", 0.6, 3), ("Equalize", 0.6, None)), (("Posterize", 0.8, 5), ("Equalize", 1.0, None)),
        (("Rotate", 0.2, 3), ("Solarize", 0.6, 8)), (("Equalize", 0.6, None), ("Posterize", 0.4, 6)),
        (("Rotate", 0.8, 8), ("Color", 0.4, 0)), (("Rotate", 0.4, 9), ("Equalize", 0.6, None)),
        (("Equalize", 0.0, None), ("Equalize", 0.8, None)), (("Invert", 0.6, None), ("Equalize", 1.0, None)),
        (("Color", 0.6, 4), ("Contrast", 1.0, 8)), (("Rotate", 0.8, 8), ("Color", 1.0, 2)),
        (("Color", 0.8, 8), ("Solarize", 0.8, 7)), (("Sharpness", 0.4, 7), ("Invert", 0.6, None)),
        (("ShearX", 0.6, 5), ("Equalize", 1.0, None)), (("Color", 0.4, 0), ("Equalize", 0.6, None)),
        (("Equalize", 0.4, None), ("Solarize", 0.2, 4)), (("Solarize", 0.6, 5), ("AutoContrast", 0.6, None)),
        (("Invert", 0.6, None), ("Equalize", 1.0, None)), (("Color", 0.6, 4), ("Contrast", 1.0, 8)),
        (("Equalize", 0.8, None), ("Equalize", 0.6, None)),
    ],
}


class AutoAugment:
    """Pick one of the policy's 25 sub-policies uniformly; apply each of its two ops with its
    probability; signed ops get a random sign (p = 1/2)."""

    def __init__(self, policy: str = "cifar10"):
        if policy not in POLICIES:
            raise ValueError(f"unknown AutoAugment policy {policy!r}; choose one of {', '.join(POLICIES)}")
        self.policy = POLICIES[policy]

    def __call__(self, img, gen=None):
        if img.dtype != torch.uint8:
            raise TypeError("AutoAugment works on uint8 [C, H, W] images; apply it before ToFloat")
        sub = self.policy[_randint(0, len(self.policy) - 1, gen)]
        for name, prob, bin_ in sub:
            if _rand(gen) < prob:
                mag = magnitude(name, bin_, tuple(img.shape[-2:]))
                if name in _SIGNED and _rand(gen) < 0.5:
                    mag = -mag
                img = apply_op(img, name, mag)
        return img


# ---------------------------------------------------------------------------------------------
# NDA for event frames [T, C, H, W] (float)
# ---------------------------------------------------------------------------------------------


def _affine_float(x, matrix):
    """Bilinear inverse-mapping affine of float ``[N, C, H, W]`` about the centre, zero fill."""
    n, _, h, w = x.shape
    a = torch.tensor(matrix, dtype=x.dtype)
    # normalized coordinates: scale the translation to [-1, 1] units
    theta = a.clone()
    theta[0, 1] = a[0, 1] * h / w
    theta[1, 0] = a[1, 0] * w / h
    theta[0, 2] = 2 * a[0, 2] / w
    theta[1, 2] = 2 * a[1, 2] / h
    grid = F.affine_grid(theta.unsqueeze(0).expand(n, 2, 3), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


class NDA:
    """Neuromorphic data augmentation on frames ``[T, C, H, W]``: horizontal flip (p = 1/2),
    then one of {roll by (dy, dx) in [-roll, roll]^2, rotate by U(-rotate, rotate) degrees,
    shear x by U(-shear, shear) degrees}, identical for all frames, then Cutout."""

    def __init__(self, roll: int = 5, rotate: float = 15.0, shear: float = 30.0, cutout: int = 12):
        self.roll, self.rotate, self.shear = roll, rotate, shear
        self.cutout = Cutout(cutout)

    def __call__(self, x, gen=None):
        if _rand(gen) < 0.5:
            x = x.flip(-1)
        choice = _randint(0, 2, gen)
        if choice == 0:
            x = torch.roll(x, shifts=(_randint(-self.roll, self.roll, gen), _randint(-self.roll, self.roll, gen)),
                           dims=(-2, -1))
        elif choice == 1:
            r = math.radians((2 * _rand(gen) - 1) * self.rotate)
            x = _affine_float(x, [[math.cos(r), -math.sin(r), 0], [math.sin(r), math.cos(r), 0]])
        else:
            s = math.tan(math.radians((2 * _rand(gen) - 1) * self.shear))
            x = _affine_float(x, [[1, s, 0], [0, 1, 0]])
        return self.cutout(x, gen)


def image_train_transform(dataset: str, size: int, autoaugment: bool = True, cutout: int | None = None,
                          padding: int = 4):
    """The papers' training pipeline for a static data set (uint8 [C, H, W] in):
    CIFAR/Tiny-ImageNet: RandomCrop(size, padding) -> flip -> AutoAugment -> normalize -> Cutout;
    ImageNet: RandomResizedCrop(size) -> flip -> AutoAugment(imagenet) -> normalize -> Cutout."""
    mean, std = MEAN_STD[dataset]
    policy = "imagenet" if dataset in ("imagenet", "tinyimagenet") else "cifar10"
    first = RandomResizedCrop(size) if dataset == "imagenet" else RandomCrop(size, padding)
    ts = [first, RandomHorizontalFlip()]
    if autoaugment:
        ts.append(AutoAugment(policy))
    ts.append(ToFloat(mean, std))
    length = CUTOUT_LENGTH[dataset] if cutout is None else cutout
    if length:
        ts.append(Cutout(length))
    return Compose(ts)


def image_eval_transform(dataset: str, size: int):
    """Evaluation: ImageNet resize (size/0.875) + centre crop; others: normalize only."""
    mean, std = MEAN_STD[dataset]
    if dataset == "imagenet":
        return Compose([Resize(int(round(size / 0.875))), CenterCrop(size), ToFloat(mean, std)])
    return Compose([ToFloat(mean, std)])
