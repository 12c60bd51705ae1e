"""Reading a foreign NIR graph (:mod:`lmh_deploy.nir.foreign`): raw HDF5 (or a ``nir.NIRGraph``)
-> flat nodes and edges (nested subgraphs inlined), each node's float32 step constants at the
rules' dt, and the shapes propagated from the Input (a leading batch axis accepted). Every
problem is one :class:`~lmh_deploy.errors.ForeignNirError` line naming the node."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lmh_deploy.errors import ForeignNirError, require
from lmh_deploy.nir.primitives import STATEFUL, SUPPORTED, Rules, _f32, leak_coeffs


def _plain(v):
    if isinstance(v, bytes):
        return v.decode("utf8")
    if isinstance(v, np.ndarray) and v.dtype.kind in "SO":
        return v.item().decode("utf8") if v.ndim == 0 else [_plain(x) for x in v.tolist()]
    if isinstance(v, dict):
        return {k: _plain(a) for k, a in v.items()}
    try:
        import torch

        if isinstance(v, torch.Tensor):
            return v.detach().cpu().numpy()
    except ImportError:  # pragma: no cover
        pass
    return v


def _raw(source) -> dict:
    """The graph as nested dicts (the structure ``nir.write`` stores), from a path or a graph."""
    nir = require("nir", "nir")
    if isinstance(source, nir.NIRNode):
        return _plain_tree(source.to_dict())
    path = Path(source)
    if not path.exists():
        raise ForeignNirError(f"{path}: no such file")
    h5py = require("h5py", "nir")
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise ForeignNirError(f"{path}: not a NIR (HDF5) file ({e})") from None
    with f:
        if "node" not in f:
            raise ForeignNirError(f"{path}: no NIR graph in this HDF5 file (no 'node' group)")

        def rec(g):
            out = {}
            for k, item in g.items():
                out[k] = rec(item) if isinstance(item, h5py.Group) else _plain(item[()])
            return out

        return rec(f["node"])


def _plain_tree(d):
    if isinstance(d, dict):
        return {k: _plain_tree(v) for k, v in d.items()}
    return _plain(d)


@dataclass
class Node:
    name: str
    kind: str
    raw: dict
    params: dict = field(default_factory=dict)
    in_shape: tuple | None = None
    out_shape: tuple | None = None
    declared: tuple | None = None   # Input / Output shape as written


def _edges_of(raw, where):
    e = raw.get("edges", [])
    e = np.asarray(e, dtype=object) if not isinstance(e, list) else e
    out = []
    for pair in (e.tolist() if hasattr(e, "tolist") else e):
        if len(pair) != 2:
            raise ForeignNirError(f"{where}: malformed edge {pair!r}")
        out.append((_plain(pair[0]), _plain(pair[1])))
    return out


def _io_shape(raw):
    for key in ("shape", "input_type", "output_type"):
        if key in raw:
            v = raw[key]
            if isinstance(v, dict):
                v = next(iter(v.values()), None)
            if v is None:
                return None
            return tuple(int(d) for d in np.atleast_1d(np.asarray(v)))
    return None


def flatten_graph(raw: dict, prefix: str = "") -> tuple[dict, list]:
    """Nested NIRGraph dict -> ({name: Node}, [(src, dst)]) with subgraphs inlined."""
    nodes_raw = raw.get("nodes", {})
    nodes: dict = {}
    edges: list = []
    sub_io: dict = {}   # subgraph name -> (inputs {name: [succ]}, outputs {name: [pred]})
    for name, nr in nodes_raw.items():
        full = prefix + name
        kind = str(_plain(nr.get("type", "?")))
        if kind not in SUPPORTED:
            raise ForeignNirError(f"node {full!r}: unsupported NIR primitive {kind!r}; this "
                                  f"runtime runs {', '.join(SUPPORTED)}")
        if kind == "NIRGraph":
            sn, se = flatten_graph(nr, full + ".")
            kinds = {f"{full}.{k}": str(_plain(v.get("type", "?")))
                     for k, v in nr.get("nodes", {}).items()}
            ins = {n: [] for n, t in kinds.items() if t == "Input"}
            outs = {n: [] for n, t in kinds.items() if t == "Output"}
            keep = []
            for a, b in se:
                if a in ins:
                    ins[a].append(b)
                elif b in outs:
                    outs[b].append(a)
                else:
                    keep.append((a, b))
            for n in list(ins) + list(outs):
                del sn[n]
            nodes.update(sn)
            edges.extend(keep)
            sub_io[full] = (ins, outs)
            continue
        nodes[full] = Node(full, kind, nr, declared=_io_shape(nr) if kind in ("Input", "Output") else None)
    local = _edges_of(raw, prefix.rstrip(".") or "graph")
    for a, b in local:
        fa, fb = prefix + a, prefix + b
        srcs = _resolve(fa, sub_io, nodes, "out", (a, b), prefix)
        dsts = _resolve(fb, sub_io, nodes, "in", (a, b), prefix)
        edges.extend((s, d) for s in srcs for d in dsts)
    return nodes, edges


def _resolve(name, sub_io, nodes, side, edge, prefix):
    if name in nodes:
        return [name]
    # "sub" or "sub.port"
    for sub, (ins, outs) in sub_io.items():
        ports = outs if side == "out" else ins
        if name == sub:
            if len(ports) != 1:
                raise ForeignNirError(f"node {sub!r}: edge {edge} names a subgraph with "
                                      f"{len(ports)} {'Outputs' if side == 'out' else 'Inputs'}; "
                                      f"name the port")
            return next(iter(ports.values()))
        if name in ports:
            return ports[name]
    where = prefix.rstrip(".") or "graph"
    raise ForeignNirError(f"node {where!r}: edge {edge} names node {name[len(prefix):]!r} that "
                          f"the graph does not have ({', '.join(sorted(n[len(prefix):] for n in nodes if n.startswith(prefix))[:8])})")


def _arr(node, key, default=None):
    if key not in node.raw or node.raw[key] is None:
        if default is None:
            raise ForeignNirError(f"node {node.name!r}: {node.kind} has no {key!r}")
        return np.asarray(default, np.float64)
    try:
        a = np.asarray(node.raw[key], np.float64)
    except (TypeError, ValueError):
        raise ForeignNirError(f"node {node.name!r}: {node.kind} parameter {key!r} is not "
                              f"numeric") from None
    if not np.all(np.isfinite(a)):
        raise ForeignNirError(f"node {node.name!r}: {node.kind} parameter {key!r} is not finite")
    return a


def _ints(v, n, node, key):
    a = np.atleast_1d(np.asarray(v)).astype(np.int64).tolist()
    if len(a) == 1:
        a = a * n
    if len(a) != n:
        raise ForeignNirError(f"node {node.name!r}: {node.kind} {key} {a} is not {n} integers")
    return tuple(int(x) for x in a)


_NEURON_KEYS = {"I": ("r",), "LI": ("tau", "r", "v_leak"), "IF": ("r", "v_threshold", "v_reset"),
                "LIF": ("tau", "r", "v_leak", "v_threshold", "v_reset"),
                "CubaLI": ("tau_syn", "tau_mem", "r", "v_leak", "w_in"),
                "CubaLIF": ("tau_syn", "tau_mem", "r", "v_leak", "v_threshold", "v_reset", "w_in")}
_DEFAULTS = {"v_reset": 0.0, "v_leak": 0.0, "w_in": 1.0, "r": 1.0}


def _intrinsic_shape(node):
    """The shape a node's own parameters fix (None when they are scalar / size 1)."""
    k = node.kind
    if k in _NEURON_KEYS or k in ("Scale", "Threshold"):
        keys = _NEURON_KEYS.get(k, ("scale",) if k == "Scale" else ("threshold",))
        shapes = {np.shape(node.raw[x]) for x in keys if node.raw.get(x) is not None}
        shapes = {s for s in shapes if int(np.prod(s)) > 1}
        if len(shapes) > 1:
            raise ForeignNirError(f"node {node.name!r}: {k} parameters have different shapes "
                                  f"{sorted(shapes)}")
        return next(iter(shapes)) if shapes else None
    return None


