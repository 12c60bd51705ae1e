"""NIR forms that third-party importers actually run (DESIGN §3 "Third-party targets", issue 15),
and those tools as verification runtimes.

``lmh-export --format nir --target TOOL [--dt SECONDS]`` writes a :class:`DeployGraph` with
standard NIR primitives only, in the units and conventions TOOL's ``from_nir`` reads (checked
against snnTorch 1.0.0, SpikingJelly 2.0.0, Norse 1.1.0, Sinabs 3.1.3):

=============  ========  =====================================================================
target         dt (s)    neuron node                         what is lossy
=============  ========  =====================================================================
snntorch       1e-4      LIF  τ = dt/(1−λ_S), r = τ/dt;      reset to 0 (model: subtract θ);
                         CubaLIF (LM-H with μ_D ≠ 0):        v(0) = 0 (model θ/2); fires at
                         τ_s = dt/(1−μ_D), w_in = τ_s/dt,    v > θ (model ≥); λ_D folded into
                         r = τ_m/dt; AvgPool2d (×k² folded)  the synapse; μ_S feedback dropped;
                                                             λ_S > 1 and μ_D < 0 clamped
spikingjelly   1e-4      same as snntorch (LIF r = τ/dt:     same, but SpikingJelly fires at
                         decay_input=False); IF for λ_S = 1  v ≥ θ like the model
norse          1e-3      LIF (r = 1: input gain dt/τ, so     reset, v(0), v > θ, μ_S;
                         the synapse is scaled by τ/dt);     λ_S ≥ 1 has no LIF form
                         CubaLIF as snntorch; SumPool2d
sinabs         1 step    LIF τ = −1/ln λ_S steps (exact      multi-spike (a neuron may emit
                         exponential), IF for λ_S = 1;       several spikes per step); v(0);
                         subtractive reset = the model's     two compartments (LIF only)
=============  ========  =====================================================================

Every target: graded LM-HT spikes (0..L) become binary, the non-causal Ω of LM-HT and per-step
(radical) parameters have no streaming form (refused), λ_S > 1 (growing membrane) and μ_D < 0 have
no time constant (clamped to 1 and 0, printed), per-channel parameters are refused (the
importers read one value per layer), residual adds / shortcuts are refused. The input is quantized like the reference before it is fed to a tool.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from lmh_deploy.errors import ExportFormatError, LmhError, require


@dataclass(frozen=True)
class Target:
    name: str
    dt: float
    pool: str               # "sum" (SumPool2d) or "avg" (AvgPool2d, k^2 folded downstream)
    lif_gain: str           # "one": r = tau/dt (v = lam v + I); "euler": r = 1 (gain dt/tau)
    if_node: bool           # lam_S = 1 written as nir.IF (r = 1/dt or 1 per step)
    cuba: bool              # LM-H with mu_D != 0 as CubaLIF
    exp_tau: bool = False   # tau = -dt / ln(lam) (exact exponential decay)
    if_r_step: bool = False  # IF's r is per step (v += r x: Norse, Sinabs), else 1/dt (SpikingJelly)
    flatten_start: int = 0  # snnTorch / Norse hand start_dim to torch.nn.Flatten unshifted
    lossy: tuple = ()


#: what each target loses, by condition (see export_target for when each applies)
LOSSY = {
    "v0": "v(0) = 0 (model: v_S(0) = {v0})",
    "graded": "graded LM-HT spike counts (0..L) become binary spikes",
    "reset": "reset to 0 after a spike (model: subtract theta)",
    "fire_gt": "spike when v > theta (model: v >= theta)",
    "pool_avg": "SumPool2d written as AvgPool2d with k^2 folded into the next synapse",
    "gain": "LIF input gain dt/tau: tau/dt folded into the synapse",
    "multi": "multi-spike: floor(v/theta) spikes per step where the model emits one",
    "clamp": "IF membrane clamped at -theta (Sinabs' min_v_mem)",
    "flatten": "Flatten written with start_dim = 1: this importer passes NIR's start_dim to "
               "torch.nn.Flatten unshifted, so 0 would flatten the batch axis (not standard NIR)",
    "round": "time constants and folded factors rounded to float32 (spikes near threshold may move)",
}

TARGETS = {
    "snntorch": Target("snntorch", 1e-4, "avg", "one", False, True, flatten_start=1,
                       lossy=("reset", "fire_gt", "pool_avg", "flatten")),
    "spikingjelly": Target("spikingjelly", 1e-4, "avg", "one", True, True,
                           lossy=("reset", "pool_avg")),
    "norse": Target("norse", 1e-3, "sum", "euler", True, True, if_r_step=True, flatten_start=1,
                    lossy=("reset", "fire_gt", "gain", "flatten")),
    "sinabs": Target("sinabs", 1.0, "sum", "one", True, False, exp_tau=True, if_r_step=True,
                     lossy=("multi", "clamp")),
}


def _uniform(a, what, layer):
    a = np.asarray(a, np.float64)
    if a.size and not np.all(a == a.flat[0]):
        raise ExportFormatError(f"layer {layer!r}: per-channel {what} has no form in the target "
                                f"importers (they read one value per layer); train per-layer")
    return float(a.flat[0])


def _merge_split(graph):
    """Each split synapse (``<s>_hi`` + ``<s>_lo``, split add ``<s>``) as one synapse ``<s>``
    with the high part's weights (a target form has one weight per connection; w_hi is on the
    exact-sum grid, so every tool's sum is exact; the low part, below that grid, is dropped)."""
    from dataclasses import replace

    from lmh_deploy.graph.schema import DeployOp

    split = {o.name: o for o in graph.ops if o.kind == "add" and o.attrs.get("split")}
    parts, ops = {i for o in split.values() for i in o.inputs}, []
    for o in (o for o in graph.ops if o.name not in parts):
        if o.name in split:
            hi, lo = graph.op(o.inputs[0]), graph.op(o.inputs[1])
            arrays = dict(hi.arrays, bias=(np.asarray(hi.arrays["bias"], np.float64)
                                           + np.asarray(lo.arrays["bias"], np.float64)
                                           ).astype(np.float32))
            o = DeployOp(o.name, "synapse", hi.inputs, arrays,
                         {k: v for k, v in hi.attrs.items() if k != "part"})
        ops.append(o)
    return replace(graph, ops=ops) if split else graph


