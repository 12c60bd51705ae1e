"""Exact NIR export of a :class:`~lmh_deploy.graph.schema.DeployGraph` (DESIGN §3): the
temporal (streaming) and unrolled forms of convention ``lmh-nir/2``, described in full in
:mod:`lmh_deploy.nir.convention`."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from lmh_deploy.graph.schema import DeployGraph, to_dict
from lmh_deploy.errors import ExportFormatError, require

from lmh_deploy.nir.convention import (CONVENTION, FORMAT_TAG, FORMAT_VERSION, FORMS, META_DEPLOY,
                                       binary_threshold, level_threshold)


# ---------------------------------------------------------------------------------------------
# builder
# ---------------------------------------------------------------------------------------------


class _Builder:
    """Collects nodes and edges; names ``n<seq>_<op>_<role>`` are issued in topological order of
    the delay-free graph, so alphabetical order is topological (``nir.read`` sorts by name)."""

    def __init__(self):
        self.nodes: dict = {}
        self.edges: list = []
        self.seq = 0

    def add(self, node, op: str, role: str, step: int | None = None, name: str | None = None,
            **meta) -> str:
        if name is None:
            tag = f"{op}_{role}" + (f"_t{step}" if step is not None else "")
            name = f"n{self.seq:06d}_{tag}"
            self.seq += 1
        node.metadata = {"op": op, "role": role, **({"step": int(step)} if step is not None
                                                       else {}), **meta}
        self.nodes[name] = node
        return name

    def edge(self, a: str, b: str):
        self.edges.append((a, b))


def _full(shape, value, dtype=np.float32) -> np.ndarray:
    """A parameter broadcast to the layer's full shape (NIR Scale/I/Threshold are elementwise)."""
    return np.broadcast_to(np.asarray(value, dtype=dtype), shape).copy()


def _param(arr: np.ndarray, t: int, shape) -> np.ndarray:
    """Row ``min(t, P-1)`` of a [P, C] table broadcast to the per-sample shape (C = channels)."""
    row = np.asarray(arr[min(t, arr.shape[0] - 1)], np.float32)
    if row.shape[0] == 1:
        return _full(shape, row[0])
    return _full(shape, row.reshape((row.shape[0],) + (1,) * (len(shape) - 1)))


def _f64(x32: np.ndarray) -> np.ndarray:
    return np.asarray(x32, np.float32).astype(np.float64)


# ---------------------------------------------------------------------------------------------
# stateless ops (shared by both forms)
# ---------------------------------------------------------------------------------------------


def _stateless(nir, b: _Builder, op, src: list, shapes: dict, step=None) -> str:
    """Emit one non-neuron op reading the node names ``src``; returns the output node name."""
    shp = shapes[op.inputs[0]]
    if op.kind == "synapse":
        w, bias = op.arrays["weight"], op.arrays["bias"]
        if op.attrs["op"] == "conv":
            s, p = int(op.attrs["stride"]), int(op.attrs["padding"])
            node = nir.Conv2d(input_shape=(int(shp[1]), int(shp[2])), weight=w.copy(),
                              stride=np.array([s, s]), padding=np.array([p, p]),
                              dilation=np.array([1, 1]), groups=1, bias=bias.copy())
        else:
            node = nir.Affine(weight=w.copy(), bias=bias.copy())
        name = b.add(node, op.name, "synapse", step)
    elif op.kind == "add":
        name = b.add(nir.Scale(scale=_full(shapes[op.name], 1.0)), op.name, "add", step)
    elif op.kind == "scale":
        name = b.add(nir.Scale(scale=_full(shapes[op.name], op.arrays["factor"])), op.name,
                     "scale", step)
    elif op.kind == "sumpool":
        k = int(op.attrs["kernel"])
        name = b.add(nir.SumPool2d(kernel_size=np.array([k, k]), stride=np.array([k, k]),
                                   padding=np.array([0, 0])), op.name, "sumpool", step)
    elif op.kind == "flatten":
        name = b.add(nir.Flatten(input_type={"input": np.array(shp)}, start_dim=0, end_dim=-1),
                     op.name, "flatten", step)
    else:  # pragma: no cover - fold produces only known kinds
        raise ExportFormatError(f"op {op.name!r} of kind {op.kind!r} has no NIR form")
    for s_ in src:
        b.edge(s_, name)
    return name


