#!/usr/bin/env python
"""CPU inference of the same networks in every runtime, and in the SNN tools people use instead.

One process times, per network, the median wall time of one batch (reported per sample) in:

* ``onnx``           our ONNX file in onnxruntime, default session (``ORT_ENABLE_ALL`` minus the
                     rewrites that change roundings; bit-exact, see lmh_deploy.onnx.run)
* ``onnx-noopt``     the same file with graph optimizations disabled (the previous default)
* ``deployed-torch`` the DeployGraph in torch (``lmh_deploy.graph.interpret.run_torch``)
* ``torch-eager``    the trained module in torch eager (``model.run``, no_grad)
* for the LIF networks, the folded weights (same currents, exact-sum grid) run by each peer's own
  LIF neuron: ``snntorch`` (``snn.Leaky``, subtract reset, ``reset_delay=False``),
  ``spikingjelly`` (``LIFNode``, ``decay_input=False``, soft reset, CPU/torch path, multi-step),
  ``norse`` (``LIFBoxCell`` with ``reset_subtract``). Each peer starts from our ``v(0) = theta/2``.
  Their spikes are compared with the reference interpreter's, layer by layer.

Networks: digits MLP and CNN (1x8x8) and ResNet-19 (3x32x32) at T = 4 and 16, LIF (decay 0.5,
theta 1) and LM-H. Weights are **random with realistic eval-mode BN statistics and random LM-H
parameters** (timing does not depend on training; firing rates are reported per network so that
a degenerate network would show). Timings alternate the runtimes within each repeat, so load from
other processes hits them alike; ratios are of medians.

    python benchmarks/bench_cpu_inference.py [--repeats 5] [--out benchmarks/results_cpu_inference.json]
        [--only resnet19-T4,digits-cnn] [--threads 1]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lmh_deploy.onnx.write import write_onnx
from lmh_deploy.graph.fold import fold
from lmh_deploy.graph.interpret import TorchBackend, run_reference, run_torch
from lmh_deploy.models import build_model, default_config
from lmh_deploy.neurons import LMHNeuron
from lmh_deploy.onnx.run import load_onnx, run_onnx_model

#: label, arch, input shape, T, batch
NETWORKS = [
    ("digits-mlp", "mlp", (1, 8, 8), 4, 64),
    ("digits-cnn", "cnn", (1, 8, 8), 4, 64),
    ("resnet19-T4", "resnet19", (3, 32, 32), 4, 8),
    ("resnet19-T16", "resnet19", (3, 32, 32), 16, 2),
]
NEURONS = ("lif", "lmh")
PEERS = ("snntorch", "spikingjelly", "norse")


def make_model(arch: str, neuron: str, shape, t: int, seed: int = 0):
    """Random weights, realistic eval-mode BN (mean in [-0.3, 0.3], var in [0.5, 2], gamma in
    [0.5, 1.5], beta in [-0.1, 0.5]) and, for LM-H, raw parameters ~ N(0, 1)."""
    torch.manual_seed(seed)
    m = build_model(default_config(arch, neuron, timesteps=t, input_shape=shape))
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, nn.modules.batchnorm._BatchNorm):
                n = mod.num_features
                mod.running_mean.copy_(torch.rand(n, generator=g) * 0.6 - 0.3)
                mod.running_var.copy_(torch.rand(n, generator=g) * 1.5 + 0.5)
                mod.weight.copy_(torch.rand(n, generator=g) + 0.5)
                mod.bias.copy_(torch.rand(n, generator=g) * 0.6 - 0.1)
            elif isinstance(mod, LMHNeuron):
                for p in (mod.x_mu_d, mod.x_mu_s, mod.x_lam_s, mod.x_lam_d):
                    p.copy_(torch.randn(p.shape, generator=g))
    return m.eval()


def make_input(shape, batch: int, seed: int = 0) -> np.ndarray:
    """Images on the default input grid (multiples of 2**-8 in [0, 1])."""
    x = np.random.RandomState(seed).rand(batch, *shape).astype(np.float32)
    return (np.round(x * 256) / 256).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# peers: the DeployGraph's layers in torch (multi-step), neurons from each tool
# ---------------------------------------------------------------------------------------------


def _lif_constants(spec):
    lam = float(spec.params["lam_s"].reshape(-1)[0])
    for k in ("mu_d", "mu_s"):
        assert not np.any(spec.params[k]), "peer ports need a LIF layer (mu = 0)"
    assert np.all(spec.params["lam_d"] == 1.0) and spec.params["lam_s"].size == 1
    return lam, float(spec.theta), float(spec.v0)


def peer_neuron(peer: str, spec):
    """``f(cur [T, B, ...]) -> spikes [T, B, ...]`` running one of the peers' LIF neurons with the
    constants of ``spec`` (a LIF layer: ``m = lam v + I``, fire at ``m >= theta``, subtract theta,
    ``v(0) = theta / 2``)."""
    lam, theta, v0 = _lif_constants(spec)
    if peer == "snntorch":
        import snntorch as snn

        # reset_delay=False: subtract at the step that fired (our soft reset); fires at m > theta
        lif = snn.Leaky(beta=lam, threshold=theta, reset_mechanism="subtract", reset_delay=False)

        def run(cur):
            mem = torch.full_like(cur[0], v0)
            out = []
            for t in range(cur.shape[0]):
                spk, mem = lif(cur[t], mem)
                out.append(spk)
            return torch.stack(out)
        return run
    if peer == "spikingjelly":
        from spikingjelly.activation_based import functional, neuron

        # decay_input=False, v_reset=None: v = v - v/tau + x, fire at v >= theta, v -= theta
        node = neuron.LIFNode(tau=1.0 / (1.0 - lam), decay_input=False, v_threshold=theta,
                              v_reset=None, step_mode="m")

        def run(cur):
            functional.reset_net(node)
            node.v = v0
            return node(cur)
        return run
    if peer == "norse":
        from norse.torch import LIFBoxCell, LIFBoxParameters
        from norse.torch.functional.lif_box import LIFBoxFeedForwardState
        from norse.torch.functional.reset import reset_subtract

        # v += dt/tau (I' + v_leak - v), dt/tau = 1 - lam; I' = I / (1 - lam); fires at v > theta
        dt = 1e-3
        p = LIFBoxParameters(tau_mem_inv=torch.as_tensor((1.0 - lam) / dt),
                             v_leak=torch.as_tensor(0.0), v_th=torch.as_tensor(theta),
                             reset_method=reset_subtract)
        cell = LIFBoxCell(p, dt=dt)
        gain = 1.0 / (1.0 - lam)

        def run(cur):
            state = LIFBoxFeedForwardState(v=torch.full_like(cur[0], v0))
            out = []
            for t in range(cur.shape[0]):
                z, state = cell(cur[t] * gain, state)
                out.append(z)
            return torch.stack(out)
        return run
    raise ValueError(f"unknown peer {peer!r}")


class PeerNet:
    """A DeployGraph in torch, whole time axis at once ([T*B] batches through each layer, the way
    these tools run multi-step networks), with a peer's neuron in every neuron layer. The first
    layer of a static image is computed once, as in our runtimes."""

    def __init__(self, graph, peer: str, timesteps: int):
        self.graph, self.t = graph, timesteps
        self.params = {op.name: {k: torch.as_tensor(np.asarray(a, np.float32))
                                 for k, a in op.arrays.items() if a is not None}
                       for op in graph.ops}
        self.neurons = {n: peer_neuron(peer, graph.neuron(n)) for n in graph.neuron_names()}

    @torch.no_grad()
    def __call__(self, x):
        g, t = self.graph, self.t
        xq = TorchBackend().quantize_input(x, g.input_quantum, g.input_bound)
        vals, static, spikes = {"input": xq}, {"input"}, {}

        def steps(v, name):  # [T, B, ...] view of a static or per-step value
            return v.expand(t, *v.shape) if name in static else v

        for op in g.ops:
            a = vals[op.inputs[0]]
            st = op.inputs[0] in static
            flat = a if st else a.flatten(0, 1)
            p = self.params[op.name]
            if op.kind == "synapse":
                if op.attrs["op"] == "conv":
                    y = F.conv2d(flat, p["weight"], p["bias"], stride=op.attrs["stride"],
                                 padding=op.attrs["padding"])
                else:
                    y = F.linear(flat, p["weight"], p["bias"])
            elif op.kind == "sumpool":
                y = F.avg_pool2d(flat, op.attrs["kernel"], divisor_override=1)
            elif op.kind == "flatten":
                y = flat.flatten(1)
            elif op.kind == "scale":
                y = flat * p["factor"]
            elif op.kind == "add":
                b = vals[op.inputs[1]]
                y = steps(a, op.inputs[0]) + steps(b, op.inputs[1])
                vals[op.name] = y
                continue
            elif op.kind == "neuron":
                y = self.neurons[op.name](steps(a, op.inputs[0]))
                spikes[op.name] = y
                vals[op.name] = y
                continue
            else:
                raise ValueError(op.kind)
            if st:
                static.add(op.name)
                vals[op.name] = y
            else:
                vals[op.name] = y.unflatten(0, a.shape[:2])
        return steps(vals[g.output], g.output), spikes


# ---------------------------------------------------------------------------------------------
# timing
# ---------------------------------------------------------------------------------------------


def _time_all(fns: dict, repeats: int) -> dict:
    """Median seconds of each callable; one warm-up each, then ``repeats`` rounds in which every
    callable runs once (interleaved, so background load hits all of them alike)."""
    for f in fns.values():
        f()
    ts = {k: [] for k in fns}
    for _ in range(repeats):
        for k, f in fns.items():
            t0 = time.perf_counter()
            f()
            ts[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in ts.items()}


def bench_network(label, arch, shape, t, batch, neuron, repeats: int, peers=PEERS,
                  threads: int | None = None) -> dict:
    """One row: per-sample times of every runtime, ratios, and the peers' spike agreement."""
    model = make_model(arch, neuron, shape, t)
    graph = fold(model)
    x = make_input(shape, batch)
    ref = run_reference(graph, x)
    row = {"network": label, "neuron": neuron, "arch": arch, "T": t, "batch": batch,
           "firing_rate": {k: float(v.mean()) for k, v in ref.spikes.items()}}
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "m.onnx")
        write_onnx(graph, path)
        ort_opt = load_onnx(path, threads=threads)
        ort_noopt = load_onnx(path, threads=threads, optimization="disable")
        # exactness of what is timed: the optimized session's logits are the reference's bits
        row["onnx_logits_bit_exact"] = bool(np.array_equal(run_onnx_model(ort_opt, x).logits,
                                                           ref.logits))
        xt = torch.as_tensor(x)

        def eager():
            with torch.no_grad():
                model.run(xt)

        fns = {"onnx": lambda: run_onnx_model(ort_opt, x),
               "onnx-noopt": lambda: run_onnx_model(ort_noopt, x),
               "deployed-torch": lambda: run_torch(graph, x),
               "torch-eager": eager}
        agreement = {}
        if neuron == "lif":
            for peer in peers:
                net = PeerNet(graph, peer, t)
                logits, spikes = net(x)
                per_layer = {k: float(np.mean(spikes[k].numpy() == ref.spikes[k]))
                             for k in ref.spikes}
                agreement[peer] = {
                    "spikes_equal_fraction_min": min(per_layer.values()),
                    "spikes_equal_fraction_mean": float(np.mean(list(per_layer.values()))),
                    "all_spikes_bit_identical": all(v == 1.0 for v in per_layer.values()),
                    "prediction_agreement": float(np.mean(
                        logits.numpy().mean(0).argmax(-1) == ref.logits.mean(0).argmax(-1)))}
                fns[peer] = (lambda n=net: n(x))
        secs = _time_all(fns, repeats)
    row["seconds_per_batch"] = secs
    row["ms_per_sample"] = {k: 1e3 * s / batch for k, s in secs.items()}
    row["speedup_onnx_vs"] = {k: s / secs["onnx"] for k, s in secs.items() if k != "onnx"}
    row["speedup_vs_torch_eager"] = {k: secs["torch-eager"] / s for k, s in secs.items()}
    if agreement:
        row["peer_agreement"] = agreement
    return row


