"""DDP on two CPU processes (gloo) == one process on the combined batch."""
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from lmh_deploy.models import build_model, default_config


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _model(neuron):
    torch.manual_seed(0)
    m = build_model(default_config(arch="cnn", neuron=neuron, timesteps=2, levels=2))
    m.train()
    for mod in m.modules():  # BN off: fixed affine (running stats), weights still trained
        if isinstance(mod, torch.nn.modules.batchnorm._BatchNorm):
            mod.eval()
    return m


def _data():
    g = torch.Generator().manual_seed(1)
    return torch.rand(8, 1, 8, 8, generator=g) * 6, torch.randint(0, 10, (8,), generator=g)


def _step(model, x, y, slice_k=None):
    opt = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
    loss_fn = lambda o, t: torch.nn.functional.cross_entropy(o.mean(0), t)  # noqa: E731
    if slice_k:
        from lmh_deploy.training.slicing import train_step_sliced
        train_step_sliced(model, x, y, opt, loss_fn, k=slice_k)
    else:
        opt.zero_grad()
        loss_fn(model(x), y).backward()
        opt.step()


def _worker(rank, port, out, neuron, slice_k):
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank),
                       "WORLD_SIZE": "2", "LOCAL_RANK": str(rank)})
    torch.set_num_threads(1)
    from lmh_deploy.training.distributed import cleanup, init_distributed, unwrap, wrap_model

    info = init_distributed("cpu")
    try:
        model = wrap_model(_model(neuron), info, torch.device("cpu"))
        x, y = _data()
        half = slice(4 * rank, 4 * rank + 4)
        _step(model, x[half], y[half], slice_k)
        torch.save({k: v.detach().clone() for k, v in unwrap(model).state_dict().items()},
                   os.path.join(out, f"rank{rank}.pt"))
    finally:
        cleanup(info)


@pytest.mark.parametrize("neuron,slice_k", [("lmh", None), pytest.param("lmht", None, marks=pytest.mark.slow),
                                            pytest.param("lmh", 1, marks=pytest.mark.slow)])
def test_two_process_ddp_equals_single_process(tmp_path, neuron, slice_k):
    mp.spawn(_worker, args=(_free_port(), str(tmp_path), neuron, slice_k), nprocs=2, join=True)
    single = _model(neuron)
    x, y = _data()
    _step(single, x, y, slice_k)
    want = single.state_dict()
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    changed = 0
    for k, v in want.items():
        torch.testing.assert_close(r0[k], v, rtol=1e-5, atol=1e-6, msg=k)
        torch.testing.assert_close(r1[k], r0[k], rtol=0, atol=0, msg=k)
        changed += int(not torch.equal(v, _model(neuron).state_dict()[k]))
    assert changed > 5  # the step really moved the weights


def test_single_process_helpers_are_noops():
    from lmh_deploy.training.distributed import (DistInfo, autocast, channels_last, init_distributed,
                                                 train_sampler, wrap_model)

    os.environ.pop("WORLD_SIZE", None)
    info = init_distributed("cpu")
    assert info == DistInfo() and not info.enabled
    m = _model("lmh")
    assert wrap_model(m, info, torch.device("cpu")) is m
    assert train_sampler(list(range(4)), info, 0) is None
    assert channels_last(m, torch.device("cpu")) is m
    with autocast(torch.device("cpu"), True):
        assert torch.get_autocast_dtype("cpu") is not None
    with pytest.raises(ValueError, match="sync-bn needs CUDA"):
        wrap_model(m, DistInfo(0, 2, 0), torch.device("cpu"), sync_bn=True)


@pytest.mark.slow
def test_torchrun_fit_two_cpu_processes(tmp_path):
    """``torchrun --nproc_per_node 2 training/fit.py``: runs, rank 0 writes, BN buffers agree."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(_free_port()), str(root / "training" / "fit.py"), "--epochs", "1",
           "--slice", "2", "--out", str(out), "--progress", "false"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=240, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.count("epoch   1/1") == 1  # only rank 0 logs the epoch line
    m = json.loads((out / "metrics.json").read_text())
    accs = {line.split("test accuracy ")[1].split(" ")[0] for line in res.stdout.splitlines()
            if line.startswith("test accuracy")}
    assert len(accs) == 1 and m["epochs_completed"] == 1  # both ranks evaluated the same model
