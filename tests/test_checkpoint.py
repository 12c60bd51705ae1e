"""Checkpoint format: round trip, weights_only loading, typed one-line errors, atomic saves."""
import os
import subprocess
import sys

import pytest
import torch

import lmh_deploy.checkpoint as ckpt_mod
from lmh_deploy.checkpoint import (FORMAT_TAG, FORMAT_VERSION, CheckpointError, atomic_write_text,
                                   load_checkpoint, load_model, save_checkpoint)
from lmh_deploy.models import build_model, default_config


def _model(neuron="lmh", arch="mlp", **extra):
    torch.manual_seed(1)
    model = build_model(default_config(arch=arch, neuron=neuron, timesteps=4, **extra))
    with torch.no_grad():  # non-trivial parameters and BN statistics
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
        model.train()
        model(torch.rand(16, 1, 8, 8))
    return model.eval()


def _x():
    return torch.randint(0, 17, (8, 1, 8, 8), generator=torch.Generator().manual_seed(2)).float() / 16


@pytest.mark.parametrize("neuron,extra", [("lmh", {}), ("lmh-radical", {}), ("lif", {}),
                                          ("lmht", {"levels": 3}), ("lmh", {"per_channel": True})])
def test_save_load_bit_identical(tmp_path, neuron, extra):
    model = _model(neuron, **extra)
    path = save_checkpoint(tmp_path / "model.pt", model, metrics={"test_accuracy": 0.5}, epoch=3)
    loaded = load_model(path)
    assert not loaded.training
    assert loaded.config == model.config
    with torch.no_grad():
        a, b = model(_x()), loaded(_x())
    assert torch.equal(a, b)
    sd_a, sd_b = model.state_dict(), loaded.state_dict()
    assert sd_a.keys() == sd_b.keys() and all(torch.equal(sd_a[k], sd_b[k]) for k in sd_a)


def test_optimizer_state_and_plain_torch_load(tmp_path):
    model = _model("lmht", levels=2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=5)
    model.train()
    model(_x()).mean().backward()
    opt.step()
    sched.step()
    model.eval()
    save_checkpoint(tmp_path / "model.pt", model, metrics={"history": [{"epoch": 1}]},
                    train_config={"neuron": "lmh", "resume": None}, epoch=1, optimizer=opt,
                    scheduler=sched)
    raw = torch.load(tmp_path / "model.pt", weights_only=True)  # tensors and plain containers only
    assert raw["format"] == FORMAT_TAG and raw["version"] == FORMAT_VERSION == 1
    assert set(raw) == {"format", "version", "model_config", "state_dict", "metrics", "train_config",
                        "epoch", "optimizer", "scheduler", "content_hash"}
    assert raw["epoch"] == 1 and raw["scheduler"]["last_epoch"] == 1
    assert raw["optimizer"]["param_groups"][0]["momentum"] == 0.9
    assert build_model(raw["model_config"]).load_state_dict(raw["state_dict"]) is not None
    with torch.no_grad():
        assert torch.equal(model(_x()), load_model(tmp_path / "model.pt")(_x()))


def _one_line_error(path, match):
    with pytest.raises(CheckpointError) as info:
        load_model(path)
    msg = str(info.value)
    assert "\n" not in msg and str(path) in msg, msg
    assert match in msg, msg
    assert isinstance(info.value, ValueError)
    return msg


def test_missing_file(tmp_path):
    _one_line_error(tmp_path / "nope.pt", "no such checkpoint file")


@pytest.mark.parametrize("keep", [0.5, 0.1, 0.0])
def test_truncated_file(tmp_path, keep):
    path = save_checkpoint(tmp_path / "model.pt", _model())
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    _one_line_error(path, "truncated or corrupt")


def test_garbage_file(tmp_path):
    path = tmp_path / "model.pt"
    path.write_bytes(b"this is not a torch file\n" * 10)
    _one_line_error(path, "truncated or corrupt")


def test_foreign_dict_and_tensor(tmp_path):
    path = tmp_path / "foreign.pt"
    torch.save({"weight": torch.ones(3)}, path)
    _one_line_error(path, "not an lmh-deploy checkpoint")
    torch.save({"format": "someone-else", "version": 1}, path)
    _one_line_error(path, "'someone-else'")
    torch.save(torch.ones(3), path)
    _one_line_error(path, "not an lmh-deploy checkpoint")


def test_pickled_object_is_refused(tmp_path):
    path = tmp_path / "module.pt"
    torch.save(torch.nn.Linear(2, 2), path)  # a pickled module, not tensors only
    _one_line_error(path, "not an lmh-deploy checkpoint")


def test_unsupported_version(tmp_path):
    path = save_checkpoint(tmp_path / "model.pt", _model())
    raw = torch.load(path, weights_only=True)
    raw["version"] = 2
    torch.save(raw, path)
    _one_line_error(path, "unsupported checkpoint version 2")


