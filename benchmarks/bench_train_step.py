"""Training-step throughput and peak memory per architecture: fp32 vs bf16 autocast +
channels-last (CUDA), through the same StepRunner the training loop uses.

Usage: python benchmarks/bench_train_step.py [--device cuda] [--archs resnet18,resnet19,vgg13]
       [--batch 64] [--timesteps 4] [--neuron lmh] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import sys
import time


def bench(arch, neuron, t, batch, device, amp, levels=2, steps=5):
    import torch

    from lmh_deploy.models import build_model, default_config
    from lmh_deploy.training.config import resolve_config
    from lmh_deploy.training.distributed import channels_last
    from lmh_deploy.training.extensions import StepRunner
    from lmh_deploy.training.losses import get_loss
    from lmh_deploy.training.optim import build_optimizer

    dev = torch.device(device)
    cfg = resolve_config({"arch": arch, "neuron": neuron, "timesteps": t, "batch_size": batch, "amp": amp,
                          "levels": levels if neuron == "lmht" else None, "lr": 0.01})
    torch.manual_seed(0)
    model = build_model(default_config(arch=arch, neuron=neuron, timesteps=t, num_classes=10,
                                       input_shape=(3, 32, 32), levels=levels)).to(dev)
    channels_last(model, dev, True)
    opt = build_optimizer(model.parameters(), cfg)
    run = StepRunner(cfg, model, model, opt, get_loss("ce"), dev, total_updates=1)
    x = torch.rand(batch, 3, 32, 32, device=dev)
    y = torch.randint(0, 10, (batch,), device=dev)
    model.train()
    loss, _ = run(x, y)  # warm-up
    if dev.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(steps):
        loss, logits = run(x, y)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    dt = (time.perf_counter() - t0) / steps
    out = {"arch": arch, "neuron": neuron, "T": t, "batch": batch, "amp": amp, "step_s": dt,
           "images_per_s": batch / dt, "loss": loss}
    if dev.type == "cuda":
        out["peak_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--archs", default="resnet18,resnet19,vgg13")
    ap.add_argument("--neurons", default="lmh,lmht")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--timesteps", type=int, default=4)
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)
    rows = []
    for arch in a.archs.split(","):
        for neuron in a.neurons.split(","):
            t = 2 if neuron == "lmht" else a.timesteps
            for amp in (False, True):
                r = bench(arch, neuron, t, a.batch, a.device, amp)
                rows.append(r)
                print(f"{arch:9s} {neuron:5s} T={t} amp={str(amp):5s}: {r['step_s'] * 1e3:8.1f} ms/step "
                      f"{r['images_per_s']:8.0f} img/s  loss {r['loss']:.4f}"
                      + (f"  peak {r['peak_mib']:.0f} MiB" if "peak_mib" in r else ""), flush=True)
    print(json.dumps(rows))
    if a.json:
        from lmh_deploy.atomic import atomic_write_text

        atomic_write_text(a.json, json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
