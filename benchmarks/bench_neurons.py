"""Neuron-layer and ResNet-19 training-step benchmark (issue 7), one process, one table, JSON.

Sections (``--sections``, comma-separated):

* ``bw``       device-to-device copy bandwidth (bytes read + written / time): the floor's rate.
* ``layer``    each neuron kind x T in --ts on a bf16 layer ``[T, 64, 128, 32, 32]``, forward +
               backward: eager (reference torch modules), fused (Triton kernels), and SpikingJelly
               2.0's LIF kernel as a peer when importable. Time (median), ratio to the bandwidth
               floor (read x, write s, read dL/ds, write dL/dx: 8 bytes per neuron-step in bf16),
               peak extra memory.
* ``compile``  the same rows for ``torch.compile`` of the reference module (slow to compile).
* ``infer``    forward only at T = 64 (LM-HT: Omega of T = 4 in 16 windows); floor 4 B/neuron-step.
* ``resnet``   ResNet-19 CIFAR training step, bf16 autocast, channels-last: SNN (B=64, T=4) eager,
               fused, and fused with compact spike saving (the training default) vs the same
               network with ReLU at batch 256.
* ``tune``     fused backward elements per thread and programs per SM, per kind and T (graph
               time); the fastest are installed for the later sections and written to the JSON.

Usage: ``python benchmarks/bench_neurons.py --json out.json [--sections bw,layer,infer,resnet]``.
Needs a CUDA GPU.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from lmh_deploy.atomic import atomic_write_text  # noqa: E402
from lmh_deploy.neurons import LIFNeuron, LMHNeuron, LMHTNeuron  # noqa: E402

KINDS = ("lif", "lmh", "lmh-radical", "lmht")


REP_SCALE = 1.0  # --rep-scale: multiplies every repetition / warm-up budget (trimmed runs)


def _bench(fn, rep_ms=300, warmup_ms=60):
    """Median time in ms (CUDA events, L2 flushed between runs)."""
    from triton.testing import do_bench

    return float(do_bench(fn, warmup=max(10, int(warmup_ms * REP_SCALE)),
                          rep=max(20, int(rep_ms * REP_SCALE)), return_mode="median"))


def _peak(fn):
    """Peak memory (GB) allocated by ``fn`` above what was allocated before it."""
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - base) / 1e9


def _graph_ms(step):
    """Median time of ``step`` replayed as one CUDA graph (no CPU launch overhead)."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        step()
    return _bench(graph.replay)


def copy_bandwidth():
    n = 1 << 29  # 1 GiB of bf16
    a = torch.randn(n, device="cuda", dtype=torch.bfloat16)
    b = torch.empty_like(a)
    ms = _bench(lambda: b.copy_(a), rep_ms=500)
    return 2 * a.numel() * a.element_size() / (ms * 1e-3)


def make_neuron(kind, t, levels=2):
    if kind == "lif":
        return LIFNeuron(t, decay=0.5)
    if kind == "lmh":
        return LMHNeuron(t)
    if kind == "lmh-radical":
        return LMHNeuron(t, radical=True)
    if kind == "lmht":
        return LMHTNeuron(t, levels=levels)
    raise ValueError(kind)


