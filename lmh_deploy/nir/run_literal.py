"""The ``nir-literal`` runtime: any NIR file evaluated node by node exactly as convention
``lmh-nir/2`` reads, with no neuron-cluster recognition.

Every node is the generic evaluator :func:`lmh_deploy.nir.run_numpy.eval_node` computed in
float64 and its output rounded to float32 (``precision="float32"``, the default) or kept in
float64 (``precision="float64"``, for diagnosis). Edges into a node are summed in float64 before
the node's rounding. So the unrolled form, written as float32 products and two-input sums, is
bit-identical to the reference interpreter; the temporal form computes the model's equations in
real arithmetic with one rounding per node, so a spike can differ from the reference only where
a membrane lies within a few float32 ulps of a threshold.

Initial outputs (lmh-nir/2). A delayed edge carries at t = 0 its source's output "at t = -1":
one delay-free evaluation of the graph in which every ``I`` emits its ``v0``, ``LIF`` emits 0
spikes, ``Input`` emits 0 and delayed edges carry 0 (:meth:`LiteralStepper.initial_outputs`).
Files of convention ``lmh-nir/1`` are read by their own rule (delayed edges carry 0 at t = 0),
with a one-line warning.
"""
from __future__ import annotations

import warnings

import numpy as np

from ..errors import TimestepsError
from ..interpreter import GraphRun
from ..nir_graph import NirProgram, load_program
from ..runtimes.nir_runtime import NumpyNirBackend, _quantize, _spike_map, eval_node

PRECISIONS = ("float32", "float64")


class LiteralBackend(NumpyNirBackend):
    """float64 arithmetic; :meth:`out` rounds a node's output to float32 (or keeps float64)."""

    def __init__(self, precision: str = "float32"):
        from ..errors import LmhError

        if precision not in PRECISIONS:
            raise LmhError(f"unknown precision {precision!r} for nir-literal; choose float32 "
                           f"(bit-exact rounding per node) or float64 (diagnosis)")
        self.precision = precision

    def out(self, y):
        y = np.asarray(y, np.float64)
        return y.astype(np.float32).astype(np.float64) if self.precision == "float32" else y

    @staticmethod
    def const(a):
        return np.asarray(a, dtype=np.float64)

    @staticmethod
    def zeros(batch, shape):
        return np.zeros((batch,) + tuple(shape), np.float64)

    @staticmethod
    def gt(u, thr):
        return (u > thr).astype(np.float64)

    @staticmethod
    def where(c, a, b):
        return np.where(c > 0, a, b).astype(np.float64)

    @staticmethod
    def step(x, t):
        return np.asarray(x[t], dtype=np.float32)

    @staticmethod
    def quantize_input(x, q, bound):
        return NumpyNirBackend.quantize_input(x, q, bound).astype(np.float64)

    @staticmethod
    def linear(x, w, b):
        return x @ w.T.astype(np.float64) + b

    @staticmethod
    def conv(x, w, b, stride, padding):
        o, c, k, _ = w.shape
        if padding:
            x = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
        win = np.lib.stride_tricks.sliding_window_view(x, (k, k), axis=(2, 3))
        win = win[:, :, ::stride, ::stride]
        bsz, _, ho, wo = win.shape[:4]
        cols = win.transpose(0, 2, 3, 1, 4, 5).reshape(bsz * ho * wo, c * k * k)
        y = cols @ w.reshape(o, -1).T + b
        return np.ascontiguousarray(y.reshape(bsz, ho, wo, o).transpose(0, 3, 1, 2))


def convention_version(prog: NirProgram) -> int:
    """The lmh-nir convention a file declares (2 when it declares none: the current reading)."""
    meta = prog.metadata
    if meta.get("format") == "lmh-nir":
        return int(meta.get("format_version", 1))
    return 2