def export_target(graph, target: str, dt: float | None = None):
    """DeployGraph -> (``nir.NIRGraph`` in ``target``'s form, [lossy notes]).

    Raises :class:`ExportFormatError` naming the layer for what the target cannot express."""
    nir = require("nir", "nir")
    if target not in TARGETS:
        raise ExportFormatError(f"unknown NIR target {target!r}; choose one of {', '.join(TARGETS)}")
    tg, graph = TARGETS[target], _merge_split(graph)
    dt = float(dt) if dt is not None else tg.dt
    if not (math.isfinite(dt) and dt > 0):
        raise ExportFormatError(f"--dt must be a positive number of seconds, got {dt!r}")
    if not graph.time_invariant:
        raise ExportFormatError("the model has a non-causal Omega or per-step parameters: no "
                                "third-party tool streams it; export the exact unrolled form")
    shapes = graph.shapes()
    nodes, edges, notes = {"input": nir.Input(input_type={"input": np.array(graph.input_shape)})}, [], []
    src = {"input": "input"}
    gain = {}        # op name -> factor the next synapse must apply to its input (pool k^2, etc.)
    syn_scale = {}   # synapse op name -> factor on its weights and bias (folded neuron gains)
    consumers = {}
    for op in graph.ops:
        for i in op.inputs:
            consumers.setdefault(i, []).append(op)
    # neuron constants decide how the synapse that feeds them is scaled: first pass
    neuron_form = {}
    for op in graph.ops:
        if op.kind != "neuron":
            continue
        spec = graph.neuron(op.name)
        if spec.model != "lmh":
            notes.append(f"layer {op.name}: LM-HT (L = {spec.levels}) written as a binary LIF")
            lam_s, mu_d, mu_s, lam_d = _uniform(spec.params["lam"], "lambda", op.name), 0.0, 0.0, 1.0
        else:
            lam_s, mu_d, mu_s, lam_d = (_uniform(spec.params[k], k, op.name)
                                        for k in ("lam_s", "mu_d", "mu_s", "lam_d"))
        if lam_s > 1:
            notes.append(f"layer {op.name}: lambda_S = {lam_s:.4g} > 1 (a growing membrane has no "
                         f"time constant) clamped to 1")
            lam_s = 1.0
        if mu_d < 0:
            notes.append(f"layer {op.name}: mu_D = {mu_d:.4g} < 0 (no synaptic time constant) "
                         f"clamped to 0")
            mu_d = 0.0
        cuba = mu_d != 0 and tg.cuba
        if mu_d != 0 and not tg.cuba:
            raise ExportFormatError(f"layer {op.name!r}: two-compartment LM-H (mu_D = {mu_d:.4g}) "
                                    f"has no form in {target}; use snntorch, spikingjelly or norse")
        if mu_s != 0:
            notes.append(f"layer {op.name}: mu_S = {mu_s:.4g} feedback dropped")
        if lam_d != 1 and not cuba:
            notes.append(f"layer {op.name}: lambda_D = {lam_d:.4g} folded into its synapse")
        scale = lam_d
        if tg.lif_gain == "euler" and not cuba and not (lam_s == 1 and tg.if_node):
            scale /= (1.0 - lam_s)          # Norse LIFBox: v += dt/tau (x - v)
        neuron_form[op.name] = (lam_s, mu_d, cuba, float(spec.theta), scale)
        if op.inputs[0] not in {o.name for o in graph.ops if o.kind == "synapse"}:
            raise ExportFormatError(f"layer {op.name!r} is fed by {op.inputs[0]!r}, not a synapse: "
                                    f"no target form")
        syn_scale[op.inputs[0]] = syn_scale.get(op.inputs[0], 1.0) * scale
    for op in graph.ops:
        ins = [src[i] for i in op.inputs]
        g_in = float(np.prod([gain.get(i, 1.0) for i in op.inputs]))
        if op.kind == "synapse":
            f = syn_scale.get(op.name, 1.0)
            w = np.asarray(op.arrays["weight"], np.float64) * g_in * f
            b = np.asarray(op.arrays["bias"], np.float64) * f
            if op.attrs["op"] == "conv":
                s, p = int(op.attrs["stride"]), int(op.attrs["padding"])
                shp = shapes[op.inputs[0]]
                node = nir.Conv2d(input_shape=(int(shp[1]), int(shp[2])), weight=w.astype(np.float32),
                                  stride=np.array([s, s]), padding=np.array([p, p]),
                                  dilation=np.array([1, 1]), groups=1, bias=b.astype(np.float32))
            else:
                node = nir.Affine(weight=w.astype(np.float32), bias=b.astype(np.float32))
        elif op.kind == "neuron":
            lam_s, mu_d, cuba, theta, _ = neuron_form[op.name]
            shape = tuple(shapes[op.name])
            full = lambda v: np.full(shape, v, np.float64)  # noqa: E731
            tau = _tau(lam_s, dt, tg.exp_tau)
            if cuba:
                tau_s = dt / (1.0 - mu_d)
                node = nir.CubaLIF(tau_syn=full(tau_s), tau_mem=full(tau), r=full(tau / dt),
                                   v_leak=full(0.0), v_threshold=full(theta), v_reset=full(0.0),
                                   w_in=full(tau_s / dt))
            elif lam_s == 1.0 and tg.if_node:
                node = nir.IF(r=full(1.0 if tg.if_r_step else 1.0 / dt), v_threshold=full(theta),
                              v_reset=full(0.0))
            else:
                r = 1.0 if (tg.lif_gain == "euler" or tg.exp_tau) else tau / dt
                if tg.name == "sinabs" and len(shape) > 1:  # its from_nir tests any(v_leak) != 0
                    full = lambda v: np.full((1,), v, np.float64)  # noqa: E731
                node = nir.LIF(tau=full(tau), r=full(r), v_leak=full(0.0),
                               v_threshold=full(theta), v_reset=full(0.0))
        elif op.kind == "sumpool":
            k = int(op.attrs["kernel"])
            cls = nir.SumPool2d if tg.pool == "sum" else nir.AvgPool2d
            node = cls(kernel_size=np.array([k, k]), stride=np.array([k, k]), padding=np.array([0, 0]))
            if tg.pool == "avg":
                gain[op.name] = g_in * k * k
        elif op.kind == "flatten":
            node = nir.Flatten(input_type={"input": np.array(shapes[op.inputs[0]])},
                               start_dim=tg.flatten_start, end_dim=-1)
            gain[op.name] = g_in
        else:
            raise ExportFormatError(f"op {op.name!r} ({op.kind}: residual / shortcut) has no form in "
                                    f"{target}'s importer; only chains of conv / linear / pooling "
                                    f"layers are exported to third-party tools")
        if op.kind != "flatten" and op.kind != "sumpool" and g_in != 1.0 and op.kind != "synapse":
            raise ExportFormatError(f"op {op.name!r}: a pooling factor cannot be folded here")
        nodes[op.name] = node
        for i in ins:
            edges.append((i, op.name))
        src[op.name] = op.name
    nodes["output"] = nir.Output(output_type={"output": np.array(shapes[graph.output])})
    edges.append((graph.output, "output"))
    used = {"round"}
    kinds = {o.kind for o in graph.ops}
    specs = [graph.neuron(n) for n in graph.neuron_names()]
    v0s = sorted({float(sp.v0) for sp in specs})
    if any(v != 0 for v in v0s):
        used.add("v0")
    if any(sp.levels > 1 for sp in specs):
        used.add("graded")
    for key in tg.lossy:
        if key == "pool_avg" and "sumpool" not in kinds:
            continue
        if key == "clamp" and not any(isinstance(n, nir.IF) for n in nodes.values()):
            continue
        if key == "flatten" and "flatten" not in kinds:
            continue
        if key == "gain" and not any(isinstance(n, nir.LIF) for n in nodes.values()):
            continue
        used.add(key)
    order = ["v0", "graded"] + list(tg.lossy) + ["round"]
    lossy = [LOSSY[k].format(v0="/".join(f"{v:g}" for v in v0s)) for k in order if k in used]
    lossy += notes
    meta = {"format": "lmh-nir-target", "target": target, "dt": dt,
            "input_quantum": float(graph.input_quantum), "input_bound": float(graph.input_bound),
            "timesteps": int(graph.timesteps), "num_classes": int(graph.num_classes),
            "lossy": "; ".join(lossy)}
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata=meta, type_check=False), lossy