def _init(mod, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in mod.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    return mod.cuda()


def _sj_lif():
    """SpikingJelly 2.0 multi-step LIF (soft reset, detached reset) or None if not importable."""
    try:
        from spikingjelly.activation_based import neuron as sjn
    except Exception as e:  # noqa: BLE001
        return None, f"{type(e).__name__}: {e}"
    node = sjn.LIFNode(tau=2.0, v_reset=None, detach_reset=True, step_mode="m").cuda()

    def run(x):
        node.reset()
        return node(x)

    return run, None


def _impl_forward(mod, kind, impl):
    """``(forward, error)`` of one row: SpikingJelly's LIF kernel (LIF rows only), the eager
    reference module, its ``torch.compile``, or the fused kernels. ``(None, None)``: the row does
    not apply (SpikingJelly for a kind other than LIF)."""
    if impl == "spikingjelly":
        if kind != "lif":
            return None, None
        fwd, err = _sj_lif()
        return fwd, None if fwd is not None else "not importable: " + err
    mod.fused = impl == "fused"
    if impl == "compile":
        torch._dynamo.reset()
        return torch.compile(mod.counts), None
    return mod.counts, None


def layer_rows(kinds, ts, impls, bw, shape_rest=(64, 128, 32, 32), dtype=torch.bfloat16):
    rows = []
    for kind in kinds:
        for t in ts:
            n = math.prod(shape_rest)
            floor_ms = 8 * t * n / bw * 1e3  # bf16: x, s, dL/ds, dL/dx
            x = torch.randn((t,) + tuple(shape_rest), device="cuda", dtype=dtype) * 0.8 + 0.3
            x.requires_grad_(True)
            g = torch.randn((t,) + tuple(shape_rest), device="cuda", dtype=dtype)
            for impl in impls:
                row = {"section": "layer", "kind": kind, "T": t, "impl": impl, "dtype": str(dtype),
                       "shape": [t, *shape_rest], "floor_ms": floor_ms}
                try:
                    mod = _init(make_neuron(kind, t))
                    params = [p for p in mod.parameters() if p.requires_grad]
                    fwd, err = _impl_forward(mod, kind, impl)
                    if fwd is None:
                        if err is not None:
                            row["error"] = err
                            rows.append(row)
                            print(_fmt(row), flush=True)
                        continue
                    ins = [x] + params

                    def step():
                        s = fwd(x)
                        torch.autograd.grad(s, ins, grad_outputs=g)

                    t0 = time.time()
                    step()
                    torch.cuda.synchronize()
                    row["first_call_s"] = time.time() - t0
                    row["ms"] = _bench(step)
                    row["x_floor"] = row["ms"] / floor_ms
                    row["peak_gb"] = _peak(step)
                    if impl == "fused" and kind == "lmht":
                        row.update(_regs("lmht_bwd"))
                    try:
                        row["graph_ms"] = _graph_ms(step)
                        row["graph_x_floor"] = row["graph_ms"] / floor_ms
                    except Exception as e:  # noqa: BLE001
                        row["graph_error"] = f"{type(e).__name__}: {str(e)[:200]}"
                except Exception as e:  # noqa: BLE001
                    row["error"] = f"{type(e).__name__}: {str(e)[:300]}"
                rows.append(row)
                print(_fmt(row), flush=True)
            del x, g
    return rows


def infer_rows(kinds, impls, bw, t=64, shape_rest=(64, 128, 32, 32), dtype=torch.bfloat16):
    rows = []
    n = math.prod(shape_rest)
    x = torch.randn((t,) + tuple(shape_rest), device="cuda", dtype=dtype) * 0.8 + 0.3
    for kind in kinds:
        for impl in impls:
            row = {"section": "infer", "kind": kind, "T": t, "impl": impl, "dtype": str(dtype),
                   "floor_ms": 4 * t * n / bw * 1e3}
            try:
                mod = _init(make_neuron(kind, 4 if kind in ("lmht", "lmh-radical") else t))
                fwd, err = _impl_forward(mod, kind, impl)
                if fwd is None:
                    if err is not None:
                        row["error"] = err
                        rows.append(row)
                        print(_fmt(row), flush=True)
                    continue
                with torch.no_grad():
                    fwd(x)
                    row["ms"] = _bench(lambda: fwd(x))
                    row["peak_gb"] = _peak(lambda: fwd(x))
                row["x_floor"] = row["ms"] / row["floor_ms"]
            except Exception as e:  # noqa: BLE001
                row["error"] = f"{type(e).__name__}: {str(e)[:300]}"
            rows.append(row)
            print(_fmt(row), flush=True)
    return rows


def _relu_net(snn):
    """The same ResNet-19 with ReLU in place of every neuron (run at T = 1)."""
    import copy

    net = copy.deepcopy(snn)
    for node in net.nodes:
        if node.kind == "neuron":
            net.layers[node.name] = torch.nn.ReLU(inplace=False)
    net.timesteps = 1
    return net


def resnet_rows(kinds, impls=("eager", "fused", "compact")):
    """ResNet-19 training steps; impls: eager (reference neurons), fused (Triton kernels),
    compact (fused, and spike counts instead of layer outputs kept for backward, as the
    training loop does by default: lmh_deploy.spike_memory)."""
    from lmh_deploy.models import build_model, default_config

    rows = []
    torch.backends.cudnn.benchmark = True

    def measure(net, batch, t, label, kind, fused, compact=False):
        import contextlib

        from lmh_deploy.spike_memory import CompactSpikes

        net = net.cuda().to(memory_format=torch.channels_last)
        for m in net.modules():
            if hasattr(m, "fused"):
                m.fused = fused
        opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
        img = torch.randn(batch, 3, 32, 32, device="cuda").to(memory_format=torch.channels_last)
        lab = torch.randint(0, 10, (batch,), device="cuda")

        def step():
            opt.zero_grad(set_to_none=True)
            keep = CompactSpikes(net) if compact else contextlib.nullcontext()
            with torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=False), keep:
                logits = net(img, timesteps=t).mean(0)
                loss = torch.nn.functional.cross_entropy(logits.float(), lab)
            loss.backward()
            opt.step()

        row = {"section": "resnet", "net": label, "kind": kind, "batch": batch, "T": t}
        try:
            for _ in range(3):
                step()
            row["ms"] = _bench(step, rep_ms=1000, warmup_ms=200)
            row["peak_gb"] = _peak(step)
            try:  # the whole step as one CUDA graph: GPU time without Python launch overhead
                row["graph_ms"] = _graph_ms(step)
            except Exception as e:  # noqa: BLE001
                row["graph_error"] = f"{type(e).__name__}: {str(e)[:200]}"
        except Exception as e:  # noqa: BLE001
            row["error"] = f"{type(e).__name__}: {str(e)[:300]}"
        rows.append(row)
        print(_fmt(row), flush=True)
        return row

    base_cfg = default_config("resnet19", neuron="lmh", timesteps=4, num_classes=10,
                              input_shape=(3, 32, 32))
    relu = measure(_relu_net(build_model(base_cfg)), 256, 1, "relu", "relu", False)
    for kind in kinds:
        cfg = default_config("resnet19", neuron=kind, timesteps=4, num_classes=10,
                             input_shape=(3, 32, 32))
        for impl in impls:
            r = measure(build_model(cfg), 64, 4, "snn", kind, impl != "eager", impl == "compact")
            r["impl"] = impl
            if "ms" in r and "ms" in relu:
                r["x_relu"] = r["ms"] / relu["ms"]
            if "graph_ms" in r and "graph_ms" in relu:
                r["graph_x_relu"] = r["graph_ms"] / relu["graph_ms"]
    return rows


