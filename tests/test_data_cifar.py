"""CIFAR loader on small batches fabricated in the official pickle format."""
import io
import os
import pickle
import tarfile

import numpy as np
import pytest
import torch

from lmh_deploy.data.base import DatasetError
from lmh_deploy.data.cifar import cifar_dataset, load_cifar_arrays


def _batch(n, seed, key=b"labels", classes=10):
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
    labels = [int(v) for v in rng.integers(0, classes, n)]
    return {b"batch_label": b"fake", key: labels, b"data": data}


def _write_cifar10(root, n=4):
    d = os.path.join(root, "cifar-10-batches-py")
    os.makedirs(d)
    batches = {}
    for i, f in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
        batches[f] = _batch(n, i)
        with open(os.path.join(d, f), "wb") as fh:
            pickle.dump(batches[f], fh, protocol=2)
    return d, batches


def test_extracted_dir_roundtrip(tmp_path):
    d, batches = _write_cifar10(str(tmp_path))
    for root in (str(tmp_path), d):
        x, y = load_cifar_arrays(root, "cifar10", train=True)
        assert x.shape == (20, 32, 32, 3) and x.dtype == np.uint8
        want = np.concatenate([batches[f"data_batch_{k}"][b"data"] for k in range(1, 6)])
        np.testing.assert_array_equal(x, want.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        np.testing.assert_array_equal(y, sum((batches[f"data_batch_{k}"][b"labels"] for k in range(1, 6)), []))
    xt, yt = load_cifar_arrays(str(tmp_path), "cifar10", train=False)
    assert xt.shape == (4, 32, 32, 3)
    # pixel (row 2, col 5) of channel 1 of image 0 sits at flat index 1024 + 2*32 + 5
    assert xt[0, 2, 5, 1] == batches["test_batch"][b"data"][0, 1024 + 69]


def test_targz_cifar100(tmp_path):
    arch = tmp_path / "cifar-100-python.tar.gz"
    tr, te = _batch(6, 1, b"fine_labels", 100), _batch(3, 2, b"fine_labels", 100)
    with tarfile.open(arch, "w:gz") as tf:
        for name, obj in (("train", tr), ("test", te), ("meta", {b"fine_label_names": []})):
            raw = pickle.dumps(obj, protocol=2)
            info = tarfile.TarInfo(f"cifar-100-python/{name}")
            info.size = len(raw)
            tf.addfile(info, io.BytesIO(raw))
    for root in (str(arch), str(tmp_path)):
        x, y = load_cifar_arrays(root, "cifar100", train=True)
        assert x.shape == (6, 32, 32, 3)
        np.testing.assert_array_equal(y, tr[b"fine_labels"])
    ds = cifar_dataset(str(arch), "cifar100", train=False)
    img, lab = ds[1]
    assert img.shape == (3, 32, 32) and img.dtype == torch.float32 and lab == te[b"fine_labels"][1]


def test_train_dataset_augments(tmp_path):
    _write_cifar10(str(tmp_path))
    torch.manual_seed(0)
    ds = cifar_dataset(str(tmp_path), "cifar10", train=True)
    a, _ = ds[0]
    assert a.shape == (3, 32, 32) and torch.isfinite(a).all()
    loader = torch.utils.data.DataLoader(ds, batch_size=8, num_workers=0)
    xb, yb = next(iter(loader))
    assert xb.shape == (8, 3, 32, 32) and yb.dtype == torch.int64


def test_missing_and_corrupt(tmp_path):
    with pytest.raises(DatasetError, match="no such file"):
        load_cifar_arrays(str(tmp_path / "nope"), "cifar10")
    with pytest.raises(DatasetError, match="found neither"):
        load_cifar_arrays(str(tmp_path), "cifar10")
    d, _ = _write_cifar10(str(tmp_path))
    os.remove(os.path.join(d, "data_batch_3"))
    with pytest.raises(DatasetError, match="data_batch_3: missing"):
        load_cifar_arrays(str(tmp_path), "cifar10", train=True)
    p = os.path.join(d, "test_batch")
    raw = open(p, "rb").read()
    open(p, "wb").write(raw[: len(raw) // 2])  # truncated pickle
    with pytest.raises(DatasetError) as e:
        load_cifar_arrays(str(tmp_path), "cifar10", train=False)
    assert "test_batch" in str(e.value) and "\n" not in str(e.value)


def test_malicious_pickle_refused(tmp_path):
    d, _ = _write_cifar10(str(tmp_path))

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    with open(os.path.join(d, "test_batch"), "wb") as fh:
        pickle.dump({b"data": Evil()}, fh)
    with pytest.raises(DatasetError, match="refusing"):
        load_cifar_arrays(str(tmp_path), "cifar10", train=False)


def test_corrupt_archive(tmp_path):
    arch = tmp_path / "cifar-10-python.tar.gz"
    arch.write_bytes(b"\x1f\x8b\x08\x00garbage")
    with pytest.raises(DatasetError, match="cifar-10-python.tar.gz: not a readable"):
        load_cifar_arrays(str(arch), "cifar10")