def _spike_nodes(nir, b: _Builder, op: str, membrane: str, shape, theta, levels: int, binary_ge,
                 step=None) -> str:
    """Threshold(s) on ``membrane``; returns the node carrying the spike count."""
    if levels == 1:
        thr = binary_threshold(theta) if binary_ge else level_threshold(theta, 1)
        name = b.add(nir.Threshold(threshold=_full(shape, thr)), op, "spikes", step, level=1)
        b.edge(membrane, name)
        return name
    thrs = []
    for k in range(1, levels + 1):
        t = b.add(nir.Threshold(threshold=_full(shape, level_threshold(theta, k))), op,
                  f"thr{k}", step, level=k)
        b.edge(membrane, t)
        thrs.append(t)
    count = b.add(nir.Scale(scale=_full(shape, 1.0)), op, "spikes", step)
    for t in thrs:
        b.edge(t, count)
    return count


# ---------------------------------------------------------------------------------------------
# temporal form
# ---------------------------------------------------------------------------------------------


def _temporal_neuron(nir, b: _Builder, graph, op, src: str, shape) -> str:
    spec = graph.neuron(op.name)
    th = np.float32(spec.theta)
    if spec.model == "lmh":
        mu_d, mu_s, lam_s, lam_d = (_param(spec.params[k], 0, shape)
                                    for k in ("mu_d", "mu_s", "lam_s", "lam_d"))
        d = b.add(nir.I(r=_full(shape, 1.0)), op.name, "dendrite", v0=_full(shape, 0.0))
        b.edge(src, d)
        dl = b.add(nir.Scale(scale=_f64(mu_d) - 1.0), op.name, "dendrite_decay")
        cpl = b.add(nir.Scale(scale=_f64(lam_d)), op.name, "lam_d")
        s = b.add(nir.I(r=_full(shape, 1.0)), op.name, "soma", v0=_full(shape, spec.v0))
        sl = b.add(nir.Scale(scale=_f64(lam_s) - 1.0), op.name, "soma_decay")
        fb = b.add(nir.Scale(scale=_f64(mu_s)), op.name, "mu_s")
        spk = _spike_nodes(nir, b, op.name, s, shape, th, 1, True)
        rs = b.add(nir.Scale(scale=-(_f64(lam_s) * np.float64(th))), op.name, "soma_reset")
        rd = b.add(nir.Scale(scale=-(_f64(mu_s) * np.float64(th))), op.name, "dendrite_reset")
        for e in ((d, dl), (dl, d), (d, cpl), (cpl, s), (s, sl), (sl, s), (s, fb), (fb, d),
                  (spk, rs), (rs, s), (spk, rd), (rd, d)):
            b.edge(*e)
        return spk
    lam = _param(spec.params["lam"], 0, shape)
    m = b.add(nir.I(r=_full(shape, 1.0)), op.name, "membrane", v0=_full(shape, spec.v0))
    b.edge(src, m)
    ml = b.add(nir.Scale(scale=_f64(lam) - 1.0), op.name, "membrane_decay")
    spk = _spike_nodes(nir, b, op.name, m, shape, th, spec.levels, False)
    r = b.add(nir.Scale(scale=-(_f64(lam) * np.float64(th))), op.name, "membrane_reset")
    for e in ((m, ml), (ml, m), (spk, r), (r, m)):
        b.edge(*e)
    return spk