def profile_resnet(kind="lmh", batch=64, t=4):
    """torch.profiler table of one fused SNN ResNet-19 training step (GPU kernels by time)."""
    from torch.profiler import ProfilerActivity, profile

    from lmh_deploy.models import build_model, default_config

    net = build_model(default_config("resnet19", neuron=kind, timesteps=t, num_classes=10,
                                     input_shape=(3, 32, 32))).cuda()
    net = net.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    img = torch.randn(batch, 3, 32, 32, device="cuda").to(memory_format=torch.channels_last)
    lab = torch.randint(0, 10, (batch,), device="cuda")

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = torch.nn.functional.cross_entropy(net(img).mean(0).float(), lab)
        loss.backward()
        opt.step()

    for _ in range(3):
        step()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(3):
            step()
        torch.cuda.synchronize()
    print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=25, max_name_column_width=60))
    return []


def tune_rows(bw, ts=(4, 10), kinds=KINDS, lmht_trials=None):
    """Sweep the fused backward's elements per thread and programs per SM (and, for LM-HT,
    dL/dOmega in registers or by tl.dot) by the GPU time of one fwd+bwd step as a CUDA graph;
    install the fastest per (kind, T) and return the rows."""
    from lmh_deploy.kernels import fused as F

    cand = {("lif", 4): (4, 8), ("lmh", 4): (2, 4), ("lmh-radical", 4): (2, 4),
            ("lmht", 4): (1, 2), ("lif", 10): (1, 2), ("lmh", 10): (1, 2),
            ("lmh-radical", 10): (1, 2), ("lmht", 10): (1,)}
    # LM-HT: (elements per thread, dot mode) pairs; mode 0 registers, 1 dL/dOmega by tl.dot,
    # 2 dL/dx by tl.dot too (the registers-only variant cannot go wide at T = 10: T*T accumulators)
    # 3 dL/dOmega by tl.dot of tiles through an L2 scratch (see fused._lmht_bwd_cfg)
    lmht_trials = lmht_trials or {
        4: [(1, False), (2, False), (2, True), (4, True), (2, 2), (4, 2), (2, 3), (4, 3)],
        10: [(1, False), (1, True), (2, True), (4, True), (1, 2), (2, 2), (4, 2), (1, 3), (2, 3)]}
    rows, best = [], {}
    orig = (F._lmh_bwd_cfg, F._lmht_bwd_cfg)
    try:
        for kind in kinds:
            dots = (False, True) if kind == "lmht" else (False,)
            for t in ts:
                pts = cand.get((kind, t), (1, 2, 4))
                if kind == "lmht":  # the tl.dot variant frees the T*T registers: try wider
                    pts = sorted(set(pts) | {2, 4})
                trials = [(pt, 4, dot) for dot in dots for pt in pts]
                if kind == "lmht" and t in lmht_trials:
                    trials = [(pt, 4, dot) for pt, dot in lmht_trials[t]]
                res = {}
                for item in trials + [None, None]:
                    if item is None:  # programs per SM around the best elements per thread
                        if not res:
                            continue
                        bpt, _, bdot = min(res, key=res.get)
                        extra = [(bpt, q, bdot) for q in (2, 8) if (bpt, q, bdot) not in res]
                        if not extra:
                            continue
                        item = extra[0]
                    pt, pps, dot = item
                    F._lmh_bwd_cfg = lambda k, sa, npg, v=pt, q=pps: (v, 4, q)
                    F._lmht_bwd_cfg = lambda tt, no, v=pt, q=pps, d=dot: (v, 4, q, d)
                    row = _fused_graph_row(kind, t, bw)
                    row.update(section="tune", per_thread=pt, pps=pps, omega_dot=dot)
                    if kind == "lmht":
                        row.update(_regs("lmht_bwd"))
                    rows.append(row)
                    print(_fmt(row), flush=True)
                    if "graph_ms" in row:
                        res[(pt, pps, dot)] = row["graph_ms"]
                if res:
                    best[(kind, t)] = min(res, key=res.get)
                    pt, pps, dot = best[(kind, t)]
                    print(f"# best {kind} T={t}: per_thread={pt} programs/SM={pps}"
                          + (f" omega_dot={dot}" if kind == "lmht" else "")
                          + f" {res[best[(kind, t)]]:.4f} ms", flush=True)
    finally:
        F._lmh_bwd_cfg, F._lmht_bwd_cfg = orig
    return rows, best