class LiteralStepper:
    """Every node of ``prog`` evaluated by :func:`eval_node` at each step (no fused clusters).

    ``trace``: when a dict, each ``Threshold`` node's input (the membrane it compares) and
    output are appended to ``trace[name] = ([u...], [y...])`` at every step."""

    def __init__(self, prog: NirProgram, be: LiteralBackend, batch: int, trace: dict | None = None):
        self.prog, self.be, self.batch, self.trace = prog, be, batch, trace
        self.ins = {n: prog.in_edges(n) for n in prog.order}
        self.state = {n: be.out(be.zeros(batch, prog.nodes[n].out_shape)
                                + be.const(prog.nodes[n].params["v0"]))
                      for n in prog.order if prog.nodes[n].kind in ("I", "LIF")}
        self.prev = self.initial_outputs() if convention_version(prog) >= 2 else {}

    def _zeros(self, n):
        return self.be.zeros(self.batch, self.prog.nodes[n].out_shape)

    def _input(self, n, cur, prev):
        u = None
        for i, a in self.ins[n]:
            v = prev.get(a) if i in self.prog.delayed else cur[a]
            if v is None:
                continue
            u = v if u is None else u + v
        return self.be.zeros(self.batch, self.prog.nodes[n].in_shape) if u is None else u

    def initial_outputs(self) -> dict:
        """Every node's output "at t = -1" (lmh-nir/2): one delay-free evaluation in which I
        emits v0, LIF emits 0 spikes, Input emits 0 and delayed edges carry 0."""
        cur: dict = {}
        for n in self.prog.order:
            node = self.prog.nodes[n]
            if node.kind == "Input" or node.kind == "LIF":
                cur[n] = self._zeros(n)
            elif node.kind == "I":
                cur[n] = self.state[n]
            else:
                y, _ = eval_node(self.be, node, self._input(n, cur, {}), None)
                cur[n] = self.be.out(y)
        return cur

    def step(self, inputs: dict) -> dict:
        cur: dict = {}
        for n in self.prog.order:
            node = self.prog.nodes[n]
            if node.kind == "Input":
                cur[n] = self.be.const(inputs[n])
                continue
            u = self._input(n, cur, self.prev)
            y, st = eval_node(self.be, node, u, self.state.get(n))
            cur[n] = self.be.out(y)
            if n in self.state:
                self.state[n] = cur[n] if node.kind == "I" else self.be.out(st)
            if self.trace is not None and node.kind == "Threshold":
                us, ys = self.trace.setdefault(n, ([], []))
                us.append(u)
                ys.append(cur[n])
        self.prev = cur
        return cur


def load_literal(path) -> NirProgram:
    """Registry loader: read and check a NIR file, no cluster recognition."""
    prog = load_program(path, fuse=False)
    for node in prog.nodes.values():  # TEMP until eval_node reads scale64
        if node.kind == "Scale":
            node.params["scale"] = node.params["scale64"]
    if convention_version(prog) < 2:
        warnings.warn(f"{path}: convention lmh-nir/1: its delayed edges carry 0 at t = 0, so "
                      f"initial states are not decayed at the first step (lmh-nir/2 carries "
                      f"their t = -1 value); re-export it for the model's exact reading",
                      stacklevel=2)
    return prog


def run_literal(source, x, timesteps: int | None = None, precision: str = "float32",
                trace: dict | None = None) -> GraphRun:
    """The ``nir-literal`` runtime: NIR file / program -> GraphRun (float32 arrays).

    ``x``: static ``[B, *shape]`` or frames ``[T, B, *shape]``; ``precision`` "float32" (each
    node's output rounded to float32) or "float64"; ``trace``: see :class:`LiteralStepper`.
    Raises NirGraphError / TimestepsError (one line) for unreadable graphs or a wrong T."""
    prog = source if isinstance(source, NirProgram) else load_literal(source)
    be = LiteralBackend(precision)
    x = np.asarray(x, np.float32)
    shape = prog.nodes[prog.inputs[0]].out_shape
    frames = x.ndim == len(shape) + 2
    if x.ndim not in (len(shape) + 1, len(shape) + 2):
        raise ValueError(f"expected input [B, {', '.join(map(str, shape))}] or [T, B, ...]; got "
                         f"{x.ndim} dimensions")
    spikes_at = _spike_map(prog)

    def quant(a):
        return be.const(_quantize(NumpyNirBackend, prog, a))

    if prog.form == "unrolled" or len(prog.inputs) > 1:
        T = len(prog.inputs)
        if (timesteps is not None and timesteps != T) or (frames and len(x) != T):
            raise TimestepsError(f"this unrolled NIR graph has T={T} steps built in; export "
                                 f"again with --timesteps or use the temporal form")
        steps = [quant(x[t] if frames else x) for t in range(T)]
        cur = LiteralStepper(prog, be, len(steps[0]), trace).step(
            {n: steps[t] for t, n in enumerate(prog.inputs)})
        logits = np.stack([cur[o] for o in prog.outputs])
        spikes = {k: np.stack([cur[n] for n in v]) for k, v in spikes_at.items()}
    else:
        if len(prog.outputs) != 1:
            raise ValueError("a temporal NIR graph must have exactly one Output node")
        T = len(x) if frames else int(timesteps or prog.metadata.get("timesteps") or 1)
        if frames and timesteps is not None and timesteps != T:
            raise TimestepsError(f"input has {T} frames but timesteps={timesteps} was asked")
        static = None if frames else quant(x)
        st, outs, spk = None, [], {k: [] for k in spikes_at}
        for t in range(T):
            xt = static if static is not None else quant(x[t])
            st = st or LiteralStepper(prog, be, len(xt), trace)
            cur = st.step({prog.inputs[0]: xt})
            outs.append(cur[prog.outputs[0]])
            for k, v in spikes_at.items():
                spk[k].append(cur[v[0]])
        logits = np.stack(outs)
        spikes = {k: np.stack(v) for k, v in spk.items()}
    if trace is not None:
        for n, (us, ys) in list(trace.items()):
            trace[n] = (np.stack(us), np.stack(ys))
    f32 = np.float32 if precision == "float32" else np.float64
    return GraphRun(logits.astype(f32), {k: v.astype(f32) for k, v in spikes.items()})