def _tau(lam: float, dt: float, exp_tau: bool) -> float:
    if lam >= 1.0:
        return 1e12 * dt                    # no leak (IF): a time constant longer than any run
    if exp_tau:
        return -dt / math.log(lam) if lam > 0 else dt * 1e-6
    return dt / (1.0 - lam)


def write_target(graph, path, target: str, dt: float | None = None, **_ignored):
    """Write the ``target`` form of ``graph`` atomically; returns the lossy notes."""
    from pathlib import Path

    from lmh_deploy.atomic import atomic_output

    nir = require("nir", "nir")
    g, lossy = export_target(graph, target, dt)
    with atomic_output(Path(path)) as tmp:
        nir.write(tmp, g)
    return lossy


# ---------------------------------------------------------------------------------------------
# verification runtimes: the file through the tool's own importer and simulator
# ---------------------------------------------------------------------------------------------


@dataclass
class TargetFile:
    path: str
    target: str
    dt: float
    input_quantum: float
    input_bound: float
    timesteps: int
    neurons: list


def load_target(path) -> TargetFile:
    """Read a file written by ``lmh-export --format nir --target`` (metadata only)."""
    import h5py

    with h5py.File(path, "r") as f:
        meta = {k: v[()] for k, v in f["node/metadata"].items()} if "node/metadata" in f else {}
        types = {k: f[f"node/nodes/{k}/type"][()] for k in f["node/nodes"]}
    dec = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in meta.items()}
    if dec.get("format") != "lmh-nir-target":
        raise LmhError(f"{path}: not a third-party target form (lmh-export --format nir --target)")
    neurons = [k for k, t in types.items() if (t.decode() if isinstance(t, bytes) else t)
               in ("LIF", "IF", "CubaLIF")]
    return TargetFile(str(path), dec["target"], float(dec["dt"]), float(dec["input_quantum"]),
                      float(dec["input_bound"]), int(dec["timesteps"]), neurons)


