"""DVS-CIFAR10 (Li et al., 2017) from its event files -> 10 frames of 2 x 48 x 48.

Accepted layout of ``root`` (``--data-dir``): one folder per class, named by the CIFAR-10
class (``airplane automobile bird cat deer dog frog horse ship truck``; any 10 folders work and
are indexed in sorted order), each holding one event file per sample, in any of these formats:

* ``.aedat`` -- the files of the original release (jAER AEDAT 2.0, DVS128 sensor 128 x 128):
  ASCII header lines starting with ``#``, then big-endian ``uint32`` pairs ``(address,
  timestamp_us)``. From the address: ``x = 127 - ((a >> 1) & 0x7F)``, ``y = 127 - ((a >> 8) &
  0x7F)``, polarity ``p = 1 - (a & 1)``.
* ``.npz`` -- arrays ``x``, ``y``, ``t``, ``p`` (e.g. SpikingJelly's ``events_np`` folder).
* ``.npy`` -- a structured array with fields ``x``, ``y``, ``t``, ``p`` (e.g. tonic), or a
  plain ``[N, 4]`` array with columns ``(x, y, t, p)``.

Events are sorted by t and split into ``frames`` (10) slices of equal event count (the last
slice takes the remainder); frame ``f[k, p, y, x]`` counts the events of slice k with polarity p
at (x, y); the ``[T, 2, 128, 128]`` stack is resized bilinearly to 48 x 48. There is no official
train/test split: per class, files in sorted order, the first ``train_ratio`` (0.9) are train
and the rest test. A sample is a float tensor ``[T, 2, 48, 48]``; a batch from a DataLoader is
``[B, T, ...]``, which the training loop turns time-major (``x.transpose(0, 1)``).
"""
from __future__ import annotations

import os

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from ..atomic import atomic_write_bytes
from .base import DatasetError

SENSOR = (128, 128)  # (H, W) of the DVS128
EVENT_EXT = (".aedat", ".npz", ".npy")