def _lossy_lif_neuron(nir, b: _Builder, graph, op, src: str, shape) -> str:
    spec = graph.neuron(op.name)
    lam = _f64(_param(spec.params["lam_s"], 0, shape))
    tau = 1.0 / (1.0 - lam)
    node = nir.LIF(tau=tau, r=tau.copy(), v_leak=np.zeros(shape), v_reset=np.zeros(shape),
                   v_threshold=_full(shape, binary_threshold(spec.theta)).astype(np.float64))
    name = b.add(node, op.name, "spikes", lossy="hard reset to 0 (model: subtract theta); v(0)=0 "
                                                 "(model: theta/2)")
    b.edge(src, name)
    return name


def _check_lossy(graph: DeployGraph):
    for n in graph.neuron_names():
        spec = graph.neuron(n)
        p = spec.params
        ok = (spec.model == "lmh" and spec.levels == 1 and spec.time_invariant
              and not np.any(p["mu_d"]) and not np.any(p["mu_s"]) and np.all(p["lam_d"] == 1)
              and np.all(p["lam_s"] < 1) and np.all(p["lam_s"] > 0))
        if not ok:
            raise ExportFormatError(
                f"--lossy-lif writes only LIF-degenerate neurons (mu_D = mu_S = 0, lambda_D = 1, "
                f"0 < lambda_S < 1, time-invariant); layer {n!r} is not; export it without "
                f"--lossy-lif (exact form)")


def _build_temporal(nir, graph: DeployGraph, lossy_lif: bool) -> _Builder:
    if not graph.time_invariant:
        bad = [n for n in graph.neuron_names() if not graph.neuron(n).time_invariant]
        raise ExportFormatError(
            f"layer {bad[0]!r} has a non-causal Omega or per-step (radical) parameters, which "
            f"streaming NIR cannot express; export the unrolled form instead (--form unrolled)")
    if lossy_lif:
        _check_lossy(graph)
    shapes = graph.shapes()
    b = _Builder()
    names = {"input": b.add(nir.Input(input_type={"input": np.array(graph.input_shape)}),
                            "input", "input", name="input")}
    for op in graph.ops:
        if op.kind == "neuron":
            fn = _lossy_lif_neuron if lossy_lif else _temporal_neuron
            names[op.name] = fn(nir, b, graph, op, names[op.inputs[0]], shapes[op.name])
        else:
            names[op.name] = _stateless(nir, b, op, [names[i] for i in op.inputs], shapes)
    out = b.add(nir.Output(output_type={"output": np.array(shapes[graph.output])}), "output",
                "output", name="output")
    b.edge(names[graph.output], out)
    return b


# ---------------------------------------------------------------------------------------------
# unrolled form
# ---------------------------------------------------------------------------------------------


def _sum2(nir, b, op, role, t, shape, a: str, c: str) -> str:
    """A two-input sum node (``Scale(1)``): one float32 rounding, order-free."""
    n = b.add(nir.Scale(scale=_full(shape, 1.0)), op, role, t)
    b.edge(a, n)
    b.edge(c, n)
    return n


def _scale(nir, b, op, role, t, value, src: str) -> str:
    n = b.add(nir.Scale(scale=np.asarray(value, np.float32)), op, role, t)
    b.edge(src, n)
    return n


