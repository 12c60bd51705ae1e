"""DVS-CIFAR10 event files (AEDAT 2.0 of the release, .npz, .npy) -> frames."""
import os

import numpy as np
import pytest
import torch

from lmh_deploy.data.base import DatasetError
from lmh_deploy.data.dvs import DVSCIFAR10, events_to_frames, read_aedat, read_events, write_aedat

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _events(seed, n=200):
    rng = np.random.default_rng(seed)
    return {"x": rng.integers(0, 128, n), "y": rng.integers(0, 128, n),
            "t": np.sort(rng.integers(0, 10**6, n)), "p": rng.integers(0, 2, n)}


def test_aedat_bit_layout(tmp_path):
    path = str(tmp_path / "a.aedat")
    # x=3, y=5, p=1 -> address ((127-5) << 8) | ((127-3) << 1) | 0
    write_aedat(path, [3], [5], [42], [1])
    raw = open(path, "rb").read()
    body = raw[raw.rfind(b"\n") + 1:]
    assert body == np.array([(122 << 8) | (124 << 1), 42], dtype=">u4").tobytes()
    ev = read_aedat(path)
    assert (ev["x"][0], ev["y"][0], ev["t"][0], ev["p"][0]) == (3, 5, 42, 1)


def test_formats_agree_and_frames(tmp_path):
    ev = _events(0)
    write_aedat(str(tmp_path / "e.aedat"), **ev)
    np.savez(tmp_path / "e.npz", **ev)
    rec = np.zeros(len(ev["t"]), dtype=[("x", "<i2"), ("y", "<i2"), ("t", "<i8"), ("p", "<i1")])
    for k in "xytp":
        rec[k] = ev[k]
    np.save(tmp_path / "e.npy", rec)
    np.save(tmp_path / "c.npy", np.stack([ev[k] for k in "xytp"], 1))
    for f in ("e.aedat", "e.npz", "e.npy", "c.npy"):
        got = read_events(str(tmp_path / f))
        for k in "xytp":
            np.testing.assert_array_equal(got[k], ev[k], err_msg=f)
    fr = events_to_frames(ev, frames=10, size=128)
    assert fr.shape == (10, 2, 128, 128) and float(fr.sum()) == 200
    # slice 0 holds events 0..19 (equal count), at [p, y, x]
    want = np.zeros((2, 128, 128))
    for i in range(20):
        want[ev["p"][i], ev["y"][i], ev["x"][i]] += 1
    np.testing.assert_array_equal(fr[0].numpy(), want)
    small = events_to_frames(ev, frames=10, size=48)
    assert small.shape == (10, 2, 48, 48)
    # bilinear down-sampling keeps the total roughly (mass * (48/128)^2)
    assert abs(float(small.sum()) - 200 * (48 / 128) ** 2) < 15


def test_dataset_split_and_nda(tmp_path):
    for i, c in enumerate(CLASSES):
        (tmp_path / c).mkdir()
        for k in range(10):
            np.savez(tmp_path / c / f"{c}_{k}.npz", **_events(100 * i + k, 50))
    tr = DVSCIFAR10(str(tmp_path), train=True)
    te = DVSCIFAR10(str(tmp_path), train=False)
    assert len(tr) == 90 and len(te) == 10 and tr.num_classes == 10
    assert {lab for _, lab in te.samples} == set(range(10))
    assert all(p.endswith("_9.npz") for p, _ in te.samples)
    torch.manual_seed(0)
    x, y = tr[0]
    assert x.shape == (10, 2, 48, 48) and y == 0 and torch.isfinite(x).all()
    xt, _ = te[0]
    assert xt.shape == (10, 2, 48, 48)
    loader = torch.utils.data.DataLoader(te, batch_size=4)
    xb, _ = next(iter(loader))
    assert xb.transpose(0, 1).shape == (10, 4, 2, 48, 48)


def test_missing_and_corrupt(tmp_path):
    with pytest.raises(DatasetError, match="no such directory"):
        DVSCIFAR10(str(tmp_path / "none"))
    p = str(tmp_path / "t.aedat")
    write_aedat(p, **_events(1, 10))
    open(p, "ab").write(b"\x00\x01\x02")
    with pytest.raises(DatasetError) as e:
        read_events(p)
    assert "t.aedat" in str(e.value) and "multiple of 8" in str(e.value) and "\n" not in str(e.value)
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"PK\x03\x04garbage")
    with pytest.raises(DatasetError, match="bad.npz: cannot parse"):
        read_events(str(bad))
    np.savez(tmp_path / "nop.npz", x=[1], y=[1])
    with pytest.raises(DatasetError, match="lacks arrays"):
        read_events(str(tmp_path / "nop.npz"))
    with pytest.raises(DatasetError, match="gone.npz: event file missing"):
        read_events(str(tmp_path / "gone.npz"))
    (tmp_path / "only").mkdir()
    with pytest.raises(DatasetError, match="expected 10 class folders"):
        DVSCIFAR10(str(tmp_path / "only"))


def test_fit_cli_on_fabricated_aedat_tree(tmp_path):
    """The frames path end to end: registry -> loader (T frames) -> time-major batches -> fit."""
    import json

    from lmh_deploy.cli.train import main

    for i, c in enumerate(CLASSES):
        (tmp_path / "dvs" / c).mkdir(parents=True)
        for k in range(3):
            write_aedat(str(tmp_path / "dvs" / c / f"{c}_{k}.aedat"), **_events(10 * i + k, 300))
    out = tmp_path / "run"
    assert main(["--dataset", "dvscifar10", "--data-dir", str(tmp_path / "dvs"), "--arch", "cnn",
                 "--neuron", "lmht", "-T", "2", "--epochs", "1", "--batch-size", "8", "--out", str(out),
                 "--progress", "false"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["model_config"]["input_shape"] == [2, 48, 48] and m["test_samples"] == 10
    assert len(m["test_accuracy_per_t"]) == 2
