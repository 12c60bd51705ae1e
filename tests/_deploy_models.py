"""Models for the deployment tests (ONNX parity, CLIs, sweep): random-weight models with
non-trivial BN statistics and neuron parameters, and short-trained digits checkpoints.

Trained checkpoints are made once per test process (``functools.cache``) in a temporary
directory; nothing outside the repository is read.
"""
from __future__ import annotations

import functools
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

from lmh_deploy.models import build_model, default_config
from lmh_deploy.neurons import LMHNeuron, LMHTNeuron

#: (label, neuron kind, levels) of every neuron family the acceptance names
NEURON_FAMILIES = [("lif", "lif", 2), ("lmh", "lmh", 2), ("lmh-radical", "lmh-radical", 2),
                   ("lmht-L1", "lmht", 1), ("lmht-L2", "lmht", 2), ("lmht-L4", "lmht", 4)]


def randomize(model, seed: int = 0):
    """Non-trivial eval-mode BN statistics and neuron parameters (in place); returns the model."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, nn.modules.batchnorm._BatchNorm):
                n = mod.num_features
                mod.running_mean.copy_(torch.rand(n, generator=g) * 0.6 - 0.3)
                mod.running_var.copy_(torch.rand(n, generator=g) * 1.5 + 0.5)
                mod.weight.copy_(torch.rand(n, generator=g) + 0.5)
                mod.bias.copy_(torch.rand(n, generator=g) * 0.6 - 0.1)
            elif isinstance(mod, LMHNeuron):
                for p in (mod.x_mu_d, mod.x_mu_s, mod.x_lam_s, mod.x_lam_d):
                    p.copy_(torch.randn(p.shape, generator=g))
            elif isinstance(mod, LMHTNeuron):
                mod.a.copy_(torch.randn(mod.a.shape, generator=g))
                if mod.learn_omega:
                    mod.M.copy_(torch.randn(mod.M.shape, generator=g))
    return model.eval()


def random_model(arch: str, neuron: str, timesteps: int, input_shape=(1, 8, 8), levels: int = 2,
                 seed: int = 0, **extra):
    torch.manual_seed(seed)
    cfg = default_config(arch, neuron, timesteps=timesteps, input_shape=input_shape,
                         levels=levels, **extra)
    return randomize(build_model(cfg), seed + 1)


def grid_inputs(n: int, shape, seed: int = 0, scale: float = 1.0) -> np.ndarray:
    """Random inputs on the default input grid (multiples of 2**-8), so every runtime -- and the
    trained module, which does not quantize -- sees the same values."""
    x = np.random.RandomState(seed).rand(n, *shape).astype(np.float32) * scale
    return (np.round(x * 256) / 256).astype(np.float32)


def digits_test(limit: int | None = None):
    from lmh_deploy.data.digits import digits_arrays

    _, _, x, y = digits_arrays()
    return (x, y) if limit is None else (x[:limit], y[:limit])


_TMP = None


def _tmpdir() -> Path:
    global _TMP
    if _TMP is None:
        _TMP = tempfile.TemporaryDirectory(prefix="lmh-test-models-")
    return Path(_TMP.name)


@functools.cache
def trained_checkpoint(arch: str = "mlp", neuron: str = "lmh", levels: int | None = None,
                       timesteps: int = 4, epochs: int = 1) -> Path:
    """A digits checkpoint trained for ``epochs`` by the real training loop (made once)."""
    from lmh_deploy.training.loop import train

    out = _tmpdir() / f"{arch}-{neuron}-{levels}-T{timesteps}-e{epochs}"
    cfg = {"arch": arch, "neuron": neuron, "timesteps": timesteps, "epochs": epochs,
           "out": str(out), "progress": False}
    if levels is not None:
        cfg["levels"] = levels
    train(cfg)
    return out / "model.pt"


def save_model(model, path) -> Path:
    from lmh_deploy.checkpoint import save_checkpoint

    return save_checkpoint(path, model)


def quick_train(arch, kind, extra, data, steps=20, seed=0):
    """A short training run (Adam, mean cross-entropy over the steps' logits, TET-style) so
    weights, BN statistics and neuron parameters move away from their initial values."""
    x_tr, y_tr, _, _ = data
    torch.manual_seed(seed)
    model = build_model(default_config(arch, kind, 4, **extra))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    g = np.random.RandomState(seed)
    model.train()
    for _ in range(steps):
        idx = g.choice(len(x_tr), 64, replace=False)
        logits = model(torch.from_numpy(x_tr[idx]))
        loss = torch.stack([torch.nn.functional.cross_entropy(lt, torch.from_numpy(y_tr[idx]))
                            for lt in logits]).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()