def _regs(name):
    """Registers and spills of the last compiled launch of kernel ``name`` (fused.LAST_KERNELS)."""
    from lmh_deploy.kernels import fused as F

    k = F.LAST_KERNELS.get(name)
    out = {}
    for attr in ("n_regs", "n_spills"):
        if getattr(k, attr, None) is not None:
            out[attr] = int(getattr(k, attr))
    return out


def _fused_graph_row(kind, t, bw, shape_rest=(64, 128, 32, 32), dtype=torch.bfloat16):
    n = math.prod(shape_rest)
    floor_ms = 8 * t * n / bw * 1e3
    row = {"section": "layer", "kind": kind, "T": t, "impl": "fused", "floor_ms": floor_ms}
    try:
        x = torch.randn((t,) + tuple(shape_rest), device="cuda", dtype=dtype) * 0.8 + 0.3
        x.requires_grad_(True)
        g = torch.randn((t,) + tuple(shape_rest), device="cuda", dtype=dtype)
        mod = _init(make_neuron(kind, t))
        ins = [x] + [p for p in mod.parameters() if p.requires_grad]

        def step():
            torch.autograd.grad(mod.counts(x), ins, grad_outputs=g)

        step()
        row["graph_ms"] = _graph_ms(step)
        row["graph_x_floor"] = row["graph_ms"] / floor_ms
        row["ms"], row["x_floor"], row["peak_gb"] = row["graph_ms"], row["graph_x_floor"], 0.0
    except Exception as e:  # noqa: BLE001
        row["error"] = f"{type(e).__name__}: {str(e)[:300]}"
    return row


def install_best(best):
    """Make the fused launchers use the tuned (elements per thread, programs per SM)."""
    from lmh_deploy.kernels import fused as F

    lmh0, lmht0 = F._lmh_bwd_cfg, F._lmht_bwd_cfg

    def lmh_cfg(k, step_acc, need_p):
        kind = "lmh-radical" if step_acc else ("lmh" if need_p else "lif")
        if (kind, k) not in best:
            return lmh0(k, step_acc, need_p)
        pt, pps, _ = best[(kind, k)]
        return pt, 4, pps

    def lmht_cfg(t, need_omega):
        if ("lmht", t) not in best or not need_omega:
            return lmht0(t, need_omega)
        pt, pps, dot = best[("lmht", t)]
        return pt, 4, pps, dot

    F._lmh_bwd_cfg, F._lmht_bwd_cfg = lmh_cfg, lmht_cfg


