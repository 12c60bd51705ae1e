"""A DeployGraph as Lava-sized clusters, and the numpy step of one cluster (no Lava import).

Lava runs one OS process per Process, so the graph is cut at its neurons: a **cluster** is one
``neuron`` op (or the readout) together with the stateless ops that compute its input current
from the spike counts of earlier neurons and/or the graph input (synapse = conv / linear with its
bias, residual ``add``, shortcut ``scale``, ``sumpool``, ``flatten``). A residual add is two
synapse outputs into one neuron: the cluster reads two sources through two ports.

Timing (DESIGN §3 Lava): every cluster sends at step g what it computed at step g-1, so each hop
adds one step, as Lava's ``Dense`` does; a windowed (learned-Omega) LM-HT neuron adds ``Tw - 1``
more. A cluster whose sources arrive at different offsets (residual branches of different depth)
delays the earlier ones in a per-port delay line so that all its inputs belong to the same
(sample, step). :func:`partition` computes these offsets and delays;
:class:`ClusterStep` is what the Lava ProcessModel (:mod:`lmh_deploy.lava.procs.cluster`) calls
once per Lava step.

Arithmetic:

* ``float`` -- the stateless ops are the reference interpreter's own numpy back-end
  (:class:`~lmh_deploy.graph.interpret.NumpyBackend`) on a batch of one, and the neurons are the
  shared step functions of :mod:`lmh_deploy.neuron_math`; on the DeployGraph's exact-sum grid this
  is bit-identical to the reference.
* ``fixed`` -- Loihi-2 style (:mod:`lmh_deploy.lava.fixed_point`): every synapse (and shortcut
  scale) gets 8-bit weights with one shared exponent per op, its integer sum is shifted left by
  ``weight_exp`` (6 fractional bits, as Lava's ``Dense`` ``weight_exp``), biases are rounded to
  that unit, residual adds align units by exact shifts, currents and state saturate at 24 bits,
  and the neuron runs with 12-bit decays / couplings / Omega (:class:`~lmh_deploy.lava.fixed_point.Q12`).
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np

from lmh_deploy import neuron_math as nm
from lmh_deploy.lava import fixed_point as fx
from lmh_deploy.ops import NumpyOps
from lmh_deploy.timeloop import param_row

MAX_PORTS = 4
WEIGHT_EXP = 6
LMH_KEYS = ("mu_d", "mu_s", "lam_s", "lam_d")


@dataclass
class ClusterPlan:
    """One cluster: ``ops`` (stateless DeployOps in graph order) computing the value ``target``
    from ``sources`` (``"input"`` or neuron names; port k reads source k), then ``neuron`` (the
    neuron op, or None for the readout). ``delays[k]``: steps port k is held back; ``in_offset``:
    global step at which the cluster sees sample 0 step 0; ``out_offset``: global step at which its
    consumers receive it."""

    name: str
    sources: list
    ops: list
    target: str
    neuron: object
    size: int
    delays: list = field(default_factory=list)
    in_offset: int = 0
    out_offset: int = 0


def _window(spec) -> int:
    return 0 if spec is None or spec.omega is None else int(np.asarray(spec.omega).shape[0])


def partition(graph) -> list:
    """Cut ``graph`` into :class:`ClusterPlan` s (neurons in graph order, then the readout) with
    offsets and per-port delays. Raises LavaRuntimeError when a cluster reads more than
    :data:`MAX_PORTS` sources."""
    from lmh_deploy.errors import LavaRuntimeError

    by_name = {o.name: o for o in graph.ops}
    shapes = graph.shapes()
    arrival = {"input": 0}
    plans = []
    targets = [(o.name, o.inputs[0]) for o in graph.ops if o.kind == "neuron"]
    targets.append((graph.output, graph.output))
    for name, target in targets:
        needed, sources, stack = set(), [], [target]
        while stack:
            v = stack.pop()
            if v == "input" or by_name[v].kind == "neuron":
                if v not in sources:
                    sources.append(v)
                continue
            if v in needed:
                continue
            needed.add(v)
            stack.extend(by_name[v].inputs)
        ops = [o for o in graph.ops if o.name in needed]
        order = {o.name: i for i, o in enumerate(graph.ops)}
        sources.sort(key=lambda s: -1 if s == "input" else order[s])
        if len(sources) > MAX_PORTS:
            raise LavaRuntimeError(f"{name}: its input reads {len(sources)} spiking layers; the "
                                   f"Lava builder takes at most {MAX_PORTS}")
        spec = graph.neuron(name) if name != graph.output else None
        a = max(arrival[s] for s in sources)
        plan = ClusterPlan(name, sources, ops, target, spec, int(np.prod(shapes[target])),
                           [a - arrival[s] for s in sources], a)
        if spec is not None:
            plan.out_offset = a + 1 + max(_window(spec) - 1, 0)
            arrival[name] = plan.out_offset
        plans.append(plan)
    return plans


# ----------------------------------------------------------------------------------------------
# stateless ops on one sample (float: the reference back-end; fixed: integers with a unit)
# ----------------------------------------------------------------------------------------------


class _FloatOps:
    def __init__(self, graph, plan):
        from lmh_deploy.graph.interpret import NumpyBackend

        self.be = NumpyBackend
        self.plan = plan

    def source(self, k, a, shape):
        return np.asarray(a, np.float32).reshape((1,) + tuple(shape))

    def run(self, vals):
        be = self.be
        for op in self.plan.ops:
            x = [vals[i] for i in op.inputs]
            if op.kind == "synapse":
                w, b = op.arrays["weight"], op.arrays["bias"]
                if op.attrs["op"] == "conv":
                    y = be.conv(x[0], w, b, op.attrs["stride"], op.attrs["padding"])
                else:
                    y = be.linear(x[0], w, b)
            elif op.kind == "add":
                y = x[0]
                for z in x[1:]:
                    y = y + z
            elif op.kind == "scale":
                y = x[0] * np.asarray(op.arrays["factor"], np.float32)
            elif op.kind == "sumpool":
                y = be.sumpool(x[0], op.attrs["kernel"])
            elif op.kind == "flatten":
                y = be.flatten(x[0])
            else:
                raise ValueError(f"unknown op kind {op.kind!r} ({op.name})")
            vals[op.name] = y
        return np.asarray(vals[self.plan.target], np.float32).reshape(-1)


def _shift_to(v, unit, to):
    """An integer array in ``unit`` -> in the finer unit ``to`` (both powers of two: exact)."""
    r = unit / to
    s = int(round(np.log2(r)))
    if 2.0 ** s == r and s >= 0:
        return v << s
    return np.rint(v * r).astype(np.int64)


class _FixedOps:
    """Integer evaluation: every value is ``(int64 array, unit)`` with real value int * unit."""

    def __init__(self, graph, plan, input_quantum, weight_exp=WEIGHT_EXP):
        self.plan = plan
        self.qin = float(input_quantum)
        self.weight_exp = int(weight_exp)
        self.units = {}
        unit = {s: (self.qin if s == "input" else 1.0) for s in plan.sources}
        self.prepared = {}
        # split synapse (hi + lo): lo is far below the 8-bit weight step; quantize w_hi + w_lo
        # (exact in float64) once as the hi op, skip lo, the split add passes hi through
        by_name = {op.name: op for op in plan.ops}
        lo_of = {o.inputs[0]: by_name.get(o.inputs[1]) for o in plan.ops if o.attrs.get("split")}
        self.split_lo = {o.inputs[1] for o in plan.ops if o.attrs.get("split")}
        for op in plan.ops:
            u = [unit[i] for i in op.inputs]
            if op.name in self.split_lo or op.kind == "add" and op.attrs.get("split"):
                unit[op.name] = u[0]
            elif op.kind == "synapse":
                lo = lo_of.get(op.name)  # w_hi + w_lo and b_hi + b_lo, exact in float64
                w64, b64 = (np.asarray(op.arrays[k], np.float64) + (
                    0.0 if lo is None else np.asarray(lo.arrays[k], np.float64)) for k in ("weight", "bias"))
                qw = fx.quantize_weights(w64 * u[0], weight_exp)
                bias = fx.to_units(b64, qw.q)
                self.prepared[op.name] = (qw.w.astype(np.int64), bias)
                unit[op.name] = qw.q
            elif op.kind == "scale":
                f = np.asarray(op.arrays["factor"], np.float64) * u[0]
                qw = fx.quantize_weights(f, weight_exp)
                self.prepared[op.name] = (qw.w.astype(np.int64), qw.weight_exp)
                unit[op.name] = qw.q
            elif op.kind == "add":
                unit[op.name] = min(u)
            else:
                unit[op.name] = u[0]
        self.unit = unit
        self.q = unit[plan.target]

    def source(self, k, a, shape):
        return np.rint(np.asarray(a, np.float64)).astype(np.int64).reshape((1,) + tuple(shape))

    def run(self, vals):
        from lmh_deploy.graph.interpret import NumpyBackend as be

        unit = self.unit
        for op in self.plan.ops:
            x = [vals[i] for i in op.inputs]
            if op.name in self.split_lo or op.kind == "add" and op.attrs.get("split"):
                y = None if op.name in self.split_lo else x[0]  # lo: folded into hi (__init__)
            elif op.kind == "synapse":
                w, bias = self.prepared[op.name]
                if op.attrs["op"] == "conv":
                    y = _int_conv(x[0], w, op.attrs["stride"], op.attrs["padding"])
                    bias = bias.reshape(1, -1, 1, 1)
                else:
                    y = x[0] @ w.T
                y = fx.saturate((y << self.weight_exp) + bias)
            elif op.kind == "add":
                y = sum(_shift_to(z, unit[i], unit[op.name]) for z, i in zip(x, op.inputs))
                y = fx.saturate(y)
            elif op.kind == "scale":
                w, e = self.prepared[op.name]
                w = w.reshape((1, -1) + (1,) * (x[0].ndim - 2)) if w.ndim else w
                y = fx.saturate((x[0] * w) << e)
            elif op.kind == "sumpool":
                y = be.sumpool(x[0], op.attrs["kernel"])
            elif op.kind == "flatten":
                y = x[0].reshape(x[0].shape[0], -1)
            else:
                raise ValueError(f"unknown op kind {op.kind!r} ({op.name})")
            vals[op.name] = y
        return np.asarray(vals[self.plan.target], np.int64).reshape(-1)


def _int_conv(x, w, stride, padding):
    o, c, k, _ = w.shape
    if padding:
        x = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    win = np.lib.stride_tricks.sliding_window_view(x, (k, k), axis=(2, 3))[:, :, ::stride, ::stride]
    bsz, _, ho, wo = win.shape[:4]
    cols = win.transpose(0, 2, 3, 1, 4, 5).reshape(bsz * ho * wo, c * k * k)
    y = cols @ w.reshape(o, -1).T
    return np.ascontiguousarray(y.reshape(bsz, ho, wo, o).transpose(0, 3, 1, 2))


# ----------------------------------------------------------------------------------------------
# neurons (flattened [N]; per-channel tables repeated over H*W)
# ----------------------------------------------------------------------------------------------


def _table(a, n):
    a = np.asarray(a, np.float64)
    a = a.reshape(a.shape[0], -1) if a.ndim else a.reshape(1, 1)
    return np.repeat(a, n // a.shape[1], axis=1) if a.shape[1] != n else a


class _Neuron:
    """One neuron layer of N units (float32 reference arithmetic or Loihi-2 integers in units
    ``q``); ``step(current, i)`` -> int counts; ``reset()`` at each sample start."""

    def __init__(self, spec, n, fixed, q):
        self.spec, self.fixed = spec, fixed
        self.ops = fx.FixedOps if fixed else NumpyOps
        if fixed:
            self.theta = np.int64(fx.to_units(spec.theta, q))
            self.v0 = fx.saturate(np.full(n, fx.to_units(spec.v0, q), np.int64))
        else:
            self.theta = np.float32(spec.theta)
            self.v0 = np.full(n, np.float32(spec.v0), np.float32)
        if spec.model == "lmh":
            tabs = [_table(spec.params[k], n) for k in LMH_KEYS]
            rows = max(t.shape[0] for t in tabs)
            tabs = [np.repeat(t, rows, 0) if t.shape[0] == 1 else t for t in tabs]
            if fixed:
                self.rows = [(fx.coupling_q12(tabs[0][r]), fx.coupling_q12(tabs[1][r]),
                              fx.decay_q12(tabs[2][r]), fx.decay_q12(tabs[3][r]))
                             for r in range(rows)]
            else:
                self.rows = [tuple(t[r].astype(np.float32) for t in tabs) for r in range(rows)]
        else:
            lam = _table(spec.params["lam"], n)
            self.rows = [fx.decay_q12(lam[r]) if fixed else lam[r].astype(np.float32)
                         for r in range(lam.shape[0])]
        om = spec.omega
        if om is None:
            self.omega_rows = None
        elif fixed:
            self.omega_rows = [[fx.coupling_q12(w) for w in row] for row in np.asarray(om)]
        else:
            self.omega_rows = [[np.float32(w) for w in row] for row in np.asarray(om, np.float32)]
        self.reset()

    def reset(self):
        if self.spec.model == "lmh":
            self.state = (np.zeros_like(self.v0), self.v0.copy())
        else:
            self.state = self.v0.copy()

    def step(self, current, i):
        row = self.rows[param_row(i, len(self.rows))]
        if self.spec.model == "lmh":
            p = nm.LMHParams(*row, theta=self.theta)
            s, st = nm.lmh_step(self.ops, self.state, current, p)
            self.state = tuple(fx.saturate(v) for v in st) if self.fixed else st
        else:
            p = nm.LMHTParams(lam=row, theta=self.theta, levels=int(self.spec.levels))
            s, v = nm.lmht_step(self.ops, self.state, current, p)
            self.state = fx.saturate(v) if self.fixed else v
        return np.asarray(s).astype(np.int32)


# ----------------------------------------------------------------------------------------------
# the per-step driver a ProcessModel calls
# ----------------------------------------------------------------------------------------------


class ClusterStep:
    """The whole per-step behaviour of one cluster, numpy only.

    ``__call__(time_step, inputs)`` takes Lava's 1-based step and the flat arrays received on the
    ports (source order) and returns the int32 spike counts to send at the NEXT step. It writes
    the counts (or, for the readout, the float32 current) of sample b, step i into row
    ``b*period + i`` of ``record`` (a [rows, N] float64 array) when one is given.
    """

    def __init__(self, graph_shapes, plan: ClusterPlan, *, period: int, batch: int, fixed: bool,
                 input_quantum: float = 1.0, graph=None, weight_exp: int = WEIGHT_EXP):
        self.plan, self.period, self.batch, self.fixed = plan, int(period), int(batch), fixed
        self.shapes = [graph_shapes[s] for s in plan.sources]
        self.ops = (_FixedOps(graph, plan, input_quantum, weight_exp) if fixed
                    else _FloatOps(graph, plan))
        self.q = self.ops.q if fixed else 1.0
        self.neuron = None if plan.neuron is None else _Neuron(plan.neuron, plan.size, fixed,
                                                              self.q)
        self.window = _window(plan.neuron)
        self.lines = [deque([np.zeros(int(np.prod(s)))] * d) for s, d in
                      zip(self.shapes, plan.delays)]
        self.zeros = np.zeros(plan.size, np.int32)
        self.record = None
        self._inputs, self._pending = [], []

    def current(self, inputs):
        vals = {}
        for k, (src, a) in enumerate(zip(self.plan.sources, inputs)):
            line = self.lines[k]
            line.append(np.asarray(a))
            vals[src] = self.ops.source(k, line.popleft(), self.shapes[k])
        return self.ops.run(vals)

    def __call__(self, time_step: int, inputs):
        idx = time_step - 1 - self.plan.in_offset
        if idx < 0 or idx >= self.batch * self.period:
            for k, a in enumerate(inputs):          # keep the delay lines moving
                self.lines[k].append(np.asarray(a))
                self.lines[k].popleft()
            return self._pending.pop(0) if self._pending else self.zeros
        cur = self.current(inputs)
        b, i = divmod(idx, self.period)
        if self.neuron is None:
            if self.record is not None:
                self.record[idx] = cur * self.q if self.fixed else cur
            return self.zeros
        if not self.window:
            if i == 0:
                self.neuron.reset()
            s = self.neuron.step(cur, i)
            if self.record is not None:
                self.record[idx] = s
            return s
        self._inputs.append(cur)
        if len(self._inputs) == self.window:
            start = i - self.window + 1
            if start == 0:
                self.neuron.reset()
            mixed = nm.omega_mix(self._inputs, self.neuron.omega_rows)
            self._inputs = []
            self._pending = [self.neuron.step(c, start + j) for j, c in enumerate(mixed)]
            if self.record is not None:
                base = b * self.period + start
                self.record[base: base + self.window] = np.stack(self._pending)
        return self._pending.pop(0) if self._pending else self.zeros


def simulate(graph, payload, plans, steps_of, *, fixed: bool = False, input_quantum: float = 1.0):
    """Lava's message passing without Lava (tests, debugging): ``payload`` [steps, n_in] is the
    input stream; each cluster sends at step g what it returned at g-1. Returns the
    :class:`ClusterStep` s (their ``record`` filled)."""
    shapes = graph.shapes()
    batch, period = steps_of
    runners = [ClusterStep(shapes, p, period=period, batch=batch, fixed=fixed,
                           input_quantum=input_quantum, graph=graph) for p in plans]
    for r in runners:
        r.record = np.zeros((batch * period, r.plan.size))
    sent = {r.plan.name: r.zeros for r in runners}
    for g in range(payload.shape[0]):
        stream = {"input": payload[g]}
        stream.update(sent)
        sent = {r.plan.name: r(g + 1, [stream[s] for s in r.plan.sources]) for r in runners}
    return runners
