"""Read, validate and analyse NIR files under convention ``lmh-nir/2`` (see
:mod:`lmh_deploy.nir.convention` for the convention itself; ``lmh-nir/1`` files load with a
one-line warning).

* :func:`load_program` -- NIR file (ours or hand-written with the same primitives) or
  ``nir.NIRGraph`` -> :class:`NirProgram`: checked nodes with shapes, the **structural** delays
  (independent of names and of node order in the file), a topological order, and the neuron
  clusters recognised for exact evaluation.

Delays. Let C be a strongly connected component of the edge graph with more than one node (or a
self-loop). Its entry is the node with an incoming edge from outside C; C must have exactly one
entry (else the cycle is ambiguous: an error naming the nodes). Edges from inside C into the
entry carry a one-step delay; they are removed and the rule is applied again inside C.

Fused clusters: :mod:`lmh_deploy.nir.match`.
"""
from __future__ import annotations

import heapq
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lmh_deploy.errors import NirGraphError
from lmh_deploy.nir.match import match
from lmh_deploy.nir.file import SUPPORTED, _plain, check_file_timesteps, read_graph


@dataclass
class NirNode:
    """One primitive: ``kind`` (NIR class name), float32 ``params``, node ``meta``, shapes."""

    name: str
    kind: str
    params: dict
    meta: dict
    in_shape: tuple | None = None
    out_shape: tuple | None = None


@dataclass
class NirProgram:
    nodes: dict
    edges: list
    delayed: frozenset          # indices into edges
    order: list                 # topological order of the delay-free graph
    inputs: list                # Input node names, by metadata "step" (unrolled) or name
    outputs: list
    fused: list = field(default_factory=list)
    metadata: dict = field(default_factory=dict)

    @property
    def form(self) -> str:
        return str(self.metadata.get("form", "unrolled" if len(self.inputs) > 1 else "temporal"))

    @property
    def convention_version(self) -> int:
        """The lmh-nir convention the file declares; files without one are read by the current
        one (:data:`lmh_deploy.nir.convention.FORMAT_VERSION`)."""
        from lmh_deploy.nir.convention import FORMAT_TAG, FORMAT_VERSION

        if self.metadata.get("format") == FORMAT_TAG:
            return int(self.metadata.get("format_version", 1))
        return FORMAT_VERSION

    @property
    def timesteps(self) -> int | None:
        """The T the file was exported at (our files say it; hand-written ones may not)."""
        t = self.metadata.get("timesteps")
        return None if t is None else int(t)

    @property
    def input_shape(self) -> tuple | None:
        s = self.metadata.get("input_shape")
        return None if s is None else tuple(int(v) for v in s)

    def check_timesteps(self, timesteps: int) -> int:
        return check_file_timesteps(self.form, self.timesteps, timesteps,
                                    int(self.metadata.get("omega_period", 0) or 0) or None)

    def in_edges(self, name):
        return [(i, a) for i, (a, b) in enumerate(self.edges) if b == name]

    def spike_nodes(self) -> dict:
        """{layer name: [spike-count node per step]} from node metadata (role "spikes")."""
        out: dict = {}
        for n in self.order:
            m = self.nodes[n].meta
            if m.get("role") == "spikes" and "op" in m:
                out.setdefault(str(m["op"]), []).append((int(m.get("step", 0)), n))
        return {k: [n for _, n in sorted(v)] for k, v in out.items()}


# ---------------------------------------------------------------------------------------------
# reading nodes
# ---------------------------------------------------------------------------------------------


def _f32(a):
    return np.asarray(a, dtype=np.float32)


