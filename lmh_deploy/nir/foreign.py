"""Run NIR graphs written by other tools (snnTorch, Norse, SpikingJelly, Sinabs, the NIR paper) in
numpy, step by step (DESIGN §3 "Import", issue 15): :func:`load_foreign` (read, flatten, check,
place the delays of cycles, order) and :func:`run_foreign`. The discretization of each primitive
and the producers' presets are in :mod:`lmh_deploy.nir.primitives`; reading and shapes in
:mod:`lmh_deploy.nir.foreign_graph`.

Cycles: in each strongly connected component the edge that closes the loop is delayed by one
step, moved back to the edge leaving the nearest neuron (stateful node) on the loop, so a
recurrent ``Affine`` sees the spikes of t−1 and adds its bias at every step, t = 0 included
(snnTorch's ``RLeaky``); a delayed edge carries its source's output of step t−1, at t = 0 the
output of its initial state (no spike; ``v(0)`` for integrators). A loop without a stateful node
is an error.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from lmh_deploy.errors import ForeignNirError, require
from lmh_deploy.nir.foreign_graph import (Node, _plain, _plain_tree, _raw, _shapes,  # noqa: F401
                                          flatten_graph)
from lmh_deploy.nir.primitives import (NEURONS, PRODUCERS, STATEFUL, STEP, SUPPORTED,  # noqa: F401
                                       Rules, get_rules, init_state, initial_output)
from lmh_deploy.nir.stateless import _conv, _pool, eval_stateless  # noqa: F401
from lmh_deploy.nir.program import _sccs, _topo

# ---------------------------------------------------------------------------------------------
# program
# ---------------------------------------------------------------------------------------------


@dataclass
class ForeignProgram:
    """A flattened, checked NIR graph ready to step: nodes (with float32 constants), edges, the
    delayed edge indices, an evaluation order, the Input / Output names and the rules."""

    nodes: dict
    edges: list
    delayed: frozenset
    order: list
    inputs: list
    outputs: list
    rules: Rules
    notes: list = field(default_factory=list)
    metadata: dict = field(default_factory=dict)

    @property
    def input_shape(self) -> tuple:
        return self.nodes[self.inputs[0]].out_shape

    def neuron_nodes(self) -> list:
        return [n for n in self.order if self.nodes[n].kind in NEURONS + ("Threshold",)]


def _delays(nodes, edges) -> set:
    """Indices of the edges that carry a one-step delay (module docstring, "Cycles")."""
    delayed: set = set()
    names = sorted(nodes)
    for _ in range(len(edges) + 1):
        live = [(i, a, b) for i, (a, b) in enumerate(edges) if i not in delayed]
        comps = [c for c in _sccs(names, [(a, b) for _, a, b in live])
                 if len(c) > 1 or any(a == b and a in c for _, a, b in live)]
        if not comps:
            return delayed
        for comp in comps:
            entries = sorted({b for _, a, b in live if b in comp and a not in comp})
            entry = entries[0] if entries else sorted(comp)[0]
            back = [(i, a) for i, a, b in live if b == entry and a in comp]
            for i, a in back:
                cut, src = i, a
                seen = set()
                while nodes[src].kind not in STATEFUL and src not in seen:
                    seen.add(src)
                    preds = [(j, x) for j, x, y in live if y == src and x in comp]
                    if len(preds) != 1:
                        break
                    cut, src = preds[0]
                if nodes[src].kind not in STATEFUL:
                    stateful = sorted(n for n in comp if nodes[n].kind in STATEFUL)
                    if not stateful:
                        raise ForeignNirError(
                            f"node {entry!r}: {nodes[entry].kind} is on a loop without a neuron "
                            f"or integrator ({', '.join(sorted(comp))}); an algebraic loop cannot "
                            f"be stepped")
                    cut = i  # no unique path back: delay the closing edge itself
                delayed.add(cut)
    raise ForeignNirError("the graph's cycles could not be broken")  # pragma: no cover


def infer_dt(nodes) -> float | None:
    """dt from the file when its exporter tied ``r`` to it (snnTorch / SpikingJelly write
    ``r = τ/dt`` for LIF and CubaLIF, SpikingJelly ``r = 1/dt`` for IF); None when no node does."""
    cands = []
    for n in nodes.values():
        raw = n.raw
        if n.kind == "LIF" and raw.get("r") is not None:
            tau, r = np.asarray(raw["tau"], float).ravel(), np.asarray(raw["r"], float).ravel()
            if r.size and not np.allclose(r, 1.0):
                cands.extend((np.broadcast_to(tau, np.broadcast(tau, r).shape)
                              / np.broadcast_to(r, np.broadcast(tau, r).shape)).tolist())
        elif n.kind == "CubaLIF" and raw.get("r") is not None:
            tau, r = np.asarray(raw["tau_mem"], float).ravel(), np.asarray(raw["r"], float).ravel()
            if r.size and not np.allclose(r, 1.0):
                cands.extend((tau / r).tolist() if tau.size == r.size else [])
        elif n.kind == "IF" and raw.get("r") is not None:
            r = np.asarray(raw["r"], float).ravel()
            if r.size and not np.allclose(r, 1.0):
                cands.extend((1.0 / r).tolist())
    if not cands:
        return None
    c = np.asarray(cands)
    if np.allclose(c, c[0], rtol=1e-4) and c[0] > 0:
        return float(f"{c[0]:.6g}")
    return None


def _needs_dt(nodes) -> bool:
    return any(n.kind in STATEFUL for n in nodes.values())


def load_foreign(source, producer: str = "nir", dt: float | None = None, reset: str | None = None,
                 exact: bool = False) -> ForeignProgram:
    """Read and check a NIR graph written by any tool -> :class:`ForeignProgram`.

    ``source``: path or ``nir.NIRGraph``; ``producer``: a :data:`PRODUCERS` key (the
    discretization); ``dt``: seconds per step (default: the producer's, else the one the file's
    ``r`` encodes, else an error asking for ``--dt``). Raises :class:`ForeignNirError` (one line
    naming the node and the primitive) for anything it cannot run.
    """
    rules = get_rules(producer, dt, reset, exact)
    raw = _raw(source)
    if str(_plain(raw.get("type", "NIRGraph"))) != "NIRGraph":
        raise ForeignNirError(f"the file holds a single {raw.get('type')!r} node, not a NIRGraph")
    nodes, edges = flatten_graph(raw)
    notes = []
    for a, b in edges:
        for x in (a, b):
            if x not in nodes:  # pragma: no cover - _resolve checks
                raise ForeignNirError(f"node {x!r}: named by edge ({a!r}, {b!r}) but not in the graph")
    edges = list(dict.fromkeys(edges))
    if rules.dt is None:
        if dt is None:
            guess = infer_dt(nodes)
            if guess is None and _needs_dt(nodes):
                raise ForeignNirError(
                    "the file does not say its time step; give --dt SECONDS (snnTorch, "
                    "SpikingJelly: 1e-4; Norse, Rockpool: 1e-3) or --producer NAME")
            rules = replace(rules, dt=guess if guess is not None else 1.0)
            if guess is not None:
                notes.append(f"dt = {guess:g} s read from the file (r = tau/dt)")
    inputs = sorted(n for n, v in nodes.items() if v.kind == "Input")
    outputs = sorted(n for n, v in nodes.items() if v.kind == "Output")
    if not inputs or not outputs:
        raise ForeignNirError("the graph needs at least one Input and one Output node")
    if len(inputs) > 1:
        raise ForeignNirError(f"node {inputs[1]!r}: Input — graphs with {len(inputs)} Input nodes "
                              f"are not supported by the foreign-NIR runtime")
    for n in nodes:
        ins = [a for a, b in edges if b == n]
        if nodes[n].kind == "Input" and ins:
            raise ForeignNirError(f"node {n!r}: Input has incoming edges")
        if nodes[n].kind != "Input" and not ins:
            raise ForeignNirError(f"node {n!r}: {nodes[n].kind} has no incoming edge (only Input "
                                  f"nodes may be sources); connect it or remove it")
    delayed = _delays(nodes, edges)
    order = _topo(sorted(nodes), edges, delayed)
    prog = ForeignProgram(nodes, edges, frozenset(delayed), order, inputs, outputs, rules, notes,
                          _plain_tree(raw.get("metadata", {}) or {}))
    _shapes(prog)
    return prog



# ---------------------------------------------------------------------------------------------
# running
# ---------------------------------------------------------------------------------------------


class ForeignStepper:
    """The state of a :class:`ForeignProgram` over time; :meth:`step` evaluates every node once."""

    def __init__(self, prog: ForeignProgram, batch: int):
        self.prog, self.batch = prog, batch
        self.ins = {n: [(i, a) for i, (a, b) in enumerate(prog.edges) if b == n] for n in prog.order}
        self.state = {n: init_state(prog.nodes[n], batch, prog.rules) for n in prog.order}
        self.prev = {n: initial_output(prog.nodes[n], self.state[n], batch) for n in prog.order}

    def step(self, x) -> dict:
        """``x`` [B, *input shape] -> {node: output [B, ...]} for this step."""
        cur: dict = {}
        prog = self.prog
        for n in prog.order:
            node = prog.nodes[n]
            if node.kind == "Input":
                cur[n] = x
                continue
            u = None
            for i, a in self.ins[n]:
                v = self.prev[a] if i in prog.delayed else cur[a]
                u = v if u is None else u + v
            if node.kind in STEP:
                cur[n], self.state[n] = STEP[node.kind](node.params, self.state[n], u, prog.rules)
            else:
                cur[n] = eval_stateless(node, u).astype(np.float32)
        self.prev = cur
        return cur


def check_input(prog: ForeignProgram, x, timesteps: int | None = None) -> np.ndarray:
    """``x`` as float32 [T, B, *shape]: frames ``[T, B, *shape]`` as given, a static batch
    ``[B, *shape]`` repeated ``timesteps`` times (required then: foreign files do not say T)."""
    x = np.asarray(x, np.float32)
    shape = prog.input_shape
    nd = len(shape)
    if x.ndim == nd + 2:
        if tuple(x.shape[2:]) != tuple(shape):
            raise ForeignNirError(f"node {prog.inputs[0]!r}: Input expects frames [T, B, "
                                  f"{', '.join(map(str, shape))}], got {list(x.shape)}")
        if timesteps is not None and timesteps != x.shape[0]:
            raise ForeignNirError(f"the input has {x.shape[0]} frames but -T {timesteps} was given")
        return x
    if x.ndim == nd + 1:
        if tuple(x.shape[1:]) != tuple(shape):
            raise ForeignNirError(f"node {prog.inputs[0]!r}: Input expects [B, "
                                  f"{', '.join(map(str, shape))}], got {list(x.shape)}")
        if timesteps is None:
            raise ForeignNirError("static input and the file does not say its T; give -T STEPS "
                                  "(or frames [T, B, ...])")
        return np.broadcast_to(x, (timesteps,) + x.shape).copy()
    raise ForeignNirError(f"node {prog.inputs[0]!r}: wrong input rank {x.ndim} for shape "
                          f"{list(shape)}: give [T, B, {', '.join(map(str, shape))}] frames or "
                          f"[B, {', '.join(map(str, shape))}] with -T")


def run_foreign(prog: ForeignProgram, x, timesteps: int | None = None):
    """Run ``prog`` on ``x`` -> ``(outputs [T, B, ...] of the (first) Output node,
    {neuron / Threshold node: spikes [T, B, ...]})``, numpy float32."""
    x = check_input(prog, x, timesteps)
    st = ForeignStepper(prog, x.shape[1])
    watch = prog.neuron_nodes()
    outs, spikes = [], {n: [] for n in watch}
    for t in range(x.shape[0]):
        cur = st.step(x[t])
        outs.append(cur[prog.outputs[0]])
        for n in watch:
            spikes[n].append(cur[n])
    return np.stack(outs), {n: np.stack(v) for n, v in spikes.items()}


def is_foreign(path) -> bool:
    """True unless the file carries lmh-export's graph metadata (``format: lmh-nir``)."""
    h5py = require("h5py", "nir")
    try:
        with h5py.File(path, "r") as f:
            meta = f.get("node/metadata")
            fmt = meta.get("format") if meta is not None else None
            return fmt is None or _plain(fmt[()]) != "lmh-nir"
    except OSError:
        return True


def agreement(a: dict, b: dict) -> dict:
    """Per shared layer: the fraction of (t, sample, neuron) entries where ``a`` equals ``b``."""
    out = {}
    for k in a:
        if k in b:
            x, y = np.asarray(a[k]), np.asarray(b[k])
            if x.shape != y.shape:
                raise ForeignNirError(f"node {k!r}: spikes of shapes {list(x.shape)} and "
                                      f"{list(y.shape)} cannot be compared")
            out[k] = float(np.mean(x == y)) if x.size else 1.0
    return out
