"""Execute a NIR graph (convention ``lmh-nir/1``) in numpy, step by step.

Semantics (DESIGN §3, :mod:`lmh_deploy.nir.write`): at step t every node reads
``u[t] = sum of its incoming edges`` in edge-list order, where a delayed edge (structural, see
:mod:`lmh_deploy.nir.program`) carries its source's value of step t-1 (0 at t = 0), then::

    Input     y = x[t] (quantized: clip(round(x/q), -B/q, B/q)*q when the metadata gives q, B)
    Affine    y = W u + b            Linear  y = W u          Scale  y = s * u
    Conv2d    y = conv2d(u, W) + b   SumPool2d  k x k sums    Flatten  per-sample flatten
    Threshold y = [u > thr]          Output  y = u
    I         v[t] = v[t-1] + r*u[t], v[-1] = metadata v0 (0); y = v[t]
    LIF       v = v + (v_leak - v + r*u)/tau; z = [v > thr]; v = v_reset where z; y = z

Recognised neuron clusters (:class:`lmh_deploy.nir.match.Fused`) run the shared step functions
of :mod:`lmh_deploy.neuron_math`, so files written by ``lmh-export --format nir`` reproduce the
reference spike for spike. The temporal form runs T steps (any T); the unrolled form is one
evaluation whose T ``Input`` / ``Output`` nodes are the steps.
"""
from __future__ import annotations

import numpy as np

from lmh_deploy import neuron_math as nm
from lmh_deploy.errors import TimestepsError
from lmh_deploy.graph.interpret import GraphRun, NumpyBackend
from lmh_deploy.nir.program import NirProgram, load_program


class NumpyNirBackend(NumpyBackend):
    """float32 numpy (the interpreter's back-end plus what NIR primitives need)."""

    @staticmethod
    def zeros(batch, shape):
        return np.zeros((batch,) + tuple(shape), np.float32)

    @staticmethod
    def gt(u, thr):
        return (u > thr).astype(np.float32)

    @staticmethod
    def where(c, a, b):
        return np.where(c > 0, a, b).astype(np.float32)

    @staticmethod
    def reshape(x, shape):
        return x.reshape((x.shape[0],) + tuple(shape))

    @staticmethod
    def batch(x):
        return x.shape[0]


def eval_node(be, node, u, state):
    """One generic primitive at one step: ``(output, new_state)`` (see module docstring)."""
    k, p = node.kind, node.params
    if k in ("Output", "Input"):
        return u, state
    if k in ("Affine", "Linear"):
        return be.linear(u, be.const(p["weight"]), be.const(p["bias"])), state
    if k == "Scale":
        return u * be.const(p["scale"]), state
    if k == "Conv2d":
        return be.conv(u, be.const(p["weight"]), be.const(p["bias"]), p["stride"], p["padding"]), state
    if k == "SumPool2d":
        return be.sumpool(u, p["kernel"]), state
    if k == "Flatten":
        return be.reshape(u, node.out_shape), state
    if k == "Threshold":
        return be.gt(u, be.const(p["threshold"])), state
    if k == "I":
        v = state + be.const(p["r"]) * u
        return v, v
    if k == "LIF":
        v = state + (be.const(p["v_leak"]) - state + be.const(p["r"]) * u) / be.const(p["tau"])
        z = be.gt(v, be.const(p["v_threshold"]))
        return z, be.where(z, be.const(p["v_reset"]) + 0 * v, v)
    raise ValueError(f"node {node.name!r}: no evaluator for {k}")  # pragma: no cover


def fused_init(be, f, batch, shape):
    z = be.zeros(batch, shape)
    if f.model == "lmh":
        return (z + be.const(f.v0[0]), z + be.const(f.v0[1]))
    return z + be.const(f.v0[0])


def fused_step(be, f, state, current):
    """One step of a recognised neuron cluster by :mod:`lmh_deploy.neuron_math`."""
    th = be.const(np.asarray(f.theta, np.float32))
    if f.model == "lmh":
        p = nm.LMHParams(*(be.const(f.params[k]) for k in ("mu_d", "mu_s", "lam_s", "lam_d")),
                         theta=th)
        return nm.lmh_step(be.ops, state, current, p)
    p = nm.LMHTParams(lam=be.const(f.params["lam"]), theta=th, levels=f.levels)
    return nm.lmht_step(be.ops, state, current, p)


