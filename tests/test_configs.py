"""Every configs/*.json parses, resolves and builds its model; one training step of each
architecture/neuron/mode combination on CIFAR-sized random data; CLI flags override files."""
import json
import math
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from lmh_deploy.models import build_model
from lmh_deploy.cli.train import config_from_args
from lmh_deploy.training.config import resolve_config
from lmh_deploy.training.extensions import StepRunner
from lmh_deploy.training.hybrid import ann_config, convert
from lmh_deploy.training.losses import get_loss
from lmh_deploy.training.loop import model_config_for
from lmh_deploy.training.optim import build_optimizer

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs").glob("*.json"))
META = {"cifar10": (10, (3, 32, 32), False), "cifar100": (100, (3, 32, 32), False),
        "tinyimagenet": (200, (3, 64, 64), False), "dvscifar10": (10, (2, 48, 48), True),
        "imagenet": (1000, (3, 224, 224), False)}


class FakeData:
    def __init__(self, name, cifar_size=False):
        k, shape, frames = META[name]
        self.num_classes, self.frames, self.input_quantum = k, frames, None
        self.input_shape = (shape[0], 32, 32) if cifar_size else shape


def _resolved(path, *flags):
    return resolve_config(config_from_args(["--config", str(path), *flags]))


def test_config_set_covers_the_tables():
    names = {p.stem for p in CONFIGS}
    assert len(names) == 40
    assert {"lmh_c10_resnet18", "lmh_c100_resnet19", "lmh_tinyimagenet_vgg13", "lmh_dvscifar10_resnet19",
            "lmht_c10_resnet19_L2T2", "lmht_dvscifar10_resnet18_L4T2", "hybrid_lmh_c100_vgg16",
            "hybrid_lmht_c100_resnet20_tq8_L2T4", "slice_lmh_c100_resnet18_k3x2",
            "sparse_lmh_c10_resnet19", "lmh_imagenet_resnet34_radical"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_config_parses_and_builds(path):
    raw = json.loads(path.read_text())
    cfg = _resolved(path)
    assert cfg["source"] and cfg["keep_best"] is True and cfg["device"] == "cuda"
    for k, v in raw.items():
        assert cfg[k] == v, k
    mcfg = model_config_for(cfg, FakeData(cfg["dataset"]))
    model = build_model(ann_config(mcfg, cfg["tq"]) if cfg["hybrid"] else mcfg)
    assert model.timesteps == (1 if cfg["hybrid"] else cfg["timesteps"])
    assert sum(p.numel() for p in model.parameters()) > 1e5
    if cfg["slice"]:
        assert cfg["loss"] == "tet" and cfg["timesteps"] % cfg["slice"] == 0


def test_flags_override_file_values():
    path = ROOT / "configs" / "slice_lmh_c10_resnet18_k3x2.json"
    cfg = _resolved(path, "--slice", "2", "--lr", "0.5", "--bn", "per_step", "--data-dir", "/x")
    assert (cfg["slice"], cfg["lr"], cfg["bn"], cfg["data_dir"]) == (2, 0.5, "per_step", "/x")
    assert cfg["arch"] == "resnet18" and cfg["loss"] == "tet"  # file values kept


def _combos():
    """One config per (arch, neuron, mode), the one with the fewest time steps."""
    seen = {}
    for p in CONFIGS:
        c = json.loads(p.read_text())
        mode = ("slice" if c.get("slice") else "sparse" if c.get("sparsity_width") else
                "hybrid" if c.get("hybrid") else "frames" if c["dataset"] == "dvscifar10" else "plain")
        key = (c["arch"], c["neuron"], mode)
        if key not in seen or c["timesteps"] < json.loads(seen[key].read_text())["timesteps"]:
            seen[key] = p
    return sorted(seen.values())


@pytest.mark.slow
@pytest.mark.parametrize("path", _combos(), ids=lambda p: p.stem)
def test_one_training_step_cifar_size(path):
    cfg = _resolved(path, "--batch-size", "2")
    t = cfg["timesteps"] if cfg["slice"] else min(cfg["timesteps"], 2)
    cfg["timesteps"] = t
    data = FakeData(cfg["dataset"], cifar_size=True)
    mcfg = model_config_for(cfg, data)
    torch.manual_seed(0)
    if cfg["hybrid"]:
        model = convert(build_model(ann_config(mcfg, cfg["tq"])), cfg["neuron"], t, cfg["levels"] or 2)
    else:
        model = build_model(mcfg)
    opt = build_optimizer(model.parameters(), cfg)
    steps = math.ceil(t / cfg["slice"]) if cfg["slice"] else 1
    runner = StepRunner(cfg, model, model, opt, get_loss(cfg["loss"]), torch.device("cpu"), total_updates=10)
    x = torch.rand((t, 2) + data.input_shape) if data.frames else torch.rand((2,) + data.input_shape)
    y = torch.randint(0, data.num_classes, (2,))
    before = [p.detach().clone() for p in model.parameters()]
    model.train()
    loss, logits = runner(x, y)
    assert math.isfinite(loss) and logits.shape == (t, 2, data.num_classes)
    assert any(not torch.equal(a, p) for a, p in zip(before, model.parameters()))
    if cfg["sparsity_width"]:
        assert runner.metrics()["stds_step"] == steps


def _fake_cifar(root: Path):
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for f in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": rng.integers(0, 256, (4, 3072), dtype=np.uint8),
                 b"labels": [int(v) for v in rng.integers(0, 10, 4)]}
        (d / f).write_bytes(pickle.dumps(batch, protocol=2))


@pytest.mark.slow
def test_fit_cli_with_config_on_fabricated_cifar(tmp_path):
    from lmh_deploy.cli.train import main

    _fake_cifar(tmp_path / "data")
    out = tmp_path / "run"
    rc = main(["--config", str(ROOT / "configs" / "slice_lmh_c10_resnet18_k3x2.json"), "--arch", "cnn",
               "--data-dir", str(tmp_path / "data"), "--epochs", "1", "--batch-size", "8",
               "--sparsity-width", "0.05", "--out", str(out), "--progress", "false",
               "--device", "cpu", "--num-workers", "0"])
    assert rc == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["config"]["slice"] == 3 and m["config"]["arch"] == "cnn" and m["test_samples"] == 4
    assert m["train_samples"] == 20 and 0 <= m["sparsity"] <= 1 and m["stds_step"] == 3 * 2
    assert (out / "best.pt").exists() and (out / "model.pt").exists()