def _out_shape(node, got, rules: Rules = Rules()):
    """Output shape of ``node`` for input shape ``got`` (a tuple); sets ``node.params``."""
    k, p = node.kind, node.params
    if k in ("Affine", "Linear"):
        w = _arr(node, "weight")
        if w.ndim != 2:
            raise ForeignNirError(f"node {node.name!r}: {k} weight must be 2-D, got {w.shape}")
        if got[-1:] != (w.shape[1],):
            raise ForeignNirError(f"node {node.name!r}: {k} expects input [..., {w.shape[1]}], "
                                  f"got {list(got)} (shape mismatch)")
        p["weight"] = _f32(w)
        p["bias"] = _f32(_arr(node, "bias", np.zeros(w.shape[0]))) if k == "Affine" else None
        return got[:-1] + (w.shape[0],)
    if k in ("Conv1d", "Conv2d"):
        nd = 1 if k == "Conv1d" else 2
        w = _arr(node, "weight")
        if w.ndim != nd + 2:
            raise ForeignNirError(f"node {node.name!r}: {k} weight must be {nd + 2}-D")
        groups = int(np.asarray(node.raw.get("groups", 1)))
        if len(got) != nd + 1 or got[0] != w.shape[1] * groups:
            raise ForeignNirError(f"node {node.name!r}: {k} expects input [{w.shape[1] * groups}, "
                                  f"{', '.join('HW'[:nd] if nd == 2 else 'L')}], got {list(got)} "
                                  f"(shape mismatch)")
        stride = _ints(node.raw.get("stride", 1), nd, node, "stride")
        dil = _ints(node.raw.get("dilation", 1), nd, node, "dilation")
        ksz = w.shape[2:]
        pad = node.raw.get("padding", 0)
        if isinstance(pad, str):
            if pad == "valid":
                pad = (0,) * nd
            elif pad == "same" and all(s == 1 for s in stride):
                tot = [d * (kk - 1) for d, kk in zip(dil, ksz)]
                pad = tuple((t // 2, t - t // 2) for t in tot)
            else:
                raise ForeignNirError(f"node {node.name!r}: {k} padding {pad!r} is not supported")
        else:
            pad = tuple((x, x) for x in _ints(pad, nd, node, "padding"))
        if isinstance(pad[0], int):
            pad = tuple((x, x) for x in pad)
        out = tuple((n + lo + hi - d * (kk - 1) - 1) // s + 1
                    for n, (lo, hi), d, kk, s in zip(got[1:], pad, dil, ksz, stride))
        p.update(weight=_f32(w), bias=_f32(_arr(node, "bias", np.zeros(w.shape[0]))),
                 stride=stride, padding=pad, dilation=dil, groups=groups)
        return (w.shape[0],) + out
    if k in ("SumPool2d", "AvgPool2d"):
        if len(got) != 3:
            raise ForeignNirError(f"node {node.name!r}: {k} expects [C, H, W], got {list(got)} "
                                  f"(shape mismatch)")
        ks = _ints(node.raw.get("kernel_size"), 2, node, "kernel_size")
        st = _ints(node.raw.get("stride", ks), 2, node, "stride")
        pd = _ints(node.raw.get("padding", 0), 2, node, "padding")
        p.update(kernel=ks, stride=st, padding=pd, avg=k == "AvgPool2d")
        return (got[0],) + tuple((n + 2 * q - kk) // s + 1 for n, q, kk, s in zip(got[1:], pd, ks, st))
    if k == "Flatten":
        n = len(got)
        sd = int(np.asarray(node.raw.get("start_dim", 0)))
        ed = int(np.asarray(node.raw.get("end_dim", -1)))
        if rules.flatten_torch:
            sd, ed = (sd - 1 if sd > 0 else sd), (ed - 1 if ed > 0 else ed)
        sd, ed = sd % n if n else 0, ed % n if n else 0
        p.update(start=sd, end=ed)
        return got[:sd] + (int(np.prod(got[sd:ed + 1])),) + got[ed + 1:]
    if k in ("Output", "Input"):
        return got
    # elementwise nodes: parameters broadcast to the input shape
    intr = _intrinsic_shape(node)
    if intr is not None and tuple(intr) != tuple(got):
        raise ForeignNirError(f"node {node.name!r}: {k} has parameters of shape {list(intr)} but "
                              f"receives {list(got)} (shape mismatch)")
    return got


def _bcast(a, shape, node, key):
    a = np.asarray(a, np.float64)
    try:
        return np.broadcast_to(a.reshape(()) if a.size == 1 else a, shape).copy()
    except ValueError:
        raise ForeignNirError(f"node {node.name!r}: {node.kind} {key} of shape {list(a.shape)} "
                              f"does not fit the layer {list(shape)}") from None


def _neuron_params(node, shape, rules: Rules):
    """Float32 step constants of a neuron / integrator / threshold / delay node at ``rules.dt``."""
    k, dt = node.kind, rules.dt
    if k == "Scale":
        return {"scale": _f32(_bcast(_arr(node, "scale"), shape, node, "scale"))}
    if k == "Threshold":
        return {"threshold": _f32(_bcast(_arr(node, "threshold"), shape, node, "threshold"))}
    if k == "Delay":
        tau = _arr(node, "delay")
        steps = np.round(tau / dt)
        if steps.size and not np.all(steps == steps.flat[0]):
            raise ForeignNirError(f"node {node.name!r}: Delay with per-neuron delays is not "
                                  f"supported; give one delay")
        d = int(steps.flat[0]) if steps.size else 0
        if d < 0 or abs(d * dt - float(tau.flat[0])) > 1e-6 * max(1.0, float(tau.flat[0])) + 1e-12:
            raise ForeignNirError(f"node {node.name!r}: Delay {float(tau.flat[0])} s is not a "
                                  f"whole number of steps of dt = {dt} s")
        return {"steps": d}
    v = {x: _bcast(_arr(node, x, _DEFAULTS.get(x)), shape, node, x) for x in _NEURON_KEYS[k]}
    if rules.tau_times_dt:
        v.update({x: v[x] / dt for x in ("tau", "tau_mem", "tau_syn") if x in v})
    p: dict = {}
    if k in ("I", "IF"):
        p["b"] = _f32(v["r"] if rules.if_per_step and k == "IF" else dt * v["r"])
    if k in ("LI", "LIF"):
        if np.any(v["tau"] <= 0):
            raise ForeignNirError(f"node {node.name!r}: {k} tau must be > 0")
        a, b, c, kk = leak_coeffs(v["tau"], v["r"], v["v_leak"], dt, rules.form_of(k))
        p.update(a=a, b=b, c=c, k=kk, r=_f32(v["r"]), v_leak=_f32(v["v_leak"]))
    if k in ("CubaLI", "CubaLIF"):
        if np.any(v["tau_mem"] <= 0) or np.any(v["tau_syn"] <= 0):
            raise ForeignNirError(f"node {node.name!r}: {k} tau_mem and tau_syn must be > 0")
        a, b, c, kk = leak_coeffs(v["tau_mem"], v["r"], v["v_leak"], dt, rules.form_of(k))
        p.update(a=a, b=b, c=c, k=kk, r=_f32(v["r"]), v_leak=_f32(v["v_leak"]))
        sa, sb, _, sk = leak_coeffs(v["tau_syn"], v["w_in"], 0.0 * v["w_in"], dt, rules.form_of(k))
        p["syn"] = {"a": sa, "b": sb, "k": sk, "w_in": _f32(v["w_in"])}
    if k in ("IF", "LIF", "CubaLIF"):
        p["v_threshold"] = _f32(v["v_threshold"])
        p["v_reset"] = _f32(v["v_reset"])
        if np.any(p["v_threshold"] <= 0) and rules.multi_spike:
            raise ForeignNirError(f"node {node.name!r}: multi-spike needs v_threshold > 0")
    return p



def _shapes(prog: ForeignProgram):
    """Propagate shapes from the Input; try the declared shape, then without a batch axis."""
    inp = prog.nodes[prog.inputs[0]]
    if inp.declared is None:
        raise ForeignNirError(f"node {inp.name!r}: Input has no shape")
    tries = [inp.declared]
    if len(inp.declared) > 1:
        tries.append(inp.declared[1:])
    best = None  # report the attempt that got furthest through the graph
    for shape in tries:
        try:
            _propagate(prog, shape)
        except ForeignNirError as e:
            done = sum(v.out_shape is not None for v in prog.nodes.values())
            if best is None or done > best[0]:
                best = (done, e)
            continue
        if shape != inp.declared:
            prog.notes.append(f"Input {inp.name!r} declares {list(inp.declared)}; read as batch "
                              f"axis + {list(shape)}")
        return
    raise best[1]


def _propagate(prog, shape):
    for n in prog.order:
        prog.nodes[n].params = {}
        prog.nodes[n].in_shape = prog.nodes[n].out_shape = None
    ins = {n: [a for a, b in prog.edges if b == n] for n in prog.nodes}
    todo = list(prog.order)
    while todo:  # delayed inputs count too: a recurrent Affine takes its neuron's shape
        ready = [n for n in todo if prog.nodes[n].kind == "Input"
                 or any(prog.nodes[a].out_shape is not None for a in ins[n])]
        if not ready:
            n = todo[0]
            raise ForeignNirError(f"node {n!r}: {prog.nodes[n].kind} has no input with a known "
                                  f"shape")
        for n in ready:
            todo.remove(n)
            _shape_node(prog, prog.nodes[n], ins[n], shape)
    for a, b in prog.edges:  # every edge, now that every shape is known
        sa, sb = prog.nodes[a].out_shape, prog.nodes[b].in_shape
        if tuple(sa) != tuple(sb):
            raise ForeignNirError(f"node {b!r}: {prog.nodes[b].kind} receives {list(sa)} from "
                                  f"{a!r} but expects {list(sb)} (shape mismatch)")


def _shape_node(prog, node, ins, shape):
    n = node.name
    if node.kind == "Input":
        node.in_shape = node.out_shape = tuple(shape)
        return
    got = next(prog.nodes[a].out_shape for a in ins if prog.nodes[a].out_shape is not None)
    node.in_shape = tuple(got)
    node.out_shape = tuple(_out_shape(node, tuple(got), prog.rules))
    if node.kind in STATEFUL or node.kind in ("Scale", "Threshold"):
        node.params = _neuron_params(node, node.out_shape, prog.rules)
    if node.kind == "Output" and node.declared is not None:
        d = tuple(node.declared)
        ones = len(d) - len(node.out_shape)  # Rockpool's Output: [1, 1, n]
        if (d != node.out_shape and d[1:] != node.out_shape and int(np.prod(d)) != 0
                and not (ones > 0 and d[ones:] == node.out_shape and set(d[:ones]) == {1})):
            raise ForeignNirError(f"node {n!r}: Output declares shape {list(d)} but receives "
                                  f"{list(node.out_shape)} (shape mismatch)")