class Stepper:
    """The state of one NIR program over time; :meth:`step` evaluates every node once."""

    def __init__(self, prog: NirProgram, be, batch: int):
        self.prog, self.be, self.batch = prog, be, batch
        self.fused_at = {f.entry: f for f in prog.fused}
        self.skip = {n for f in prog.fused for n in f.nodes if n != f.entry}
        self.ins = {n: prog.in_edges(n) for n in prog.order}
        self.prev: dict = {}
        self.state: dict = {}
        for n in prog.order:
            node = prog.nodes[n]
            if n in self.fused_at:
                self.state[n] = fused_init(be, self.fused_at[n], batch, node.out_shape)
            elif node.kind in ("I", "LIF"):
                self.state[n] = be.zeros(batch, node.out_shape) + be.const(node.params["v0"])

    def _read(self, cur, i, a):
        if i in self.prog.delayed:
            v = self.prev.get(a)
            return v if v is not None else self.be.zeros(self.batch, self.prog.nodes[a].out_shape)
        return cur[a]

    def step(self, inputs: dict) -> dict:
        """``inputs`` {Input node name: array [B, ...]} -> every node's output at this step."""
        cur: dict = {}
        for n in self.prog.order:
            if n in self.skip:
                continue
            node = self.prog.nodes[n]
            if node.kind == "Input":
                cur[n] = inputs[n]
                continue
            f = self.fused_at.get(n)
            edges = self.ins[n]
            if f is not None:
                edges = [(i, a) for i, a in edges if a not in f.nodes]
            u = None
            for i, a in edges:
                v = self._read(cur, i, a)
                u = v if u is None else u + v
            if f is not None:
                s, self.state[n] = fused_step(self.be, f, self.state[n], u)
                cur[f.spikes] = s
                continue
            cur[n], st = eval_node(self.be, node, u, self.state.get(n))
            if n in self.state:
                self.state[n] = st
        self.prev = cur
        return cur


def _quantize(be, prog, x):
    q, b = prog.metadata.get("input_quantum"), prog.metadata.get("input_bound")
    if q is None or b is None:
        return be.step([x], 0)
    return be.quantize_input(x, float(q), float(b))


def _spike_map(prog: NirProgram) -> dict:
    out = prog.spike_nodes()
    for n in prog.order:  # hand-written graphs: every un-tagged Threshold / LIF by name
        node = prog.nodes[n]
        if node.kind in ("Threshold", "LIF") and "op" not in node.meta:
            if not any(n in f.nodes and n != f.spikes for f in prog.fused):
                out[n] = [n]
    for f in prog.fused:
        if "op" not in prog.nodes[f.spikes].meta:
            out[f.spikes] = [f.spikes]
    return out


def run_program(prog: NirProgram, x, timesteps: int | None = None,
                be=NumpyNirBackend) -> tuple[list, dict]:
    """Run ``prog`` on ``x`` (static ``[B, *shape]`` or frames ``[T, B, *shape]``).

    Returns ``(logits, spikes)`` in back-end arrays: the per-step readouts (a list over t of
    ``[B, K]``) and ``{layer: list over t of [B, ...]}``; :func:`run_nir` stacks them into a
    :class:`~lmh_deploy.graph.interpret.GraphRun`."""
    shape = prog.nodes[prog.inputs[0]].out_shape
    nd = len(shape)
    xdim = be.ndim(x)
    if xdim not in (nd + 1, nd + 2):
        raise ValueError(f"expected input [B, {', '.join(map(str, shape))}] or [T, B, ...]; got "
                         f"{xdim} dimensions")
    frames = xdim == nd + 2
    spikes_at = _spike_map(prog)
    if prog.form == "unrolled" or len(prog.inputs) > 1:
        T = len(prog.inputs)
        if (timesteps is not None and timesteps != T) or (frames and be.length(x) != T):
            raise TimestepsError(
                f"this unrolled NIR graph has T={T} steps built in; export again with "
                f"--timesteps or use the temporal form to run other T")
        steps = [_quantize(be, prog, be.step(x, t) if frames else x) for t in range(T)]
        xq = {n: steps[t] for t, n in enumerate(prog.inputs)}
        cur = Stepper(prog, be, be.batch(steps[0])).step(xq)
        logits = [cur[o] for o in prog.outputs]
        spikes = {k: [cur[n] for n in v] for k, v in spikes_at.items()}
        return logits, spikes
    if len(prog.outputs) != 1:
        raise ValueError("a temporal NIR graph must have exactly one Output node")
    T = be.length(x) if frames else int(timesteps or prog.metadata.get("timesteps") or 1)
    if frames and timesteps is not None and timesteps != T:
        raise TimestepsError(f"input has {T} frames but timesteps={timesteps} was asked")
    static = None if frames else _quantize(be, prog, x)
    st = None
    logits, spikes = [], {k: [] for k in spikes_at}
    for t in range(T):
        xt = static if static is not None else _quantize(be, prog, be.step(x, t))
        if st is None:
            st = Stepper(prog, be, be.batch(xt))
        cur = st.step({prog.inputs[0]: xt})
        logits.append(cur[prog.outputs[0]])
        for k, v in spikes_at.items():
            spikes[k].append(cur[v[0]])
    return logits, spikes


def load_nir(path, fuse: bool = True) -> NirProgram:
    """Read and check a NIR file (registry loader)."""
    return load_program(path, fuse=fuse)


def run_nir(source, x, timesteps: int | None = None, fuse: bool = True) -> GraphRun:
    """The ``nir`` runtime: NIR file / :class:`NirProgram` -> GraphRun (numpy float32)."""
    prog = source if isinstance(source, NirProgram) else load_program(source, fuse=fuse)
    logits, spikes = run_program(prog, np.asarray(x, np.float32), timesteps)
    return GraphRun(np.stack(logits), {k: np.stack(v) for k, v in spikes.items()})
