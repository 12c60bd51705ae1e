"""Run NIR graphs written by other tools (snnTorch, Norse, SpikingJelly, Sinabs, the NIR paper) in
numpy, step by step (DESIGN §3 "Import", issue 15).

NIR is continuous time; every simulator discretizes it its own way, and the file does not say
how. :class:`Rules` holds one discretization; :data:`PRODUCERS` has the one each tool's simulator
runs (what its NIR importer builds, and what it computed before export), selected with
``--producer``. ``nir`` (the default) is plain forward Euler. Per primitive, at step ``dt``
(seconds; ``u`` = sum of the node's inputs at this step, ``k = dt/τ``)::

  primitive  state update (forward Euler, "euler" form)           output      producers that differ
  ---------  ----------------------------------------------------  ----------  ----------------------
  I          v += dt·r·u                                            v
  LI         v += k·((r·u + v_leak) − v)                            v           exp: v = a·v + r(1−a)u
  LIF        v += k·((r·u + v_leak) − v); z = v > v_th;             z           SJ: z = v ≥ v_th;
             v = v_reset where z                                                snnTorch: decay form;
                                                                                Sinabs: v = e^(−k)v + u
  IF         v += dt·r·u; z = v > v_th; v = v_reset where z         z           Norse, Sinabs: v += r·u
                                                                                per step; Sinabs:
                                                                                multi-spike, subtract,
                                                                                v >= -v_th
  CubaLI(F)  i += k_s·(w_in·u − i);  v += k_m·((r·i + v_leak) − v)  v (z)       Norse: i += w_in·u
             with the NEW i (snnTorch, SpikingJelly, Norse and                  (jump, its LIFCell)
             Rockpool all update i first); LIF part as above                    NIR paper: old i
  Threshold  z = u > θ                                              z
  Delay      y[t] = u[t − round(τ/dt)] (0 before the start)         y
  Affine/Linear/Scale/Conv1d/Conv2d/SumPool2d/AvgPool2d/Flatten: per step, per sample.

"decay" form (snnTorch, SpikingJelly IF/CubaLIF): ``v = a·v + b·u + c`` with ``a = 1 − k``,
``b = k·r``, ``c = k·v_leak`` rounded once to float32, so a file written from ``beta`` reproduces
``beta·v + I`` bit for bit. ``exact`` (``--exact``): ``a = exp(−k)``, ``b = r·(1 − a)`` (``w_in``
alike), the exact solution for an input held over the step; "exp-raw" (Sinabs): ``a = exp(−k)``,
``b = r``. Reset: ``value`` (to v_reset; NIR's meaning) or ``subtract`` (v −= v_th·z; snnTorch's
default, Sinabs: not expressible in NIR, selectable with ``--reset subtract``).

Presets (:data:`PRODUCERS`): ``nir``, ``nir-paper``, ``snntorch``, ``snntorch-delay``,
``spikingjelly``, ``norse`` (files Norse 1.1 writes: τ = dt/τ_inv, current jumps),
``norse-import`` (what Norse's ``from_nir`` builds from a standard file), ``sinabs``. Each is
tested against the tool itself: fixtures written by the tool (tests/test_nir_foreign.py) and the
tool's run of our target forms (tests/test_nir_targets.py) agree spike for spike.

Graph rules. Nested ``NIRGraph`` nodes are flattened (``outer.inner`` names; edges to a subgraph
go to its Input's successors, edges from it leave its Output's predecessors). A declared Input /
Output shape with a leading batch axis (snnTorch, Norse, Sinabs, Rockpool write ``[1, n]``) is
accepted when the rest of the graph reads the shape without it. Scalar or size-1 parameters
broadcast to the layer. Cycles: in each strongly connected component the edge that closes the
loop is delayed by one step, moved back to the edge leaving the nearest neuron (stateful node)
on the loop, so a recurrent ``Affine`` sees the spikes of t−1 and adds its bias at every step,
t = 0 included (snnTorch's ``RLeaky``); a delayed edge carries its source's output of step t−1,
at t = 0 the output of its initial state (no spike; ``v(0)`` for integrators). A loop without a
stateful node is an error. Every problem is one :class:`ForeignNirError` line naming the node
and the primitive.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from ..errors import LmhError, require

NEURONS = ("LIF", "IF", "CubaLIF")
STATEFUL = ("I", "LI", "LIF", "IF", "CubaLI", "CubaLIF", "Delay")
SUPPORTED = ("Input", "Output", "Affine", "Linear", "Scale", "Conv1d", "Conv2d", "SumPool2d",
             "AvgPool2d", "Flatten", "Threshold", "Delay", "I", "LI", "LIF", "IF", "CubaLI",
             "CubaLIF", "NIRGraph")


class ForeignNirError(LmhError, ValueError):
    """A NIR file this runtime cannot run (one line naming the node and the primitive)."""


# ---------------------------------------------------------------------------------------------
# discretization rules
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rules:
    """How continuous-time primitives become steps (see the module docstring's table).

    ``dt``: seconds per step (None: take it from the file or ask); ``form``: {primitive: "euler" |
    "decay" | "exact"}; ``cuba_input``: "euler" (``k_s·w_in·u``) or "jump" (``w_in·u``);
    ``cuba_order``: "new" (membrane reads the updated current) or "old"; ``fire``: ">" or ">=";
    ``reset``: "value" or "subtract"; ``multi_spike``: ``z = floor(v/θ)`` when ``v ≥ θ``;
    ``v_min_threshold``: clamp v at −v_th after the reset (Sinabs' ``min_v_mem``);
    ``tau_times_dt``: the file's τ is ``dt·τ`` (Norse 1.1's ``to_nir`` writes ``dt/τ_inv``), so
    ``dt/τ`` is read as ``dt²/τ_file``; ``reset_delay``: snnTorch's ``reset_delay=True`` (its
    default): a spike at t resets at t+1 -- ``Leaky`` zero: ``v = β(1−z[t−1])v + I``, ``Synaptic``
    zero: ``v = (1−z[t−1])(βv + i)``, subtract: ``v = βv + I − θz[t−1]``; ``flatten_torch``:
    a Flatten ``start_dim ≥ 1`` counts the batch axis (snnTorch's and Norse's importers hand it to
    ``torch.nn.Flatten`` unshifted); ``if_per_step``: IF integrates ``v += r·u`` per step (Norse's
    IAFCell ignores dt, Sinabs has none). Form "exp-raw": ``a = exp(−dt/τ)``, ``b = r`` (Sinabs'
    ``norm_input=False``). ``v_min_threshold`` applies to IF nodes (Sinabs' IAF).
    """

    name: str = "nir"
    dt: float | None = None
    form: dict = field(default_factory=dict)
    cuba_input: str = "euler"
    cuba_order: str = "new"
    fire: str = ">"
    reset: str = "value"
    multi_spike: bool = False
    v_min_threshold: bool = False
    tau_times_dt: bool = False
    reset_delay: bool = False
    flatten_torch: bool = False
    if_per_step: bool = False
    description: str = "NIR read literally: forward Euler at dt, reset to v_reset, z = v > v_th"

    def form_of(self, kind: str) -> str:
        return self.form.get(kind, "euler")


PRODUCERS: dict[str, Rules] = {
    "nir": Rules(),
    "nir-paper": Rules("nir-paper", cuba_order="old",
                       description="the NIR paper's reference CubaLIF (explicit Euler: the "
                                   "membrane reads the current of the previous step)"),
    "snntorch": Rules("snntorch", 1e-4, {"LIF": "decay", "CubaLIF": "decay", "IF": "decay",
                                         "CubaLI": "decay", "LI": "decay"}, flatten_torch=True,
                      description="snnTorch 1.0 (Leaky/Synaptic/RLeaky: v = beta v + I, "
                                  "reset_mechanism='zero', dt = 1e-4)"),
    "snntorch-delay": Rules("snntorch-delay", 1e-4, {"LIF": "decay", "CubaLIF": "decay",
                                                     "IF": "decay"}, reset_delay=True,
                            flatten_torch=True,
                            description="snnTorch 1.0 with reset_delay=True (its default; "
                                        "RSynaptic always, a bug); add --reset subtract for its "
                                        "default reset"),
    "spikingjelly": Rules("spikingjelly", 1e-4, {"IF": "decay", "CubaLIF": "decay"}, fire=">=",
                          description="SpikingJelly 2.0 (LIFNode v += (x - (v - v_reset))/tau, "
                                      "IFNode, CUBALIFNode; fires at v >= v_th; dt = 1e-4)"),
    "norse": Rules("norse", 1e-3, cuba_input="jump", tau_times_dt=True, flatten_torch=True,
                   description="Norse 1.1 (LIFBoxCell, LIFCell: current jumps by the input, "
                               "Euler membrane; dt = 1e-3; its to_nir writes tau = dt/tau_inv)"),
    "sinabs": Rules("sinabs", 1.0, {"IF": "decay", "LIF": "exp-raw", "LI": "exp-raw"},
                    reset="subtract", multi_spike=True, v_min_threshold=True, fire=">=",
                    if_per_step=True,
                    description="Sinabs 3.1 IAF as its from_nir builds it (one step per "
                                "sample, multi-spike, subtractive reset, v >= -v_th)"),
    "norse-import": Rules("norse-import", 1e-3, if_per_step=True, flatten_torch=True,
                          description="Norse 1.1's from_nir (LIFBox / LIBox Euler at dt, CubaLIF "
                                      "with the new current, IAF v += x, r of LIF ignored)"),
}


def get_rules(producer: str = "nir", dt: float | None = None, reset: str | None = None,
              exact: bool = False) -> Rules:
    """The preset for ``producer`` with the user's overrides (one-line error for a bad name)."""
    if producer not in PRODUCERS:
        raise ForeignNirError(f"unknown producer {producer!r}; choose one of "
                              f"{', '.join(PRODUCERS)}")
    r = PRODUCERS[producer]
    if dt is not None:
        if not (isinstance(dt, (int, float)) and math.isfinite(dt) and dt > 0):
            raise ForeignNirError(f"--dt must be a positive number of seconds, got {dt!r}")
        r = replace(r, dt=float(dt))
    if reset is not None:
        if reset not in ("value", "subtract"):
            raise ForeignNirError(f"--reset must be 'value' or 'subtract', got {reset!r}")
        r = replace(r, reset=reset)
    if exact:
        r = replace(r, form={k: "exact" for k in ("LIF", "LI", "CubaLIF", "CubaLI")})
    return r


# ---------------------------------------------------------------------------------------------
# primitives: pure step functions (params, state, u, rules) -> (output, state)
# ---------------------------------------------------------------------------------------------


def _f32(x):
    return np.asarray(x, np.float32)


def leak_coeffs(tau, r, v_leak, dt: float, form: str):
    """Float32 ``(a, b, c, k)`` of ``v' = a·v + b·u + c`` ("decay"/"exact") and ``k = dt/τ``
    ("euler"), from float64 parameters; τ, r, v_leak broadcast arrays."""
    tau, r, v_leak = (np.asarray(x, np.float64) for x in (tau, r, v_leak))
    k = dt / tau
    if np.any(k > 1) and form not in ("exact", "exp-raw"):
        warnings.warn(f"dt/tau = {float(np.max(k)):.3g} > 1: forward Euler diverges; check --dt "
                      f"(or --exact)", RuntimeWarning, stacklevel=3)
    a = np.exp(-k) if form in ("exact", "exp-raw") else 1.0 - k
    g = (1.0 - a) if form == "exact" else (1.0 if form == "exp-raw" else k)
    return _f32(a), _f32(g * r), _f32(g * v_leak), _f32(k)


def leaky_update(v, u, c, form: str):
    """One leaky-integrator step (LI, the membrane of LIF / CubaLIF): float32 ``v``, input ``u``,
    coefficient dict ``c`` from :func:`leak_coeffs` (keys a, b, c, k, r, v_leak)."""
    if form == "euler":
        return v + c["k"] * ((c["r"] * u + c["v_leak"]) - v)
    return c["a"] * v + c["b"] * u + c["c"]


def fire_and_reset(v, p, rules: Rules, clamp: bool = False):
    """Spikes and the reset state: ``z = [v > v_th]`` (``>=`` or multi-spike per ``rules``),
    ``v = v_reset`` where z (or ``v − v_th·z``)."""
    thr = p["v_threshold"]
    if rules.multi_spike:
        z = np.where(v >= thr, np.floor(v / thr), np.float32(0)).astype(np.float32)
    else:
        z = ((v >= thr) if rules.fire == ">=" else (v > thr)).astype(np.float32)
    if rules.reset == "subtract":
        v = (v - z * thr).astype(np.float32)
    else:
        v = np.where(z > 0, p["v_reset"], v).astype(np.float32)
    if clamp and rules.v_min_threshold:
        v = np.maximum(v, -thr).astype(np.float32)
    return z, v


def step_integrator(p, v, u, rules):
    v = (v + p["b"] * u).astype(np.float32)  # b = dt·r (I, IF)
    return v, v


def step_li(p, v, u, rules):
    v = leaky_update(v, u, p, rules.form_of("LI")).astype(np.float32)
    return v, v


def _fire(v, p, rules):
    thr = p["v_threshold"]
    return ((v >= thr) if rules.fire == ">=" else (v > thr)).astype(np.float32)


def step_lif(p, state, u, rules):
    form = rules.form_of("LIF")
    if rules.reset_delay:
        v, zp = state
        if rules.reset == "value":
            v = np.where(zp > 0, p["v_reset"], v)
        v = leaky_update(v, u, p, form)
        if rules.reset == "subtract":
            v = v - p["v_threshold"] * zp
        v = v.astype(np.float32)
        z = _fire(v, p, rules)
        return z, (v, z)
    v = leaky_update(state, u, p, form).astype(np.float32)
    return fire_and_reset(v, p, rules)


def step_if(p, state, u, rules):
    if rules.reset_delay:
        v, zp = state
        if rules.reset == "value":
            v = np.where(zp > 0, p["v_reset"], v)
        v = v + p["b"] * u
        if rules.reset == "subtract":
            v = v - p["v_threshold"] * zp
        v = v.astype(np.float32)
        z = _fire(v, p, rules)
        return z, (v, z)
    v = (state + p["b"] * u).astype(np.float32)
    return fire_and_reset(v, p, rules, clamp=True)


def _cuba(p, state, u, rules, kind):
    i, v = state[:2]
    form = rules.form_of(kind)
    s = p["syn"]
    if rules.cuba_input == "jump":       # Norse LIFCell: i jumps by w_in·u, then decays
        i_new = (i - s["k"] * i) + s["w_in"] * u
    elif form == "euler":
        i_new = i + s["k"] * (s["w_in"] * u - i)
    else:
        i_new = s["a"] * i + s["b"] * u
    drive = i_new if rules.cuba_order == "new" else i
    v = leaky_update(v, drive, p, form).astype(np.float32)
    return v, (i_new.astype(np.float32), v)


def step_cubali(p, state, u, rules):
    v, st = _cuba(p, state, u, rules, "CubaLI")
    return v, st


def step_cubalif(p, state, u, rules):
    v, (i, _) = _cuba(p, state, u, rules, "CubaLIF")
    if rules.reset_delay:
        zp = state[2]
        if rules.reset == "value":
            v = np.where(zp > 0, p["v_reset"], v)
        else:
            v = v - p["v_threshold"] * zp
        v = v.astype(np.float32)
        z = _fire(v, p, rules)
        return z, (i, v, z)
    z, v = fire_and_reset(v, p, rules)
    return z, (i, v)


def step_threshold(p, state, u, rules):
    thr = p["threshold"]
    return ((u >= thr) if rules.fire == ">=" else (u > thr)).astype(np.float32), state


def step_delay(p, buf, u, rules):
    """``buf``: list of the last d inputs (oldest first); d = 0 passes u through."""
    if not buf:
        return u, buf
    return buf[0], buf[1:] + [u]


STEP = {"I": step_integrator, "LI": step_li, "LIF": step_lif, "IF": step_if,
        "CubaLI": step_cubali, "CubaLIF": step_cubalif, "Threshold": step_threshold,
        "Delay": step_delay}


# ---------------------------------------------------------------------------------------------
# reading: raw HDF5 / nir.NIRGraph -> flat nodes and edges
# ---------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------
# parameters and shapes
# ---------------------------------------------------------------------------------------------


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


def _sccs(names, edges):
    succ = {n: [] for n in names}
    for a, b in edges:
        succ[a].append(b)
    index, low, on, stack, comps, counter = {}, {}, set(), [], [], [0]
    for root in names:
        if root in index:
            continue
        work = [(root, iter(succ[root]))]
        index[root] = low[root] = counter[0]
        counter[0] += 1
        stack.append(root)
        on.add(root)
        while work:
            v, it = work[-1]
            nxt = next(it, None)
            if nxt is not None:
                if nxt not in index:
                    index[nxt] = low[nxt] = counter[0]
                    counter[0] += 1
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


def _topo(names, edges, delayed):
    import heapq

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
        if d != node.out_shape and d[1:] != node.out_shape and int(np.prod(d)) != 0:
            raise ForeignNirError(f"node {n!r}: Output declares shape {list(d)} but receives "
                                  f"{list(node.out_shape)} (shape mismatch)")


# ---------------------------------------------------------------------------------------------
# running
# ---------------------------------------------------------------------------------------------


def _conv(x, p):
    """Batched float32 convolution [B, C, *S] (Conv1d / Conv2d, groups, dilation, padding)."""
    w, stride, pad, dil, groups = p["weight"], p["stride"], p["padding"], p["dilation"], p["groups"]
    nd = w.ndim - 2
    x = np.pad(x, [(0, 0), (0, 0)] + [tuple(q) for q in pad])
    B, C = x.shape[:2]
    O, Cg = w.shape[:2]
    ks = w.shape[2:]
    outs = [(x.shape[2 + d] - dil[d] * (ks[d] - 1) - 1) // stride[d] + 1 for d in range(nd)]
    y = np.zeros((B, O, *outs), np.float32)
    og = O // groups
    for g in range(groups):
        xg = x[:, g * Cg:(g + 1) * Cg]
        wg = w[g * og:(g + 1) * og]
        if nd == 2:
            cols = np.stack([xg[:, :, i * dil[0]: i * dil[0] + stride[0] * (outs[0] - 1) + 1: stride[0],
                                j * dil[1]: j * dil[1] + stride[1] * (outs[1] - 1) + 1: stride[1]]
                             for i in range(ks[0]) for j in range(ks[1])], axis=2)
            # cols [B, Cg, K, Ho, Wo]
            y[:, g * og:(g + 1) * og] = np.einsum("bckhw,ock->bohw", cols,
                                                  wg.reshape(og, Cg, -1), optimize=True)
        else:
            cols = np.stack([xg[:, :, i * dil[0]: i * dil[0] + stride[0] * (outs[0] - 1) + 1: stride[0]]
                             for i in range(ks[0])], axis=2)
            y[:, g * og:(g + 1) * og] = np.einsum("bckl,ock->bol", cols, wg, optimize=True)
    return y + p["bias"].reshape((1, -1) + (1,) * nd)


def _pool(x, p):
    (kh, kw), (sh, sw), (ph, pw) = p["kernel"], p["stride"], p["padding"]
    x = np.pad(x, [(0, 0), (0, 0), (ph, ph), (pw, pw)])
    Ho = (x.shape[2] - kh) // sh + 1
    Wo = (x.shape[3] - kw) // sw + 1
    y = np.zeros(x.shape[:2] + (Ho, Wo), np.float32)
    for i in range(kh):
        for j in range(kw):
            y += x[:, :, i: i + sh * (Ho - 1) + 1: sh, j: j + sw * (Wo - 1) + 1: sw]
    return y / np.float32(kh * kw) if p["avg"] else y


def eval_stateless(node, u):
    """Affine / Linear / Scale / Conv / pooling / Flatten / Output on a batch ``u`` [B, ...]."""
    k, p = node.kind, node.params
    if k in ("Output", "Input"):
        return u
    if k in ("Affine", "Linear"):
        y = u @ p["weight"].T
        return y + p["bias"] if p["bias"] is not None else y
    if k == "Scale":
        return u * p["scale"]
    if k in ("Conv1d", "Conv2d"):
        return _conv(u, p)
    if k in ("SumPool2d", "AvgPool2d"):
        return _pool(u, p)
    if k == "Flatten":
        return u.reshape((u.shape[0],) + node.out_shape)
    raise AssertionError(k)  # pragma: no cover


def init_state(node, batch: int, rules: Rules = Rules()):
    k = node.kind
    z = np.zeros((batch,) + node.out_shape, np.float32)
    if k == "CubaLIF" and rules.reset_delay:
        return (z, z.copy(), z.copy())
    if k in ("LIF", "IF") and rules.reset_delay:
        return (z, z.copy())
    if k in ("CubaLI", "CubaLIF"):
        return (z, z.copy())
    if k == "Delay":
        return [z.copy() for _ in range(node.params["steps"])]
    if k in STATEFUL:
        return z
    return None


def initial_output(node, state, batch: int):
    """A node's output 'before the start' (what a delayed edge carries at t = 0): ``v(0)`` for
    integrators (I, LI, CubaLI), no spike / zero otherwise."""
    if node.kind in ("I", "LI"):
        return state
    if node.kind == "CubaLI":
        return state[1]
    return np.zeros((batch,) + node.out_shape, np.float32)


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