def _fmt(r):
    if r["section"] == "resnet":
        head = f"resnet19 {r['net']:<5} {r['kind']:<11} B={r['batch']:<3} T={r['T']:<2} {r.get('impl', ''):<6}"
    else:
        head = (f"{r['section']:<6} {r['kind']:<11} T={r['T']:<3} {r['impl']:<12}"
                + (f" pt={r['per_thread']} pps={r.get('pps')}" if "per_thread" in r else "")
                + ({1: " dot", 2: " dot+dx"}.get(int(r.get("omega_dot") or 0), ""))
                + (f" regs={r['n_regs']} spills={r.get('n_spills')}" if "n_regs" in r else ""))
    if "error" in r:
        return head + "  ERROR " + r["error"]
    out = head + f" {r['ms']:9.3f} ms"
    if "x_floor" in r:
        out += f"  {r['x_floor']:6.2f}x floor"
    if "x_relu" in r:
        out += f"  {r['x_relu']:5.2f}x relu"
    out += f"  peak {r['peak_gb']:6.2f} GB"
    if "graph_x_floor" in r:
        out += f"  | graph {r['graph_ms']:8.3f} ms {r['graph_x_floor']:6.2f}x floor"
    elif "graph_ms" in r:
        out += f"  | graph {r['graph_ms']:8.3f} ms" + (
            f" {r['graph_x_relu']:5.2f}x relu" if "graph_x_relu" in r else "")
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--json", default="bench_neurons.json")
    ap.add_argument("--sections", default="bw,layer,infer,resnet")
    ap.add_argument("--kinds", default=",".join(KINDS))
    ap.add_argument("--ts", default="2,4,10")
    ap.add_argument("--impls", default="eager,fused,spikingjelly")
    ap.add_argument("--resnet-kinds", default="lmh,lmht")
    ap.add_argument("--resnet-impls", default="eager,fused,compact")
    ap.add_argument("--tune-kinds", default=",".join(KINDS),
                    help="kinds the tune section sweeps (the others keep fused.py's defaults)")
    ap.add_argument("--lmht-trials", default="",
                    help="LM-HT tune trials 'T:pt/mode,pt/mode;T:...' (mode 0-3, see "
                         "fused._lmht_bwd_cfg); default: the built-in list")
    ap.add_argument("--rep-scale", type=float, default=1.0,
                    help="scale every timing budget (e.g. 0.5 for a trimmed run)")
    args = ap.parse_args(argv)
    global REP_SCALE
    REP_SCALE = args.rep_scale
    if not torch.cuda.is_available():
        raise SystemExit("bench_neurons needs a CUDA GPU")
    secs = args.sections.split(",")
    kinds = args.kinds.split(",")
    ts = [int(v) for v in args.ts.split(",")]
    impls = args.impls.split(",")
    res = {"date": time.strftime("%Y-%m-%d"), "gpu": torch.cuda.get_device_name(),
           "torch": torch.__version__, "python": platform.python_version(), "rows": []}
    try:
        import triton

        res["triton"] = triton.__version__
    except ImportError:
        res["triton"] = None
    bw = copy_bandwidth()
    res["copy_bw_TBps"] = bw / 1e12
    print(f"# {res['gpu']}  torch {res['torch']}  triton {res['triton']}  copy bandwidth "
          f"{bw / 1e12:.2f} TB/s (read+write)", flush=True)
    if "tune" in secs:
        rows, best = tune_rows(bw, ts=tuple(ts), kinds=args.tune_kinds.split(","),
                               lmht_trials=_parse_trials(args.lmht_trials))
        res["rows"] += rows
        res["best"] = {f"{k[0]} T={k[1]}": list(v) for k, v in best.items()}
        install_best(best)
        print("# installed:", res["best"], flush=True)
        _dump(res, args.json)
    if "layer" in secs:
        res["rows"] += layer_rows(kinds, ts, impls, bw)
        _dump(res, args.json)
    if "compile" in secs:
        res["rows"] += layer_rows(kinds, ts, ("compile",), bw)
    if "infer" in secs:
        res["rows"] += infer_rows(kinds, [i for i in impls if i != "compile"], bw)
    if "profile" in secs:
        profile_resnet()
    if "resnet" in secs:
        res["rows"] += resnet_rows(args.resnet_kinds.split(","), args.resnet_impls.split(","))
    _dump(res, args.json)
    print("\n# summary")
    for r in res["rows"]:
        print(_fmt(r))
    _dump(res, args.json)


def _parse_trials(spec):
    """``'4:2/0,2/3;10:1/0'`` -> ``{4: [(2, 0), (2, 3)], 10: [(1, 0)]}`` (None when empty)."""
    if not spec:
        return None
    out = {}
    for part in spec.split(";"):
        t, items = part.split(":")
        out[int(t)] = [tuple(int(v) for v in it.split("/")) for it in items.split(",")]
    return out


def _dump(res, path):
    atomic_write_text(path, json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