def _unrolled_neuron(nir, b: _Builder, graph, op, xs: list, shape) -> list:
    """Per-step spike-count node names of one neuron layer fed by per-step currents ``xs``."""
    spec = graph.neuron(op.name)
    th = np.float32(spec.theta)
    n = op.name
    T = len(xs)
    out = []
    if spec.model == "lmh":
        vd = b.add(nir.I(r=_full(shape, 0.0)), n, "dendrite_init", v0=_full(shape, 0.0))
        vs = b.add(nir.I(r=_full(shape, 0.0)), n, "soma_init", v0=_full(shape, spec.v0))
        b.edge(xs[0], vd)
        b.edge(xs[0], vs)
        for t in range(T):
            mu_d, mu_s, lam_s, lam_d = (_param(spec.params[k], t, shape)
                                        for k in ("mu_d", "mu_s", "lam_s", "lam_d"))
            a = _sum2(nir, b, n, "dend_prev", t, shape, _scale(nir, b, n, "mu_d", t, mu_d, vd),
                      _scale(nir, b, n, "mu_s", t, mu_s, vs))
            vd = _sum2(nir, b, n, "dendrite", t, shape, a, xs[t])
            m = _sum2(nir, b, n, "soma", t, shape, _scale(nir, b, n, "lam_s", t, lam_s, vs),
                      _scale(nir, b, n, "lam_d", t, lam_d, vd))
            spk = _spike_nodes(nir, b, n, m, shape, th, 1, True, t)
            out.append(spk)
            if t < T - 1:
                vs = _sum2(nir, b, n, "soma_reset", t, shape, m,
                           _scale(nir, b, n, "reset", t, _full(shape, -th), spk))
        return out
    # LM-HT: Omega mixing, then the multi-level neuron
    if spec.omega is not None:
        om = np.asarray(spec.omega, np.float32)
        w = om.shape[0]
        cur = []
        for t in range(T):
            base = (t // w) * w
            acc = _scale(nir, b, n, f"omega{t % w}_0", t, _full(shape, om[t % w, 0]), xs[base])
            for j in range(1, w):
                term = _scale(nir, b, n, f"omega{t % w}_{j}", t, _full(shape, om[t % w, j]),
                              xs[base + j])
                acc = _sum2(nir, b, n, f"mix{j}", t, shape, acc, term)
            cur.append(acc)
    else:
        cur = list(xs)
    v = b.add(nir.I(r=_full(shape, 0.0)), n, "membrane_init", v0=_full(shape, spec.v0))
    b.edge(xs[0], v)
    for t in range(T):
        lam = _param(spec.params["lam"], t, shape)
        m = _sum2(nir, b, n, "membrane", t, shape, _scale(nir, b, n, "lam", t, lam, v), cur[t])
        spk = _spike_nodes(nir, b, n, m, shape, th, spec.levels, False, t)
        out.append(spk)
        if t < T - 1:
            v = _sum2(nir, b, n, "membrane_reset", t, shape, m,
                      _scale(nir, b, n, "reset", t, _full(shape, -th), spk))
    return out


def _build_unrolled(nir, graph: DeployGraph, timesteps: int) -> _Builder:
    shapes = graph.shapes()
    b = _Builder()
    T = timesteps
    vals = {"input": [b.add(nir.Input(input_type={"input": np.array(graph.input_shape)}),
                            "input", "input", step=t, name=f"input_t{t:04d}") for t in range(T)]}
    for op in graph.ops:
        if op.kind == "neuron":
            vals[op.name] = _unrolled_neuron(nir, b, graph, op, vals[op.inputs[0]],
                                             shapes[op.name])
        else:
            vals[op.name] = [_stateless(nir, b, op, [vals[i][t] for i in op.inputs], shapes, t)
                             for t in range(T)]
    for t in range(T):
        o = b.add(nir.Output(output_type={"output": np.array(shapes[graph.output])}), "output",
                  "output", step=t, name=f"output_t{t:04d}")
        b.edge(vals[graph.output][t], o)
    return b


# ---------------------------------------------------------------------------------------------
# public API
# ---------------------------------------------------------------------------------------------


def export_nir(graph: DeployGraph, form: str = "auto", lossy_lif: bool = False,
               timesteps: int | None = None):
    """DeployGraph -> ``nir.NIRGraph`` under convention lmh-nir/2
    (:mod:`lmh_deploy.nir.convention`).

    ``form``: "temporal" (streaming; time-invariant models), "unrolled" (every model, T
    steps, default the trained T) or "auto" (temporal when the model has one, else unrolled).
    ``lossy_lif`` (temporal only): LIF layers as ``nir.LIF``. Raises ExportFormatError (one
    line) for an unknown form, a temporal form the model has not, a non-finite neuron constant
    or an initial state at or above the first threshold (its t = -1 spikes would reset it).
    """
    nir = require("nir", "nir")
    _check_neurons(graph)
    if form not in FORMS:
        raise ExportFormatError(f"unknown NIR form {form!r}; choose temporal or unrolled")
    if form == "auto":
        form = "temporal" if graph.time_invariant or lossy_lif else "unrolled"
    if lossy_lif and form != "temporal":
        raise ExportFormatError("--lossy-lif writes the temporal form; drop --form unrolled")
    T = graph.check_timesteps(timesteps or graph.timesteps)
    if form == "temporal":
        b = _build_temporal(nir, graph, lossy_lif)
    else:
        b = _build_unrolled(nir, graph, T)
    meta = {"format": FORMAT_TAG, "format_version": FORMAT_VERSION, "convention": CONVENTION,
            "form": form, "lossy": "hard reset, v(0)=0: not the trained model" if lossy_lif
            else "none", "timesteps": int(T), "trained_timesteps": int(graph.timesteps),
            "levels": int(graph.levels), "omega_period": int(graph.omega_period or 0),
            "input_quantum": float(graph.input_quantum),
            "input_bound": float(graph.input_bound), "input_shape": np.array(graph.input_shape),
            "num_classes": int(graph.num_classes), "dataset": str(graph.meta.get("dataset") or ""),
            # the input is raw pixels when a normalization was folded into the first layer
            "input_norm": json.dumps(graph.meta.get("input_norm")),
            META_DEPLOY: json.dumps(to_dict(graph, skip_kinds=("synapse",)))}
    return nir.NIRGraph(nodes=b.nodes, edges=b.edges, metadata=meta, type_check=False)


def _check_neurons(graph: DeployGraph):
    """Refuse constants the convention cannot carry: non-finite values; v0 >= theta (the
    lmh-nir/2 reading takes v0 as the output at t = -1, so such a state would fire then)."""
    for n in graph.neuron_names():
        spec = graph.neuron(n)
        arrays = dict(spec.params, theta=spec.theta, v0=spec.v0)
        if spec.omega is not None:
            arrays["omega"] = spec.omega
        for k, a in arrays.items():
            if not np.all(np.isfinite(np.asarray(a, np.float64))):
                raise ExportFormatError(f"layer {n!r}: neuron constant {k} is not finite (NaN or "
                                        f"inf); the model diverged -- retrain or use an earlier "
                                        f"checkpoint")
        if not float(spec.theta) > 0:
            raise ExportFormatError(f"layer {n!r}: theta = {float(spec.theta):g} must be > 0")
        if not float(spec.v0) < float(spec.theta):
            raise ExportFormatError(f"layer {n!r}: initial state v0 = {float(spec.v0):g} is not "
                                    f"below theta = {float(spec.theta):g}; lmh-nir/2 cannot "
                                    f"declare a state that fires before the first step")


def write_nir(graph: DeployGraph, path, timesteps: int | None = None, form: str = "auto",
              lossy_lif: bool = False, target: str | None = None, dt: float | None = None,
              **_ignored) -> Path:
    """Export ``graph`` and write it to ``path`` (HDF5, ``nir.write``) atomically: the file is
    built in memory (h5py never writes to disk, so a full disk cannot crash it) and written with
    one atomic rename. ``target``: a third-party tool's form instead
    (:mod:`lmh_deploy.nir.targets`, lossy, at ``dt`` s)."""
    import io

    from lmh_deploy.atomic import atomic_write_bytes

    if target is not None:
        if form not in ("auto", "temporal") or lossy_lif:
            raise ExportFormatError("--target writes its own (temporal) form; drop --form / "
                                    "--lossy-lif")
        from lmh_deploy.nir.targets import write_target

        write_target(graph, path, target, dt)
        return Path(path)

    nir = require("nir", "nir")
    g = export_nir(graph, form=form, lossy_lif=lossy_lif, timesteps=timesteps)
    path = Path(path)
    buf = io.BytesIO()
    nir.write(buf, g)
    atomic_write_bytes(path, buf.getvalue())
    return path
