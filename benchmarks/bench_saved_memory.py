"""Bytes autograd holds for backward in a ResNet-19 training step, on the CPU (issue 7).

The GPU peak memory of a step (``bench_neurons.py --sections resnet``) needs a GPU; what the step
*keeps* between forward and backward does not: every tensor saved for backward passes through
``torch.autograd.graph.saved_tensors_hooks``, so its storage can be counted (each storage once,
with the meter of :mod:`lmh_deploy.training.slicing`).
Three variants of the same bf16-autocast forward: eager (reference neuron modules), fused (the
Triton kernels, run in Triton's interpreter on the CPU), and fused with
:class:`lmh_deploy.spike_memory.CompactSpikes` (the training default). Two batch sizes are
measured and differenced, so the constant part (bf16 weight copies) drops out and the
activation bytes per sample remain.

Usage: ``python benchmarks/bench_saved_memory.py [--kind lmh] [--side 16] [--json out.json]``
(about 3 minutes on 2 CPU cores: the interpreter is slow).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
import warnings

if "TRITON_INTERPRET" not in os.environ:
    os.environ["TRITON_INTERPRET"] = "1"  # before triton is first imported

import torch  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from lmh_deploy.atomic import atomic_write_text  # noqa: E402
from lmh_deploy.models import build_model, default_config  # noqa: E402
from lmh_deploy.neurons import SpikingNeuron  # noqa: E402
from lmh_deploy.spike_memory import CompactSpikes, _Packed  # noqa: E402
from lmh_deploy.training.slicing import count_saved, new_meter, saved_tensor_meter  # noqa: E402


class _MeteredCompact(CompactSpikes):
    """CompactSpikes whose pack hook also meters what it keeps (the tensor, or its counts)."""

    def __init__(self, net, meter):
        super().__init__(net)
        self._meter = meter

    def _pack(self, t):
        kept = super()._pack(t)
        count_saved(self._meter, kept.counts if isinstance(kept, _Packed) else kept)
        return kept


def held_bytes(net, x, fused: bool, compact: bool, timesteps: int) -> int:
    """Bytes of the unique storages autograd keeps for backward after one forward."""
    orig = SpikingNeuron._use_fused
    SpikingNeuron._use_fused = lambda self, inp: fused  # the fused path on CPU tensors too
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16), contextlib.ExitStack() as stack:
            if compact:
                meter = new_meter()
                stack.enter_context(_MeteredCompact(net, meter))
            else:
                meter = stack.enter_context(saved_tensor_meter())
            net(x, timesteps=timesteps)
    finally:
        SpikingNeuron._use_fused = orig
    return meter["peak"]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kind", default="lmh", choices=("lif", "lmh", "lmh-radical", "lmht"))
    ap.add_argument("--side", type=int, default=16, help="image side (CIFAR: 32; 16 is 4x faster)")
    ap.add_argument("--timesteps", type=int, default=4)
    ap.add_argument("--batches", default="2,6", help="two batch sizes to difference")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore", category=DeprecationWarning)  # the interpreter's numpy use
    b0, b1 = (int(v) for v in args.batches.split(","))
    cfg = default_config("resnet19", neuron=args.kind, timesteps=args.timesteps, num_classes=10,
                         input_shape=(3, args.side, args.side))
    torch.manual_seed(0)
    net = build_model(cfg)
    variants = {"eager": (False, False), "fused": (True, False), "compact": (True, True)}
    rows = {}
    for name, (fused, compact) in variants.items():
        t0 = time.time()
        held = [held_bytes(net, torch.randn(b, 3, args.side, args.side), fused, compact,
                           args.timesteps) for b in (b0, b1)]
        per_sample = (held[1] - held[0]) / (b1 - b0)
        rows[name] = {"held_bytes": dict(zip((b0, b1), held)), "activation_bytes_per_sample": per_sample}
        print(f"{name:<8} held {held[0] / 1e6:8.2f} / {held[1] / 1e6:8.2f} MB at B={b0}/{b1}; "
              f"activations {per_sample / 1e6:7.3f} MB per sample  ({time.time() - t0:.0f} s)",
              flush=True)
    eager = rows["eager"]["activation_bytes_per_sample"]
    for name in ("fused", "compact"):
        rows[name]["x_eager"] = rows[name]["activation_bytes_per_sample"] / eager
    rows["compact"]["x_fused"] = (rows["compact"]["activation_bytes_per_sample"]
                                  / rows["fused"]["activation_bytes_per_sample"])
    print(f"activation bytes vs eager: fused {rows['fused']['x_eager']:.3f}, compact "
          f"{rows['compact']['x_eager']:.3f} ({rows['compact']['x_fused']:.3f} of fused)")
    if args.json:
        res = {"date": time.strftime("%Y-%m-%d"), "kind": args.kind, "side": args.side,
               "timesteps": args.timesteps, "torch": torch.__version__, "rows": rows}
        atomic_write_text(args.json, json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
