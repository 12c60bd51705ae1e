"""Lava speed (issue 14): our Lava network (one Process per neuron cluster, lmh_deploy.lava) vs a
network of Lava's own ``Dense`` / ``Conv`` + ``LIF`` processes of the same shape, same steps, both
run in this one process (not isolated); ratio printed. Then the per-sample cost of ResNet-20 at
3x32x32 in Lava.

    .venv/bin/python benchmarks/bench_lava.py [--samples 8] [--json out.json]

The built-in network is a shape twin, not the same model: each of our synapse + neuron clusters
becomes Lava's Dense (linear) or Conv (conv; pooling + flatten folded into the next Dense as a
matrix of the same size) followed by Lava's LIF, fed by the same RingBuffer input and read by a
RingBuffer sink of the same width.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def _builtin_twin(graph, steps, payload):
    """Lava's Dense/Conv + LIF chain of the same layer sizes; returns (source, sink)."""
    from lmh_deploy.lava.cluster import partition
    from lava.proc.conv.process import Conv
    from lava.proc.dense.process import Dense
    from lava.proc.io.sink import RingBuffer as Sink
    from lava.proc.io.source import RingBuffer as Source
    from lava.proc.lif.process import LIF

    shapes = graph.shapes()
    src = Source(data=payload)
    port, prev = src.s_out, int(np.prod(graph.input_shape))
    prev_shape = tuple(graph.input_shape)
    plans = partition(graph)
    for plan in plans:
        syn = [o for o in plan.ops if o.kind == "synapse"][-1]
        out = plan.size
        if syn.attrs["op"] == "conv" and len(plan.ops) == 1:
            w = syn.arrays["weight"]
            c, h, wd = prev_shape
            conv = Conv(weight=np.transpose(w, (0, 2, 3, 1)), input_shape=(wd, h, c),
                        padding=int(syn.attrs["padding"]), stride=int(syn.attrs["stride"]))
            # Lava's Conv reads [W, H, C]: feed it through a reshape of the flat port
            port.reshape((wd, h, c)).connect(conv.s_in)
            a_out = conv.a_out.reshape((out,))
        else:
            dense = Dense(weights=np.random.RandomState(0).randn(out, prev) * 0.05)
            port.connect(dense.s_in)
            a_out = dense.a_out
        if plan.neuron is None:
            sink = Sink(shape=(out,), buffer=steps)
            a_out.connect(sink.a_in)
            return src, sink
        lif = LIF(shape=(out,), du=1.0, dv=0.1, vth=1.0)
        a_out.connect(lif.a_in)
        port, prev, prev_shape = lif.s_out, out, tuple(shapes[plan.name])
    raise AssertionError


def bench_pair(graph, x, label):
    from lmh_deploy.lava.compat import import_lava
    from lmh_deploy.lava.run import run_lava_deploy

    import_lava()
    from lava.magma.core.run_conditions import RunSteps
    from lava.magma.core.run_configs import Loihi2SimCfg

    ours = run_lava_deploy(graph, x, record_spikes=False)
    steps = ours.steps
    payload = np.zeros((int(np.prod(graph.input_shape)), steps))
    src, sink = _builtin_twin(graph, steps, payload)
    t0 = time.perf_counter()
    src.create_runtime(run_cfg=Loihi2SimCfg(select_tag="floating_pt"))
    t1 = time.perf_counter()
    try:
        src.run(condition=RunSteps(num_steps=steps))
        t2 = time.perf_counter()
    finally:
        src.stop()
    ratio = ours.run_s / (t2 - t1)
    print(f"{label:<14} steps {steps:>5}  ours {1000 * ours.step_ms / 1000:.2f} ms/step "
          f"(run {ours.run_s:.2f} s)  built-in {1000 * (t2 - t1) / steps:.2f} ms/step "
          f"(run {t2 - t1:.2f} s)  ratio {ratio:.2f}x")
    return {"steps": steps, "ours_run_s": ours.run_s, "builtin_run_s": t2 - t1, "ratio": ratio,
            "ours_build_s": ours.build_s, "builtin_build_s": t1 - t0}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--json")
    a = ap.parse_args(argv)
    from _deploy_models import grid_inputs, random_model

    from lmh_deploy.graph.fold import fold
    from lmh_deploy.lava.run import run_lava_deploy

    res = {}
    for arch in ("mlp", "cnn"):
        g = fold(random_model(arch, "lif", 4))
        res[arch] = bench_pair(g, grid_inputs(a.samples, (1, 8, 8)), f"digits {arch}")
    g = fold(random_model("resnet20", "lmh", 4, input_shape=(3, 32, 32)))
    n = 2
    run = run_lava_deploy(g, grid_inputs(n, (3, 32, 32)), record_spikes=False)
    per = run.run_s / n
    print(f"ResNet-20 3x32x32 T=4 LM-H: {run.steps} steps, {run.step_ms:.1f} ms/step, "
          f"{per:.2f} s per sample (build {run.build_s:.1f} s)")
    res["resnet20_3x32x32"] = {"steps": run.steps, "step_ms": run.step_ms, "s_per_sample": per,
                               "build_s": run.build_s}
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