def test_state_dict_mismatch(tmp_path):
    path = save_checkpoint(tmp_path / "model.pt", _model())
    raw = torch.load(path, weights_only=True)
    raw["model_config"]["neuron"] = {"kind": "lmht", "levels": 2}
    torch.save(raw, path)
    _one_line_error(path, "content hash mismatch")  # an edited config: the hash says so
    del raw["content_hash"]  # a file from before hashes: the mismatch itself is found
    torch.save(raw, path)
    _one_line_error(path, "does not match")


def test_content_hash_flipped_byte_and_legacy_note(tmp_path, capsys):
    """A byte flipped inside a tensor's data is refused (torch does not check the zip CRCs); a
    checkpoint without a hash loads with one note on stderr."""
    import zipfile

    from lmh_deploy.checkpoint import content_hash, load_checkpoint

    path = save_checkpoint(tmp_path / "model.pt", _model())
    raw = torch.load(path, weights_only=True)
    assert raw["content_hash"] == content_hash(raw["model_config"], raw["state_dict"])
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as z:  # the first tensor storage's bytes in the archive
        info = next(i for i in z.infolist() if "/data/" in i.filename and i.file_size >= 4)
    h = info.header_offset  # local header: name length at +26, extra length at +28
    off = h + 30 + int.from_bytes(data[h + 26:h + 28], "little") + int.from_bytes(data[h + 28:h + 30], "little")
    data[off + 1] ^= 0x01
    bad = tmp_path / "flipped.pt"
    bad.write_bytes(bytes(data))
    _one_line_error(bad, "content hash mismatch")
    del raw["content_hash"]
    legacy = tmp_path / "legacy.pt"
    torch.save(raw, legacy)
    capsys.readouterr()
    load_checkpoint(legacy)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "carried a content hash" in err[0]


def test_interrupted_save_keeps_old_file(tmp_path, monkeypatch):
    model = _model()
    path = save_checkpoint(tmp_path / "model.pt", model, epoch=1)
    old = path.read_bytes()
    import lmh_deploy.atomic as atomic_mod

    def sync_then_die(f):  # the bytes are written; die before the rename
        with open(f, "r+b") as fh:  # leave a half-written file behind, then fail
            fh.truncate(len(old) // 2)
        raise KeyboardInterrupt("killed mid-save")

    monkeypatch.setattr(atomic_mod, "_fsync_file", sync_then_die)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, _model("lif"), epoch=2)
    monkeypatch.undo()
    assert path.read_bytes() == old
    assert os.listdir(tmp_path) == ["model.pt"]  # no temporary left behind
    assert load_checkpoint(path)["epoch"] == 1


def test_interrupted_first_save_leaves_nothing(tmp_path, monkeypatch):
    import errno

    import lmh_deploy.atomic as atomic_mod

    def boom(f):
        with open(f, "wb") as fh:
            fh.write(b"PK\x03\x04partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic_mod, "_fsync_file", boom)
    with pytest.raises(OSError):
        save_checkpoint(tmp_path / "run" / "model.pt", _model())
    assert os.listdir(tmp_path / "run") == []


def test_atomic_write_text(tmp_path, monkeypatch):
    path = tmp_path / "metrics.json"
    atomic_write_text(path, "{}\n")
    assert path.read_text() == "{}\n"
    assert os.listdir(tmp_path) == ["metrics.json"]


@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_atomic_write_honours_umask(tmp_path, umask, mode):
    """A new file gets 0666 & ~umask (not mkstemp's 0600), as open() would give it."""
    old = os.umask(umask)
    try:
        atomic_write_text(tmp_path / "new.json", "{}\n")
        save_checkpoint(tmp_path / "model.pt", _model())
    finally:
        os.umask(old)
    assert (tmp_path / "new.json").stat().st_mode & 0o7777 == mode
    assert (tmp_path / "model.pt").stat().st_mode & 0o7777 == mode


def test_atomic_replace_keeps_mode_and_removes_stale_temps(tmp_path):
    """A replaced file keeps its mode; a temporary of a killed writer (dead pid) is removed by
    the next write, a live writer's is left alone."""
    from lmh_deploy.atomic import atomic_dir

    path = tmp_path / "out.json"
    path.write_text("old")
    os.chmod(path, 0o640)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".out.json.{dead.pid}.abc123.tmp"
    stale.write_text("partial")
    live = tmp_path / f".out.json.{os.getppid()}.def456.tmp"
    live.write_text("someone else writing")
    atomic_write_text(path, "new")
    assert path.read_text() == "new" and path.stat().st_mode & 0o7777 == 0o640
    assert not stale.exists() and live.exists()
    with pytest.raises(RuntimeError):  # a failed multi-file write leaves nothing
        with atomic_dir(tmp_path / "sweep") as d:
            (d / "a.csv").write_text("x")
            raise RuntimeError("figure failed")
    assert not (tmp_path / "sweep").exists()
    with atomic_dir(tmp_path / "sweep") as d:
        (d / "a.csv").write_text("x")
        (d / "b.json").write_text("{}")
    assert sorted(os.listdir(tmp_path / "sweep")) == ["a.csv", "b.json"]
    assert sorted(p for p in os.listdir(tmp_path) if p.endswith(".tmp")) == [live.name]