def _node_from_nir(name, node) -> NirNode:
    kind = type(node).__name__
    if kind not in SUPPORTED:
        raise NirGraphError(f"node {name!r}: unknown or unsupported NIR primitive {kind!r}; the "
                            f"lmh NIR runtime runs {', '.join(SUPPORTED)}")
    meta = _plain(dict(node.metadata or {}))
    p: dict = {}
    if kind in ("Affine", "Linear"):
        p["weight"] = _f32(node.weight)
        if p["weight"].ndim != 2:
            raise NirGraphError(f"node {name!r}: {kind} weight must be 2-D, got {p['weight'].shape}")
        p["bias"] = _f32(node.bias) if kind == "Affine" else np.zeros(p["weight"].shape[0], np.float32)
    elif kind == "Scale":
        p["scale64"] = np.asarray(node.scale, np.float64)
        p["scale"] = _f32(node.scale)
    elif kind == "Threshold":
        p["threshold"] = _f32(node.threshold)
    elif kind == "I":
        p["r"] = _f32(node.r)
        p["v0"] = _f32(meta.get("v0", np.zeros_like(p["r"])))
    elif kind == "LIF":
        for k in ("tau", "r", "v_leak", "v_threshold", "v_reset"):
            p[k] = _f32(getattr(node, k))
        p["v0"] = _f32(meta.get("v0", np.zeros_like(p["tau"])))
    elif kind == "Conv2d":
        p["weight"] = _f32(node.weight)
        p["bias"] = _f32(node.bias) if node.bias is not None else np.zeros(p["weight"].shape[0], np.float32)
        st, pd = np.atleast_1d(node.stride), np.atleast_1d(node.padding)
        dil = np.atleast_1d(node.dilation)
        if (len(set(st.tolist())) != 1 or len(set(pd.tolist())) != 1 or np.any(dil != 1)
                or int(node.groups) != 1 or p["weight"].shape[-1] != p["weight"].shape[-2]):
            raise NirGraphError(f"node {name!r}: only square kernels with equal stride/padding, "
                                f"dilation 1 and groups 1 are supported")
        if isinstance(node.padding, str):
            raise NirGraphError(f"node {name!r}: string padding is not supported; give integers")
        p["stride"], p["padding"] = int(st[0]), int(pd[0])
    elif kind == "SumPool2d":
        k, s, pd = (np.atleast_1d(node.kernel_size), np.atleast_1d(node.stride),
                    np.atleast_1d(node.padding))
        if len(set(k.tolist())) != 1 or not np.all(s == k) or np.any(pd != 0):
            raise NirGraphError(f"node {name!r}: SumPool2d must be k x k with stride k and no "
                                f"padding")
        p["kernel"] = int(k[0])
    elif kind == "Flatten":
        p["start_dim"], p["end_dim"] = int(node.start_dim), int(node.end_dim)
    elif kind in ("Input", "Output"):
        t = node.input_type.get("input") if kind == "Input" else node.output_type.get("output")
        p["shape"] = None if t is None else tuple(int(d) for d in np.atleast_1d(t))
    for key, v in p.items():
        if isinstance(v, np.ndarray) and v.dtype.kind == "f" and not np.all(np.isfinite(v)):
            raise NirGraphError(f"node {name!r}: {kind} {key} is not finite (NaN or inf); "
                                f"re-export the model or fix the node")
    return NirNode(name, kind, p, meta)


# ---------------------------------------------------------------------------------------------
# structure: SCCs, delays, order
# ---------------------------------------------------------------------------------------------