def read_aedat(path: str) -> dict:
    """Read a jAER AEDAT 2.0 file of the CIFAR10-DVS release -> dict of x, y, t, p arrays."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except OSError as e:
        raise DatasetError(f"{path}: cannot read event file ({e.strerror})") from None
    pos = 0
    while pos < len(raw) and raw[pos:pos + 1] == b"#":
        nl = raw.find(b"\n", pos)
        if nl < 0:
            raise DatasetError(f"{path}: AEDAT header never ends (no event data); the file is truncated")
        pos = nl + 1
    body = raw[pos:]
    if len(body) % 8:
        raise DatasetError(f"{path}: AEDAT event data is {len(body)} bytes, not a multiple of 8 "
                           f"(address, timestamp pairs); the file is truncated or corrupt")
    words = np.frombuffer(body, dtype=">u4")
    addr, ts = words[0::2].astype(np.int64), words[1::2].astype(np.int64)
    return {"x": 127 - ((addr >> 1) & 0x7F), "y": 127 - ((addr >> 8) & 0x7F), "t": ts,
            "p": 1 - (addr & 1)}


def read_events(path: str) -> dict:
    """Any accepted event file -> dict of int64 arrays x, y, t, p (validated)."""
    if not os.path.isfile(path):
        raise DatasetError(f"{path}: event file missing; re-extract the DVS-CIFAR10 folder")
    ext = os.path.splitext(path)[1].lower()
    try:
        if ext == ".aedat":
            ev = read_aedat(path)
        elif ext == ".npz":
            with np.load(path, allow_pickle=False) as z:
                missing = [k for k in "xytp" if k not in z.files]
                if missing:
                    raise DatasetError(f"{path}: .npz lacks arrays {missing}; expected x, y, t, p")
                ev = {k: np.asarray(z[k]).astype(np.int64).ravel() for k in "xytp"}
        elif ext == ".npy":
            a = np.load(path, allow_pickle=False)
            if a.dtype.names:
                missing = [k for k in "xytp" if k not in a.dtype.names]
                if missing:
                    raise DatasetError(f"{path}: structured .npy lacks fields {missing}; expected x, y, t, p")
                ev = {k: a[k].astype(np.int64).ravel() for k in "xytp"}
            elif a.ndim == 2 and a.shape[1] == 4:
                ev = {k: a[:, i].astype(np.int64) for i, k in enumerate("xytp")}
            else:
                raise DatasetError(f"{path}: .npy must be a structured array (x, y, t, p) or [N, 4] "
                                   f"columns x, y, t, p; got {a.dtype} {list(a.shape)}")
        else:
            raise DatasetError(f"{path}: unknown event file type {ext!r}; use .aedat, .npz or .npy")
    except DatasetError:
        raise
    except Exception as e:  # zip/npy parse errors
        raise DatasetError(f"{path}: cannot parse event file ({type(e).__name__}: {e}); the file is "
                           f"corrupt, replace it") from None
    n = len(ev["t"])
    if any(len(ev[k]) != n for k in "xyp"):
        raise DatasetError(f"{path}: x, y, t, p have different lengths")
    if n == 0:
        raise DatasetError(f"{path}: contains no events")
    if ev["x"].min() < 0 or ev["x"].max() >= SENSOR[1] or ev["y"].min() < 0 or ev["y"].max() >= SENSOR[0]:
        raise DatasetError(f"{path}: event coordinates outside the 128 x 128 DVS128 sensor")
    ev["p"] = (ev["p"] > 0).astype(np.int64)
    return ev


def events_to_frames(ev: dict, frames: int = 10, size: int = 48) -> torch.Tensor:
    """Integrate events into ``frames`` equal-count slices -> float32 ``[frames, 2, size, size]``
    (counts per polarity and pixel, bilinearly resized from 128 x 128)."""
    order = np.argsort(ev["t"], kind="stable")
    x, y, p = ev["x"][order], ev["y"][order], ev["p"][order]
    n = len(x)
    step = n // frames
    bounds = [i * step for i in range(frames)] + [n]
    h, w = SENSOR
    out = np.zeros((frames, 2, h, w), dtype=np.float32)
    for k in range(frames):
        sl = slice(bounds[k], bounds[k + 1])
        flat = (p[sl] * h + y[sl]) * w + x[sl]
        out[k] = np.bincount(flat, minlength=2 * h * w).reshape(2, h, w)
    t = torch.from_numpy(out)
    if size != h:
        t = F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False)
    return t


def list_event_files(root: str, train: bool, train_ratio: float = 0.9):
    """-> (samples [(path, label)], classes)."""
    if not os.path.isdir(root):
        raise DatasetError(f"{root}: no such directory; point --data-dir at the DVS-CIFAR10 folder "
                           f"with one sub-folder of event files per class")
    classes = sorted(e for e in os.listdir(root) if os.path.isdir(os.path.join(root, e)))
    if len(classes) != 10:
        raise DatasetError(f"{root}: expected 10 class folders, found {len(classes)}; point --data-dir "
                           f"at the folder holding airplane/ ... truck/")
    samples = []
    for i, c in enumerate(classes):
        files = sorted(f for f in os.listdir(os.path.join(root, c)) if f.lower().endswith(EVENT_EXT))
        if not files:
            raise DatasetError(f"{os.path.join(root, c)}: no event files (.aedat, .npz, .npy)")
        cut = int(round(len(files) * train_ratio))
        cut = min(max(cut, 1), len(files) - 1) if len(files) > 1 else 1  # both splits non-empty
        picked = files[:cut] if train else files[cut:]
        samples += [(os.path.join(root, c, f), i) for f in picked]
    if not samples:
        raise DatasetError(f"{root}: the {'train' if train else 'test'} split is empty (each class needs "
                           f"at least 2 event files)")
    return samples, classes


class DVSCIFAR10(Dataset):
    """Event files -> ``[T, 2, 48, 48]`` float frames (+ NDA when ``augment``)."""

    def __init__(self, root: str, train: bool = True, frames: int = 10, size: int = 48,
                 augment: bool = True, train_ratio: float = 0.9):
        from .transforms import CUTOUT_LENGTH, NDA

        self.samples, self.classes = list_event_files(root, train, train_ratio)
        self.num_classes = len(self.classes)
        self.frames, self.size = int(frames), int(size)
        self.augment = NDA(cutout=CUTOUT_LENGTH["dvscifar10"]) if (train and augment) else None

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i):
        path, label = self.samples[i]
        x = events_to_frames(read_events(path), self.frames, self.size)
        if self.augment is not None:
            x = self.augment(x)
        return x, int(label)


def write_aedat(path: str, x, y, t, p) -> None:
    """Write events in the CIFAR10-DVS AEDAT 2.0 layout (inverse of :func:`read_aedat`; for tests
    and for converting other recordings)."""
    x, y, t, p = (np.asarray(a, dtype=np.int64) for a in (x, y, t, p))
    addr = ((127 - y) << 8) | ((127 - x) << 1) | (1 - p)
    words = np.empty(2 * len(addr), dtype=">u4")
    words[0::2], words[1::2] = addr, t
    atomic_write_bytes(path, b"#!AER-DAT2.0\r\n# This is a raw AE data file - do not edit\r\n"
                       + words.tobytes())


def load_dvscifar10(root=None, seed: int = 0, frames: int = 10, size: int = 48, augment: bool = True,
                    **_):
    """Registry loader (``get_dataset("dvscifar10", root)``): frames ``[10, 2, 48, 48]``."""
    from . import DataSplits

    if root is None:
        raise DatasetError("dvscifar10 needs --data-dir pointing at the folder of class sub-folders "
                           "of event files (no download here)")
    return DataSplits(name="dvscifar10", train=DVSCIFAR10(root, True, frames, size, augment),
                      test=DVSCIFAR10(root, False, frames, size, False), num_classes=10,
                      input_shape=(2, size, size), frames=True)