def _quantize(x, q, bound):
    return (np.clip(np.round(x / q), -bound / q, bound / q) * q).astype(np.float32)


def _frames(x, timesteps, shape_nd):
    x = np.asarray(x, np.float32)
    return x if x.ndim == shape_nd + 2 else np.broadcast_to(x, (timesteps,) + x.shape).copy()


def _hooks(net, names, pick=lambda o: o[0] if isinstance(o, tuple) else o):
    rec, hs = {n: [] for n in names}, []
    mods = dict(net.named_modules())
    for n in names:
        m = mods.get(n) or mods.get(n.replace(".", "_"))
        if m is None:
            raise LmhError(f"the importer built no module for node {n!r}")
        hs.append(m.register_forward_hook(
            lambda mod, i, o, n=n: rec[n].append(pick(o).detach().cpu().numpy().copy())))
    return rec, hs


def run_target(tf: TargetFile, x, timesteps):
    """GraphRun of the target file in its tool: logits = the Output per step, spikes per layer."""
    import torch

    from lmh_deploy.graph.interpret import GraphRun

    nir = require("nir", "nir")
    g = nir.read(tf.path, type_check=False)
    shape_nd = len(np.atleast_1d(g.nodes["input"].input_type["input"]))
    x = _quantize(_frames(x, timesteps, shape_nd), tf.input_quantum, tf.input_bound)
    T, B = x.shape[:2]
    xt = torch.as_tensor(x)
    with torch.no_grad():
        if tf.target == "sinabs":
            from sinabs.nir import from_nir

            net = from_nir(g, batch_size=B)
            rec, hs = _hooks(net, tf.neurons)
            out = net(xt.transpose(0, 1).reshape(B * T, *x.shape[2:]))
            out = out[0] if isinstance(out, tuple) else out
            logits = out.reshape(B, T, -1).transpose(0, 1).numpy()
            spikes = {k: v[0].reshape(B, T, *v[0].shape[1:]).swapaxes(0, 1) for k, v in rec.items()}
        else:
            if tf.target == "snntorch":
                from snntorch.import_nir import import_from_nir

                net = import_from_nir(g)
            elif tf.target == "spikingjelly":
                from spikingjelly.activation_based.nir_exchange.from_nir import import_from_nir

                net = import_from_nir(g, dt=tf.dt)
            elif tf.target == "norse":
                from norse.torch import from_nir

                net = from_nir(g, dt=tf.dt)
            else:  # pragma: no cover
                raise LmhError(f"no runner for target {tf.target!r}")
            rec, hs = _hooks(net, tf.neurons)
            state, outs = None, []
            if tf.target == "snntorch":
                from snntorch import utils

                utils.reset(net)
            for t in range(T):
                if tf.target == "snntorch":
                    o = net(xt[t])
                else:
                    o, state = net(xt[t], state)
                outs.append((o[0] if isinstance(o, tuple) else o).numpy().copy())
            logits = np.stack(outs)
            spikes = {k: np.stack(v) for k, v in rec.items()}
        for h in hs:
            h.remove()
    return GraphRun(logits.reshape(T, B, -1).astype(np.float32),
                    {k: np.asarray(v, np.float32) for k, v in spikes.items()})


def run_in(target: str):
    def run(src, x, timesteps):
        if src.target != target:
            raise LmhError(f"{src.path} is the {src.target} form, not {target}'s")
        return run_target(src, x, timesteps)
    return run


run_snntorch = run_in("snntorch")
run_spikingjelly = run_in("spikingjelly")
run_norse = run_in("norse")
run_sinabs = run_in("sinabs")