def _load() -> list:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return []


def run(networks, repeats: int, neurons=NEURONS, peers=PEERS, threads=None, out=None) -> dict:
    """Benchmark every (network, neuron); with ``out``, rewrite the JSON after each row."""
    info = {"machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "onnxruntime": __import__("onnxruntime").__version__, "repeats": repeats,
            "ort_threads": threads or "default", "loadavg_start": _load(),
            "weights": "random, realistic eval-mode BN, LM-H raw parameters ~ N(0,1); LIF decay 0.5"}
    for p in peers:
        info[p] = getattr(__import__(p), "__version__", "?")
    rows = []
    for label, arch, shape, t, batch in networks:
        for neuron in neurons:
            r = bench_network(label, arch, shape, t, batch, neuron, repeats, peers, threads)
            rows.append(r)
            if out:
                from lmh_deploy.atomic import atomic_write_text

                info["loadavg_end"] = _load()
                atomic_write_text(out, json.dumps({"info": info, "rows": rows}, indent=2) + "\n")
            ms = r["ms_per_sample"]
            line = " | ".join(f"{k} {v:.3f} ms" for k, v in ms.items())
            print(f"{label} {neuron}: {line}", flush=True)
            print(f"    onnx speedup vs: " + ", ".join(
                f"{k} {v:.2f}x" for k, v in r["speedup_onnx_vs"].items()), flush=True)
            for p, a in r.get("peer_agreement", {}).items():
                print(f"    {p}: spikes equal {a['spikes_equal_fraction_mean']:.6f} "
                      f"(min layer {a['spikes_equal_fraction_min']:.6f}), predictions "
                      f"{a['prediction_agreement']:.3f}", flush=True)
    info["loadavg_end"] = _load()
    return {"info": info, "rows": rows}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="benchmarks/results_cpu_inference.json")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--only", default="", help="comma-separated network labels (default: all)")
    p.add_argument("--threads", type=int, default=None,
                   help="intra-op threads of onnxruntime and torch alike (default: each its own)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    nets = [n for n in NETWORKS if not args.only or n[0] in args.only.split(",")]
    order = args.only.split(",") if args.only else [n[0] for n in NETWORKS]
    nets.sort(key=lambda n: order.index(n[0]))
    run(nets, args.repeats, threads=args.threads, out=args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
