"""Fold a trained :class:`~lmh_deploy.models.SpikingNet` into a :class:`DeployGraph`, once.

For every node of the model, in order:

* ``synapse``: eval-mode BN folded into the conv/linear,
  ``W' = W * gamma / sqrt(var + eps)``, ``b' = (b - mean) * gamma / sqrt(var + eps) + beta``;
  the factor carried by its input (theta of the neuron that produced it, 1/k^2 of an average
  pool, the LM-HT input gain) is multiplied into W'; then W' and b' are rounded to the layer's
  exact-sum grid (see :mod:`lmh_deploy.graph.schema`). A single grid makes the weight step
  (output step / input step) coarse where the input grid is fine (analog inputs: fan-in x weight
  levels x input levels < 2**23), so the rounding residual goes to a second synapse on its own
  exact grid: ``<name>_hi`` + ``<name>_lo`` and an ``add`` named ``<name>`` (two exact partial
  sums, one float32 addition: identical in every runtime).
* A normalized input ``x = (p/255 - mean_c)/std_c`` (config ``input_norm``) is deployed as raw
  pixels ``u = (p - m_c)/256`` (m_c = round(255 mean_c)): ``x = a_c u + d_c`` is folded into the
  first synapse (W' = W a_c, b' = b + sum W d_c); the zero padding of the normalized image is
  u = 0, exact when d_c = 0 (means on k/255, as the package's data sets use).
* ``neuron``: sigmoid maps evaluated (by the module itself, in torch float32, so the deployed
  constants are bit-identical to the trained ones); its output is spike counts.
* ``avgpool`` becomes a sum pool whose ``1/k^2`` is folded into the next synapse.
* ``add`` with a shortcut carrying ``theta * counts`` gets an explicit ``scale`` op.

Each value is tracked as (factor, grid, bound): true activation = factor * stored value, stored
values are multiples of ``grid`` with ``|value| <= bound``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from lmh_deploy.graph.schema import DeployGraph, DeployOp
from lmh_deploy.errors import UnsupportedModelError
from lmh_deploy.models import SpikingNet
from lmh_deploy.neurons import LIFNeuron, LMHNeuron, LMHTNeuron, ReparamLMHTNeuron

#: partial sums must stay below 2**EXACT_BITS grid units (float32 has a 24-bit significand;
#: one bit of margin for the bias and rounding of the bound itself)
EXACT_BITS = 23
DEFAULT_INPUT_QUANTUM = 2.0 ** -8
DEFAULT_INPUT_BOUND = 8.0
#: the grid of raw 8-bit pixels u = (p - m) / 256 (inputs with a folded normalization)
RAW_INPUT_QUANTUM = 2.0 ** -8


@dataclass
class _Val:
    factor: float  # true value = factor * stored value
    grid: float    # stored values are integer multiples of grid
    bound: float   # |stored value| <= bound
    analog: bool = False  # derived from the graph input (not spike counts)


def _pow2_at_least(x: float) -> float:
    return 2.0 ** math.ceil(math.log2(x)) if x > 0 else 2.0 ** -40


def _fold_bn(syn) -> tuple[np.ndarray, np.ndarray]:
    layer, bn = syn.layer, syn.bn
    w = layer.weight.detach().double().cpu().numpy()
    b = (layer.bias.detach().double().cpu().numpy() if layer.bias is not None
         else np.zeros(w.shape[0]))
    if bn is not None:
        if bn.training:
            raise UnsupportedModelError("fold needs the model in eval mode (call model.eval())")
        g = (bn.weight.detach().double().cpu().numpy() if bn.weight is not None
             else np.ones(w.shape[0]))
        beta = (bn.bias.detach().double().cpu().numpy() if bn.bias is not None
                else np.zeros(w.shape[0]))
        mean = bn.running_mean.double().cpu().numpy()
        inv = g / np.sqrt(bn.running_var.double().cpu().numpy() + bn.eps)
        w = w * inv.reshape((-1,) + (1,) * (w.ndim - 1))
        b = (b - mean) * inv + beta
    return w, b


def _grid_for(rows_abs_sum: np.ndarray, b_abs: np.ndarray, vin: _Val) -> float:
    """The output grid q_out (a power of two) with sum_i |w_i| bound + |b| < 2**23 q_out."""
    worst = float(np.max(rows_abs_sum * vin.bound + b_abs)) if rows_abs_sum.size else 0.0
    return _pow2_at_least(max(worst, 1e-30) * 1.001 / 2.0 ** EXACT_BITS)


def _round_synapse(w: np.ndarray, b: np.ndarray, vin: _Val, split: bool = True):
    """Round folded float64 weights ``w`` [O, ...] and bias ``b`` [O] onto exact-sum grids.

    High part: the weight grid q_w = q_out / q_in, q_out the power of two with
    ``sum_i |w_i| bound_in + |b| < 2**23 q_out`` for every output, so every partial sum of
    ``x @ w_hi + b`` is exact in float32 (any order). Low part (``split``): the residual
    ``w - w_hi`` (|.| <= q_w / 2) rounded to its own such grid q_lo = q_out_lo / q_in, a factor
    ~2**24 / fan-in finer; ``x @ w_lo`` is exact too, and the layer's current is the one float32
    addition ``fl(hi + lo)`` -- the float32 rounding of the exact sum, identical in every runtime.
    Returns ``(w_hi, b, w_lo or None, q_out, q_out_lo, (bound_hi, bound_lo), weight_error)``:
    float32 arrays, the two output grids (q_out_lo = q_out without a low part), the bounds of
    |hi| and |lo| and the largest |w_hi + w_lo - w| relative to max |w|.
    """
    rows = np.abs(w.reshape(w.shape[0], -1)).sum(1)
    q_out = _grid_for(rows, np.abs(b), vin)
    q_w = q_out / vin.grid
    wq = (np.round(w / q_w) * q_w).astype(np.float32)
    bq = (np.round(b / q_out) * q_out).astype(np.float32)
    resid = w - wq.astype(np.float64)
    wlo, q_lo_out = None, q_out
    if split and np.any(resid != 0):
        q_lo_out = _grid_for(np.abs(resid.reshape(w.shape[0], -1)).sum(1), np.zeros(w.shape[0]), vin)
        q_lo = q_lo_out / vin.grid
        wlo = (np.round(resid / q_lo) * q_lo).astype(np.float32)
        if not np.any(wlo):
            wlo, q_lo_out = None, q_out
    dep = wq.astype(np.float64) + (wlo.astype(np.float64) if wlo is not None else 0.0)
    scale = float(np.max(np.abs(w))) if w.size else 0.0
    err = float(np.max(np.abs(dep - w))) / scale if scale > 0 else 0.0
    def _bound(a, bias):
        rows = np.abs(a.reshape(a.shape[0], -1)).astype(np.float64).sum(1)
        return float(np.max(rows * vin.bound + np.abs(bias))) if rows.size else 0.0

    bound = (_bound(wq, bq), _bound(wlo, 0.0) if wlo is not None else 0.0)
    return wq, bq, wlo, q_out, q_lo_out, bound, err


def _input_affine(norm: dict, shape: tuple):
    """Raw-pixel deployment of a normalized input ``x = (p / s - mean_c) / std_c`` (integer pixels
    p, s = ``norm["scale"]``, 255 for 8-bit images). The deployed input is
    ``u = (p - m_c) / 256`` with m_c = round(s mean_c): exact on the grid 2**-8, |u| <= 1, and 0
    where the normalized image is m_c's normalized value. Then ``x = a_c u + d_c`` with
    ``a_c = 256 / (s std_c)`` and ``d_c = (m_c / s - mean_c) / std_c`` (0 when s mean_c is an
    integer, as for the package's data sets). Returns (a, d) as float64 [C], and m (int [C])."""
    mean = np.asarray(norm["mean"], np.float64)
    std = np.asarray(norm["std"], np.float64)
    s = float(norm.get("scale", 255.0))
    if mean.shape != (shape[0],) or std.shape != (shape[0],) or np.any(std <= 0):
        raise UnsupportedModelError(f"input_norm needs one mean and one positive std per input "
                                    f"channel ({shape[0]}), got {norm!r}")
    if s > 256:
        raise UnsupportedModelError(f"input_norm scale {s:g} > 256: raw pixels do not fit the "
                                    f"2**-8 input grid")
    m = np.round(mean * s)
    return 256.0 / (s * std), (m / s - mean) / std, m.astype(np.int64)


def _neuron_op(name, src, mod) -> DeployOp:
    if not isinstance(mod, (LMHNeuron, LIFNeuron, LMHTNeuron, ReparamLMHTNeuron)):
        raise UnsupportedModelError(
            f"layer {name!r} is a {type(mod).__name__}, which cannot be deployed; convert ANN "
            f"(QCFS) layers to LM-H/LM-HT neurons first (training/hybrid.py)")
    theta = np.float32(mod.theta.item())
    if isinstance(mod, (LMHNeuron, LIFNeuron)):
        arrays = mod.deploy_params()
        attrs = {"model": "lmh", "source_kind": mod.kind, "levels": 1,
                 "v0": np.float32(0.5) * theta}
    elif isinstance(mod, LMHTNeuron):
        p = mod.deploy_params()
        arrays = {"lam": p["lam"]}
        if p["omega"] is not None:
            arrays["omega"] = p["omega"].astype(np.float32)
        attrs = {"model": "lmht", "source_kind": "lmht", "levels": mod.levels,
                 "v0": np.float32(mod.v0_frac) * theta}
    elif isinstance(mod, ReparamLMHTNeuron):
        lam = mod.lam_steps.detach().cpu().float().numpy()
        arrays = {"lam": lam.reshape(lam.shape[0], -1),  # [L*T, C]: per-channel lambda kept
                  "omega": mod.omega_fixed.detach().cpu().float().numpy()}
        attrs = {"model": "lmht", "source_kind": "lmht-binary", "levels": 1,
                 "v0": np.float32(mod.v0_frac) * theta}
    attrs["theta"] = theta
    attrs["timesteps"] = mod.timesteps
    return DeployOp(name, "neuron", (src,), arrays, attrs)


def fold(model: SpikingNet, input_quantum: float | None = None,
         input_bound: float | None = None, split: bool = True) -> DeployGraph:
    """Fold ``model`` (eval mode) into a DeployGraph. See the module docstring for the rules.

    ``split`` (default): every synapse whose weights do not fall on one exact-sum grid becomes
    ``<name>_hi`` + ``<name>_lo`` synapses and an ``add`` named ``<name>`` (DESIGN §2); False
    keeps one grid (coarser weights). A config ``input_norm`` (normalized 8-bit images) makes
    the deployed input the raw pixels ``u = (p - m) / 256`` (see :func:`_input_affine`) and
    folds the normalization into the first layer; ``meta["input_norm"]`` records it for
    :func:`lmh_deploy.deploy_graph.raw_input`. ``meta["weight_error"]`` maps each synapse to
    max |w_deployed - w| / max |w|."""
    cfg = model.config
    if cfg.get("bn", "tdbn") not in ("tdbn", None):
        raise UnsupportedModelError(
            f"per-step BN (bn={cfg.get('bn')!r}) gives time-varying weights and cannot be folded; "
            f"train with --bn tdbn to deploy")
    norm = cfg.get("input_norm")
    if norm:
        q_in, b_in = RAW_INPUT_QUANTUM, 1.0
    else:
        q_in = float(input_quantum or cfg.get("input_quantum", DEFAULT_INPUT_QUANTUM))
        b_in = float(input_bound or cfg.get("input_bound", DEFAULT_INPUT_BOUND))
    if not (q_in > 0 and math.log2(q_in).is_integer()):
        raise UnsupportedModelError(f"input_quantum must be a power of two, got {q_in}")
    vals = {"input": _Val(1.0, q_in, b_in, analog=True)}
    # values that are an affine image of the normalized input: name -> (a [C], d [C], hw or None)
    aff = {}
    border_error = 0.0
    if norm:
        a_c, d_c, m_c = _input_affine(norm, tuple(model.input_shape))
        aff["input"] = (a_c, d_c, None)
    ops: list[DeployOp] = []
    weight_error: dict = {}
    pending_gain: dict[str, float] = {}  # synapse name -> gain of the LM-HT neuron reading it
    consumers: dict[str, list] = {}
    kinds = {n.name: n.kind for n in model.nodes}
    for node in model.nodes:
        for i in node.inputs:
            consumers.setdefault(i, []).append(node)
    for node in model.nodes:
        if node.kind == "neuron":
            mod = model.layers[node.name]
            gain = float(getattr(mod, "gain", torch.tensor(1.0)).item())
            if gain != 1.0:
                pending_gain[node.inputs[0]] = gain
        if node.kind not in ("synapse", "flatten", "avgpool") and \
                any(i in aff or i == "input" and norm for i in node.inputs):
            raise UnsupportedModelError(f"{node.name!r} reads the normalized input directly; only "
                                        f"a conv/linear (after pooling/flatten) can fold it")

    with torch.no_grad():
        for node in model.nodes:
            name, ins = node.name, node.inputs
            if node.kind == "synapse":
                vin = vals[ins[0]]
                syn = model.layers[name]
                w, b = _fold_bn(syn)
                if ins[0] in aff:  # x = a_c u + d_c per input channel c
                    a, d, hw = aff[ins[0]]
                    if hw is None:
                        shp = (1, -1) + (1,) * (w.ndim - 2)
                        ca, cd = a.reshape(shp), d.reshape(shp)
                    else:
                        ca, cd = np.repeat(a, hw)[None], np.repeat(d, hw)[None]
                    wd = w * cd
                    b = b + wd.reshape(w.shape[0], -1).sum(1)
                    if w.ndim == 4 and int(node.attrs.get("padding", 0)) > 0:
                        border_error = max(border_error, float(np.abs(wd).reshape(w.shape[0], -1)
                                                               .sum(1).max()))
                    w = w * ca
                gain = pending_gain.get(name, 1.0)
                w = w * (vin.factor * gain)
                b = b * gain
                wq, bq, wlo, q_out, q_lo_out, bound, err = _round_synapse(w, b, vin, split)
                weight_error[name] = err
                attrs = {"op": node.attrs["op"], "weight_grid": q_out / vin.grid,
                         "out_grid": q_out, "out_bound": bound[0]}
                if node.attrs["op"] == "conv":
                    attrs.update(stride=int(node.attrs["stride"]), padding=int(node.attrs["padding"]))
                if wlo is None:
                    ops.append(DeployOp(name, "synapse", ins, {"weight": wq, "bias": bq}, attrs))
                else:
                    lo_attrs = dict(attrs, weight_grid=q_lo_out / vin.grid, out_grid=q_lo_out,
                                    out_bound=bound[1], part="lo")
                    ops.append(DeployOp(f"{name}_hi", "synapse", ins, {"weight": wq, "bias": bq},
                                        dict(attrs, part="hi")))
                    ops.append(DeployOp(f"{name}_lo", "synapse", ins,
                                        {"weight": wlo, "bias": np.zeros_like(bq)}, lo_attrs))
                    ops.append(DeployOp(name, "add", (f"{name}_hi", f"{name}_lo"),
                                        attrs={"split": True}))
                # hi + lo is rounded once (to float32), read by neurons / adds only
                vals[name] = _Val(1.0, q_lo_out, bound[0] + bound[1])
            elif node.kind == "neuron":
                vin = vals[ins[0]]
                mod = model.layers[name]
                if vin.factor != 1.0:
                    raise UnsupportedModelError(f"neuron {name!r} must read a synapse or an add")
                if float(mod.gain.item() if hasattr(mod, "gain") else 1.0) != 1.0 and \
                        kinds[ins[0]] != "synapse":
                    raise UnsupportedModelError(
                        f"LM-HT input gain on {name!r} needs a synapse right before it")
                op = _neuron_op(name, ins[0], mod)
                ops.append(op)
                vals[name] = _Val(float(op.attrs["theta"]), 1.0, float(op.attrs["levels"]))
            elif node.kind == "add":
                a, c = ins
                new_ins = []
                for i in (a, c):
                    v = vals[i]
                    if v.factor != 1.0:  # a shortcut carrying theta * counts: explicit scale
                        sname = f"{name}_scale_{i}"
                        f = np.float32(v.factor)
                        ops.append(DeployOp(sname, "scale", (i,), {"factor": np.asarray(f, np.float32)}))
                        vals[sname] = _Val(1.0, v.grid, v.bound * float(f))
                        i = sname
                    new_ins.append(i)
                va, vc = vals[new_ins[0]], vals[new_ins[1]]
                grid = min(va.grid, vc.grid)  # elementwise add: deterministic in every runtime
                ops.append(DeployOp(name, "add", tuple(new_ins)))
                vals[name] = _Val(1.0, grid, va.bound + vc.bound)
            elif node.kind == "avgpool":
                k = int(node.attrs["kernel"])
                nxt = consumers.get(name, [])
                ok = all(n.kind in ("flatten", "synapse", "add") for n in nxt)
                if not ok:
                    raise UnsupportedModelError(
                        f"average pool {name!r} must feed a conv/linear (its 1/k^2 is folded "
                        f"there) or a residual add (an explicit scale op)")
                ops.append(DeployOp(name, "sumpool", ins, attrs={"kernel": k}))
                v = vals[ins[0]]
                vals[name] = _Val(v.factor / (k * k), v.grid, v.bound * k * k, v.analog)
                if ins[0] in aff:
                    aff[name] = aff[ins[0]]
            elif node.kind == "flatten":
                ops.append(DeployOp(name, "flatten", ins))
                vals[name] = vals[ins[0]]
                if ins[0] in aff:
                    a, d, _ = aff[ins[0]]
                    shp = model.shapes[ins[0]]
                    aff[name] = (a, d, int(np.prod(shp[1:])))
            else:
                raise UnsupportedModelError(f"node {name!r} of kind {node.kind!r} cannot be folded")

    meta = {"source_config": cfg, "arch": cfg.get("arch"), "neuron": cfg.get("neuron", {}),
            "convention": "spike counts between layers; exact-sum power-of-two weight grid",
            "weight_error": weight_error}
    if norm:
        meta["input_norm"] = {"mean": [float(v) for v in norm["mean"]],
                              "std": [float(v) for v in norm["std"]],
                              "scale": float(norm.get("scale", 255.0)),
                              "pixel_mean": [int(v) for v in m_c], "border_error": border_error}
    return DeployGraph(ops=ops, output=model.output_name, timesteps=model.timesteps,
                       input_shape=tuple(model.input_shape), num_classes=int(cfg["num_classes"]),
                       input_quantum=q_in, input_bound=b_in, meta=meta)


def fold_checkpoint(path) -> DeployGraph:
    """Load a checkpoint and fold it."""
    from lmh_deploy.checkpoint import load_model

    return fold(load_model(path))
