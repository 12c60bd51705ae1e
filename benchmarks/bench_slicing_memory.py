"""Peak training memory of time-slicing (--slice k) vs full BPTT at T = 2, 4, 8.

Three measures per (mode, T), each configuration in a fresh subprocess:
* ``saved_mib``  -- peak bytes autograd holds for backward (distinct storages; exact, any device);
* ``rss_delta_mib`` -- CPU: growth of the process's peak RSS (ru_maxrss) over two train steps;
* ``cuda_peak_mib`` -- CUDA: torch.cuda.max_memory_allocated during the step.

Usage: python benchmarks/bench_slicing_memory.py [--arch resnet20] [--k 2] [--batch 32]
       [--device cpu] [--json out.json]
Prints one row per configuration and a JSON summary on stdout (and to --json, atomically).
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys


def measure(arch: str, t: int, k: int, batch: int, device: str) -> dict:
    import torch

    from lmh_deploy.models import build_model, default_config
    from lmh_deploy.training.slicing import release, saved_tensor_meter, train_step_sliced

    torch.manual_seed(0)
    shape = (3, 32, 32) if arch != "mlp" else (1, 8, 8)
    model = build_model(default_config(arch=arch, neuron="lmh", timesteps=t, input_shape=shape)).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.rand((batch,) + shape, device=device)
    y = torch.randint(0, 10, (batch,), device=device)

    def tet(logits, y):
        return torch.stack([torch.nn.functional.cross_entropy(o, y) for o in logits]).mean()

    # peak RSS growth over the whole run (warm-up included: ru_maxrss only rises)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    train_step_sliced(model, x, y, opt, tet, k=k)  # warm-up (allocator, optimizer state)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    with saved_tensor_meter() as meter:
        train_step_sliced(model, x, y, opt, tet, k=k, after_step=lambda: release(meter))
    rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out = {"saved_mib": meter["peak"] / 2**20, "rss_delta_mib": (rss1 - rss0) / 1024}
    if device.startswith("cuda"):
        out["cuda_peak_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="resnet20")
    ap.add_argument("--k", type=int, default=2)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--timesteps", default="2,4,8")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", default=None)
    ap.add_argument("--_child", nargs=2, metavar=("T", "K"), help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a._child:
        print(json.dumps(measure(a.arch, int(a._child[0]), int(a._child[1]), a.batch, a.device)))
        return 0
    rows = []
    for t in (int(v) for v in a.timesteps.split(",")):
        for mode, k in (("sliced", a.k), ("bptt", t)):
            cmd = [sys.executable, __file__, "--arch", a.arch, "--batch", str(a.batch), "--device", a.device,
                   "--_child", str(t), str(k)]
            res = subprocess.run(cmd, capture_output=True, text=True, check=True)
            r = {"mode": mode, "T": t, "k": k, **json.loads(res.stdout.strip().splitlines()[-1])}
            rows.append(r)
            print(f"{mode:6s} T={t} k={k}: saved {r['saved_mib']:8.2f} MiB   rss +{r['rss_delta_mib']:8.2f} MiB"
                  + (f"   cuda peak {r['cuda_peak_mib']:8.2f} MiB" if "cuda_peak_mib" in r else ""), flush=True)
    summary = {"arch": a.arch, "batch": a.batch, "k": a.k, "device": a.device, "rows": rows}
    print(json.dumps(summary))
    if a.json:
        from lmh_deploy.atomic import atomic_write_text

        atomic_write_text(a.json, json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
