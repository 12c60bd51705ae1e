"""CIFAR-10 / CIFAR-100 from the official "python version" archives (no download).

Accepted ``root`` (``--data-dir``), searched in this order:

* the archive itself: ``cifar-10-python.tar.gz`` / ``cifar-100-python.tar.gz`` (read in place,
  not extracted);
* a directory holding that archive;
* the extracted batch directory ``cifar-10-batches-py/`` (``data_batch_1..5``, ``test_batch``)
  or ``cifar-100-python/`` (``train``, ``test``), or a directory holding it.

Each batch is a pickle of a dict with ``b"data"`` (``uint8 [N, 3072]``, channel-major 32x32)
and ``b"labels"`` (CIFAR-10) or ``b"fine_labels"`` (CIFAR-100). Pickles are read with a
restricted unpickler (plain containers and numpy arrays only).
"""
from __future__ import annotations

import io
import os
import pickle
import tarfile

import numpy as np

from .base import ArrayImageDataset, DatasetError

SPEC = {
    "cifar10": {"dir": "cifar-10-batches-py", "archive": "cifar-10-python.tar.gz",
                "train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"],
                "label_key": b"labels", "classes": 10},
    "cifar100": {"dir": "cifar-100-python", "archive": "cifar-100-python.tar.gz",
                 "train": ["train"], "test": ["test"], "label_key": b"fine_labels", "classes": 100},
}

_ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
            ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
            ("numpy._core.multiarray", "scalar"), ("_codecs", "encode")}


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load global {module}.{name}")


def _parse_batch(raw: bytes, where: str, label_key: bytes):
    """One pickled batch -> (uint8 [N, 32, 32, 3], int64 [N])."""
    try:
        d = _SafeUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except Exception as e:  # truncated, not a pickle, foreign globals
        raise DatasetError(f"{where}: not a readable CIFAR batch pickle ({type(e).__name__}: {e}); "
                           f"re-extract it from the official archive") from None
    if not isinstance(d, dict):
        raise DatasetError(f"{where}: a CIFAR batch must be a dict, got {type(d).__name__}")
    d = {(k.encode() if isinstance(k, str) else k): v for k, v in d.items()}
    if b"data" not in d or label_key not in d:
        raise DatasetError(f"{where}: missing key b'data' or {label_key!r}; is this the right CIFAR "
                           f"variant (cifar10 vs cifar100)?")
    data = np.asarray(d[b"data"])
    labels = np.asarray(d[label_key], dtype=np.int64)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072 or len(labels) != len(data):
        raise DatasetError(f"{where}: expected data uint8 [N, 3072] and N labels, got "
                           f"{data.dtype} {list(data.shape)} and {len(labels)} labels")
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels


def _locate(root: str, name: str):
    """-> ('tar', archive path) or ('dir', batch directory)."""
    spec = SPEC[name]
    if not os.path.exists(root):
        raise DatasetError(f"{root}: no such file or directory; point --data-dir at the {name} "
                           f"archive {spec['archive']} or its extracted folder {spec['dir']}/")
    if os.path.isfile(root):
        return "tar", root
    for cand in (root, os.path.join(root, spec["dir"])):
        if all(os.path.exists(os.path.join(cand, f)) for f in spec["test"]):
            return "dir", cand
    arch = os.path.join(root, spec["archive"])
    if os.path.isfile(arch):
        return "tar", arch
    raise DatasetError(f"{root}: found neither {spec['dir']}/ nor {spec['archive']}; point --data-dir "
                       f"at the official {name} python archive or its extracted folder")


def load_cifar_arrays(root: str, name: str = "cifar10", train: bool = True):
    """Read the train or test split -> (uint8 [N, 32, 32, 3], int64 [N])."""
    if name not in SPEC:
        raise DatasetError(f"unknown CIFAR variant {name!r}; choose cifar10 or cifar100")
    spec = SPEC[name]
    kind, path = _locate(root, name)
    files = spec["train" if train else "test"]
    parts = []
    if kind == "dir":
        for f in files:
            p = os.path.join(path, f)
            if not os.path.isfile(p):
                raise DatasetError(f"{p}: missing CIFAR batch file; re-extract {spec['archive']}")
            with open(p, "rb") as fh:
                parts.append(_parse_batch(fh.read(), p, spec["label_key"]))
    else:
        try:
            with tarfile.open(path, "r:*") as tf:
                members = {os.path.basename(m.name): m for m in tf.getmembers() if m.isfile()}
                for f in files:
                    if f not in members:
                        raise DatasetError(f"{path}: archive has no member {spec['dir']}/{f}; is it the "
                                           f"official {spec['archive']}?")
                    raw = tf.extractfile(members[f]).read()
                    parts.append(_parse_batch(raw, f"{path}:{members[f].name}", spec["label_key"]))
        except (tarfile.TarError, EOFError, OSError) as e:
            raise DatasetError(f"{path}: not a readable .tar.gz archive ({type(e).__name__}: {e}); "
                               f"download it again or extract it and pass the folder") from None
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    if labels.min() < 0 or labels.max() >= spec["classes"]:
        raise DatasetError(f"{path}: labels outside 0..{spec['classes'] - 1}; wrong CIFAR variant?")
    return images, labels


def cifar_dataset(root: str, name: str = "cifar10", train: bool = True, augment: bool = True,
                  autoaugment: bool = True, cutout: int | None = None):
    """A torch Dataset of normalized float ``[3, 32, 32]`` images and int labels; the train
    split gets RandomCrop(32, 4) + flip + AutoAugment(CIFAR) + Cutout when ``augment``."""
    from .transforms import image_eval_transform, image_train_transform

    images, labels = load_cifar_arrays(root, name, train)
    tf = (image_train_transform(name, 32, autoaugment, cutout) if (train and augment)
          else image_eval_transform(name, 32))
    return ArrayImageDataset(images, labels, tf, SPEC[name]["classes"])


def _load(name: str, root, seed: int = 0, augment: bool = True, autoaugment: bool = True,
          cutout: int | None = None, **_):
    from . import DataSplits

    if root is None:
        raise DatasetError(f"{name} needs --data-dir pointing at {SPEC[name]['archive']} or its "
                           f"extracted {SPEC[name]['dir']}/ (no download here)")
    from .transforms import input_norm

    return DataSplits(name=name, train=cifar_dataset(root, name, True, augment, autoaugment, cutout),
                      test=cifar_dataset(root, name, False), num_classes=SPEC[name]["classes"],
                      input_shape=(3, 32, 32), frames=False, input_quantum=2.0 ** -8,
                      input_bound=1.0, input_norm=input_norm(name))


def load_cifar10(root=None, seed: int = 0, **options):
    """Registry loader (``get_dataset("cifar10", root)``)."""
    return _load("cifar10", root, seed, **options)


def load_cifar100(root=None, seed: int = 0, **options):
    """Registry loader (``get_dataset("cifar100", root)``)."""
    return _load("cifar100", root, seed, **options)