def _sccs(nodes, edges):
    """Tarjan's strongly connected components (iterative). ``edges``: list of (a, b)."""
    succ = {n: [] for n in nodes}
    for a, b in edges:
        succ[a].append(b)
    index, low, on, stack, comps = {}, {}, set(), [], []
    counter = 0
    for root in nodes:
        if root in index:
            continue
        work = [(root, iter(succ[root]))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on.add(root)
        while work:
            v, it = work[-1]
            nxt = next(it, None)
            if nxt is not None:
                if nxt not in index:
                    index[nxt] = low[nxt] = counter
                    counter += 1
                    stack.append(nxt)
                    on.add(nxt)
                    work.append((nxt, iter(succ[nxt])))
                elif nxt in on:
                    low[v] = min(low[v], index[nxt])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = set()
                while True:
                    w = stack.pop()
                    on.discard(w)
                    comp.add(w)
                    if w == v:
                        break
                comps.append(comp)
    return comps


def _delays(names, edges) -> tuple[set, list]:
    """Indices of delayed edges, and the top-level components with their entries."""
    delayed: set = set()
    top = []

    def solve(sub, idx, depth):
        sub_edges = [(edges[i][0], edges[i][1]) for i in idx]
        for comp in _sccs(sorted(sub), sub_edges):
            internal = [i for i in idx if edges[i][0] in comp and edges[i][1] in comp]
            if len(comp) == 1 and not internal:
                continue
            entries = sorted({b for i, (a, b) in enumerate(edges)
                              if b in comp and a not in comp and i not in delayed})
            if len(entries) != 1:
                first = sorted(comp)[0]
                what = ("no entry (nothing outside feeds it)" if not entries else
                        f"{len(entries)} entries ({', '.join(entries[:3])})")
                raise NirGraphError(
                    f"node {first!r}: ambiguous cycle through {len(comp)} nodes with {what}; "
                    f"the lmh-nir convention needs exactly one node where a cycle is entered "
                    f"(its in-cycle inputs are delayed by one step)")
            entry = entries[0]
            if depth == 0:
                top.append((frozenset(comp), entry))
            back = [i for i in internal if edges[i][1] == entry]
            delayed.update(back)
            solve(comp, [i for i in internal if i not in delayed], depth + 1)

    solve(set(names), list(range(len(edges))), 0)
    return delayed, top


def _topo(names, edges, delayed) -> list:
    indeg = {n: 0 for n in names}
    succ = {n: [] for n in names}
    for i, (a, b) in enumerate(edges):
        if i not in delayed:
            indeg[b] += 1
            succ[a].append(b)
    ready = [n for n in names if indeg[n] == 0]
    heapq.heapify(ready)
    order = []
    while ready:
        n = heapq.heappop(ready)
        order.append(n)
        for m in succ[n]:
            indeg[m] -= 1
            if indeg[m] == 0:
                heapq.heappush(ready, m)
    return order


# ---------------------------------------------------------------------------------------------
# shapes
# ---------------------------------------------------------------------------------------------


def _infer_shapes(prog: NirProgram):
    intrinsic = {"Scale": "scale", "Threshold": "threshold", "I": "r", "LIF": "tau"}
    for n in prog.order:
        node = prog.nodes[n]
        srcs = [prog.nodes[a] for i, a in prog.in_edges(n)]
        if node.kind == "Input":
            if srcs:
                raise NirGraphError(f"node {n!r}: an Input node cannot have incoming edges")
            if node.params["shape"] is None:
                raise NirGraphError(f"node {n!r}: Input has no shape")
            node.in_shape = node.out_shape = node.params["shape"]
            continue
        if not srcs:
            raise NirGraphError(f"node {n!r}: has no incoming edge (only Input nodes may be "
                                f"sources); connect it or remove it")
        known = [s.out_shape for s in srcs if s.out_shape is not None]
        got = known[0] if known else None
        if node.kind in intrinsic:
            node.in_shape = node.out_shape = tuple(node.params[intrinsic[node.kind]].shape)
        elif node.kind in ("Affine", "Linear"):
            w = node.params["weight"]
            node.in_shape, node.out_shape = (w.shape[1],), (w.shape[0],)
        elif got is None:
            raise NirGraphError(f"node {n!r}: cannot infer its input shape")
        elif node.kind == "Conv2d":
            w, s, p = node.params["weight"], node.params["stride"], node.params["padding"]
            if len(got) != 3 or got[0] != w.shape[1]:
                raise NirGraphError(f"node {n!r}: Conv2d expects [{w.shape[1]}, H, W] input, "
                                    f"got {list(got)}")
            k = w.shape[-1]
            node.in_shape = got
            node.out_shape = (w.shape[0], (got[1] + 2 * p - k) // s + 1, (got[2] + 2 * p - k) // s + 1)
        elif node.kind == "SumPool2d":
            k = node.params["kernel"]
            if len(got) != 3:
                raise NirGraphError(f"node {n!r}: SumPool2d expects [C, H, W], got {list(got)}")
            node.in_shape, node.out_shape = got, (got[0], got[1] // k, got[2] // k)
        elif node.kind == "Flatten":
            sd, ed = node.params["start_dim"], node.params["end_dim"]
            ed = ed % len(got)
            node.in_shape = got
            node.out_shape = got[:sd] + (int(np.prod(got[sd:ed + 1])),) + got[ed + 1:]
        else:  # Output
            node.in_shape = node.out_shape = got
            if node.params.get("shape") is not None and tuple(node.params["shape"]) != got:
                raise NirGraphError(f"node {n!r}: Output declares shape "
                                    f"{list(node.params['shape'])} but receives {list(got)}")
        for s in srcs:
            if s.out_shape is not None and tuple(s.out_shape) != tuple(node.in_shape):
                raise NirGraphError(f"node {n!r}: mismatched shape: input from {s.name!r} is "
                                    f"{list(s.out_shape)}, {node.kind} expects "
                                    f"{list(node.in_shape)}")
    for a, b in prog.edges:  # delayed edges, now that every shape is known
        sa, sb = prog.nodes[a].out_shape, prog.nodes[b].in_shape
        if sa is not None and sb is not None and tuple(sa) != tuple(sb):
            raise NirGraphError(f"node {b!r}: mismatched shape: input from {a!r} is {list(sa)}, "
                                f"expected {list(sb)}")


# ---------------------------------------------------------------------------------------------
# public API
# ---------------------------------------------------------------------------------------------


def load_program(source, fuse: bool = True) -> NirProgram:
    """Read and check a NIR graph (path or ``nir.NIRGraph``) -> :class:`NirProgram`.

    Raises :class:`NirGraphError` (one line, naming the node) for an unknown primitive, a
    mismatched shape, an ambiguous cycle, a dangling edge, a non-finite value, a neuron cluster
    with theta <= 0 or an unreadable file. Warns (one line) for an lmh-nir/1 file (the
    cross-check against the ``deploy`` metadata: :mod:`lmh_deploy.nir.rebuild`).
    """
    g = read_graph(source)
    nodes = {}
    for name, node in g.nodes.items():
        if type(node).__name__ == "NIRGraph":
            raise NirGraphError(f"node {name!r}: nested NIR graphs are not supported; flatten it")
        nodes[name] = _node_from_nir(name, node)
    edges = [(str(a), str(b)) for a, b in g.edges]
    for a, b in edges:
        for x in (a, b):
            if x not in nodes:
                raise NirGraphError(f"node {x!r}: named by edge ({a!r}, {b!r}) but not in the graph")
    if len(set(edges)) != len(edges):
        dup = next(e for e in edges if edges.count(e) > 1)
        raise NirGraphError(f"node {dup[1]!r}: duplicate edge {dup}")
    names = sorted(nodes)
    delayed, top = _delays(names, edges)
    order = _topo(names, edges, delayed)
    if len(order) != len(names):  # pragma: no cover - _delays removes every cycle
        raise NirGraphError("the graph has a cycle that the delay rule could not break")

    def by_step(kind):
        sel = [n for n in names if nodes[n].kind == kind]
        return sorted(sel, key=lambda n: (int(nodes[n].meta.get("step", 0)), n))

    prog = NirProgram(nodes, edges, frozenset(delayed), order, by_step("Input"), by_step("Output"),
                      metadata=_plain(dict(g.metadata or {})))
    if not prog.inputs or not prog.outputs:
        raise NirGraphError("the graph needs at least one Input and one Output node")
    _infer_shapes(prog)
    where = str(source) if isinstance(source, (str, Path)) else "NIR graph"
    if prog.convention_version < 2:
        warnings.warn(f"{where}: convention lmh-nir/1: its delayed edges carry 0 at t = 0, so "
                      f"the literal reading does not decay initial states at the first step "
                      f"(lmh-nir/2 carries their t = -1 value); re-export it", stacklevel=2)
    if fuse:
        prog.fused = [f for f in (match(prog, c, e) for c, e in top) if f is not None]
    return prog
