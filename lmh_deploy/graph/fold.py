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

Exactness under graph optimizations (why onnxruntime may fuse)
---------------------------------------------------------------
Float32 addition is exact -- and therefore independent of order and grouping -- whenever every
operand and every partial sum is an integer multiple of one power of two ``g`` with magnitude below
``2**24 g``. The fold guarantees this not only for each synapse's own sum but for every sum an
optimizer may form out of it:

* a conv / linear output ``sum_i w_i x_i + b``: weights on ``q_out / q_in``, bias on ``q_out``,
  ``max_row sum_i |w_i| B_in + |b| < 2**23 q_out`` (:func:`_round_synapse`). BN is folded before
  rounding, so no runtime ever multiplies BN into the weights again.
* a residual ``add``: both inputs are put on one grid ``g`` with
  ``bound_a + bound_b < 2**23 g`` (:func:`_join_sum`): the synapse inputs of the add are rounded to
  that common output grid, and the shortcut factor theta of a ``scale`` op is rounded to a multiple
  of ``g``, so ``theta_q * count`` is exact. A runtime that fuses the add into a convolution's
  accumulator (onnxruntime's FusedConv / NCHWc ``Sum`` input, oneDNN post-op sums), adds the bias
  first or last, or splits the reduction across threads, therefore adds the same integers: every
  ordering of ``{w_i x_i} u {b} u {shortcut}`` gives the one exact value.

What the grid cannot cover -- and what the ONNX runtime therefore switches off by name
(:data:`lmh_deploy.onnx.run.UNSAFE_OPTIMIZERS`) -- are rewrites that multiply a
non-grid constant into the weights (``Conv -> Mul(c)`` folded as ``W*c``; LM-HT's ``Omega`` is such a
c) or that pull an off-grid neuron state into the accumulator. Everything else a graph optimizer
does to these graphs (common-subexpression elimination, removing ``x*1`` / ``x+0``, constant folding
with the same kernels, NCHWc layouts) computes the same float32 operations on the same operands.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from lmh_deploy.graph.inputs import input_affine as _input_affine
from lmh_deploy.graph.schema import DeployGraph, DeployOp
from lmh_deploy.errors import UnsupportedModelError
from lmh_deploy.models import SpikingNet
from lmh_deploy.neurons import (LIFNeuron, LMHNeuron, LMHTNeuron, ReparamLMHTNeuron,
                                check_finite_neurons)

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


def _worst(w: np.ndarray, b: np.ndarray, vin: _Val) -> float:
    """``max_row sum_i |w_i| B_in + |b|``: the largest partial sum of a synapse (before rounding)."""
    rows = w.reshape(w.shape[0], -1)
    return float(np.max(np.abs(rows).sum(1) * vin.bound + np.abs(b))) if rows.size else 0.0


def _grid_for(rows_abs_sum: np.ndarray, b_abs: np.ndarray, vin: _Val) -> float:
    """The output grid q_out (a power of two) with sum_i |w_i| bound + |b| < 2**23 q_out."""
    worst = float(np.max(rows_abs_sum * vin.bound + b_abs)) if rows_abs_sum.size else 0.0
    return _pow2_at_least(max(worst, 1e-30) * 1.001 / 2.0 ** EXACT_BITS)


def _round_synapse(w: np.ndarray, b: np.ndarray, vin: _Val, split: bool = True,
                   min_grid: float = 0.0):
    """Round folded float64 weights ``w`` [O, ...] and bias ``b`` [O] onto exact-sum grids.

    High part: the weight grid q_w = q_out / q_in, q_out the power of two with
    ``sum_i |w_i| bound_in + |b| < 2**23 q_out`` for every output (at least ``min_grid``: a
    residual add's common grid, :func:`_join_sum`), so every partial sum of
    ``x @ w_hi + b`` is exact in float32 (any order). Low part (``split``): the residual
    ``w - w_hi`` (|.| <= q_w / 2) rounded to its own such grid q_lo = q_out_lo / q_in, a factor
    ~2**24 / fan-in finer; ``x @ w_lo`` is exact too, and the layer's current is the one float32
    addition ``fl(hi + lo)`` -- the float32 rounding of the exact sum, identical in every runtime.
    The bias is split the same way: ``b_hi`` on q_out in the high part, the residual
    ``b - b_hi`` (|.| <= q_out / 2, on q_out_lo) in the low part -- without it the bias alone
    would carry an error of up to q_out / 2, far above float32's rounding of the current.
    Returns ``(w_hi, b_hi, w_lo or None, b_lo or None, q_out, q_out_lo, (bound_hi, bound_lo),
    weight_error)``: float32 arrays, the two output grids (q_out_lo = q_out without a low part),
    the bounds of |hi| and |lo| and the largest |w_hi + w_lo - w| relative to max |w|.
    """
    rows = np.abs(w.reshape(w.shape[0], -1)).sum(1)
    q_out = max(_grid_for(rows, np.abs(b), vin), min_grid)
    q_w = q_out / vin.grid
    wq = (np.round(w / q_w) * q_w).astype(np.float32)
    bq = (np.round(b / q_out) * q_out).astype(np.float32)
    resid = w - wq.astype(np.float64)
    bresid = b - bq.astype(np.float64)
    wlo, blo, q_lo_out = None, None, q_out
    if split and (np.any(resid != 0) or np.any(bresid != 0)):
        q_lo_out = _grid_for(np.abs(resid.reshape(w.shape[0], -1)).sum(1), np.abs(bresid), vin)
        q_lo = q_lo_out / vin.grid
        wlo = (np.round(resid / q_lo) * q_lo).astype(np.float32)
        blo = (np.round(bresid / q_lo_out) * q_lo_out).astype(np.float32)
        if not (np.any(wlo) or np.any(blo)):
            wlo, blo, q_lo_out = None, None, q_out
    dep = wq.astype(np.float64) + (wlo.astype(np.float64) if wlo is not None else 0.0)
    scale = float(np.max(np.abs(w))) if w.size else 0.0
    err = float(np.max(np.abs(dep - w))) / scale if scale > 0 else 0.0
    def _bound(a, bias):
        rows = np.abs(a.reshape(a.shape[0], -1)).astype(np.float64).sum(1)
        return float(np.max(rows * vin.bound + np.abs(bias))) if rows.size else 0.0

    bound = (_bound(wq, bq), _bound(wlo, blo) if wlo is not None else 0.0)
    return wq, bq, wlo, blo, q_out, q_lo_out, bound, err


def _join_sum(name: str, ins, vals: dict, ops: list, raw: dict, consumers: dict,
              weight_error: dict | None = None) -> list:
    """Put the inputs of residual add ``name`` on one power-of-two grid ``g`` with
    ``sum of bounds < 2**23 g`` (module docstring), so that any fused evaluation of
    ``conv + bias + shortcut`` is exact. A synapse read by this add only is re-rounded to ``g``;
    a shortcut carrying ``theta * counts`` becomes a ``scale`` op whose factor is a multiple of
    ``g``. Other inputs keep their grid (``g`` must not exceed it; if it would, the add keeps the
    finer grid and is exact as an elementwise add only). A split synapse (``hi + lo``, one
    float32 rounding) is such a fixed input. Returns the add's input names."""
    terms = []
    for i in ins:
        v = vals[i]
        if i in raw and [n.name for n in consumers.get(i, [])] == [name]:
            w, b, vin = raw[i]
            terms.append(("synapse", i, _worst(w, b, vin)))
        elif v.factor != 1.0:
            terms.append(("scale", i, v.bound * abs(v.factor)))
        else:
            terms.append(("fixed", i, v.bound))
    g = _pow2_at_least(max(sum(t[2] for t in terms), 1e-30) * 1.001 / 2.0 ** EXACT_BITS)
    fixed = [vals[i].grid for kind, i, _ in terms if kind == "fixed"]
    joint = not fixed or g <= min(fixed)
    new_ins = []
    for kind, i, _ in terms:
        v = vals[i]
        if kind == "synapse" and joint:
            w, b, vin = raw[i]
            wq, bq, _, _, q_out, _, bound, err = _round_synapse(w, b, vin, split=False, min_grid=g)
            k = next(j for j, op in enumerate(ops) if op.name == i)
            ops[k].arrays.update(weight=wq, bias=bq)
            ops[k].attrs.update(weight_grid=q_out / vin.grid, out_grid=q_out, out_bound=bound[0])
            vals[i] = _Val(1.0, q_out, bound[0])
            if weight_error is not None:
                weight_error[i] = err
        elif kind == "scale":
            f = np.float32(v.factor)
            if joint:  # theta_q * count is exact on g: |theta_q| * L < 2**23 g
                f = np.float32(max(np.round(float(f) / g), 1.0) * g)
            sname = f"{name}_scale_{i}"
            ops.append(DeployOp(sname, "scale", (i,), {"factor": np.asarray(f, np.float32)}))
            vals[sname] = _Val(1.0, g if joint else v.grid, v.bound * abs(float(f)))
            i = sname
        new_ins.append(i)
    return new_ins


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
    A neuron with a non-finite parameter is refused (NonFiniteNeuronError, one line).

    ``split`` (default): every synapse whose weights do not fall on one exact-sum grid becomes
    ``<name>_hi`` + ``<name>_lo`` synapses and an ``add`` named ``<name>`` (DESIGN §2); False
    keeps one grid (coarser weights). A config ``input_norm`` (normalized 8-bit images) makes
    the deployed input the raw pixels ``u = (p - m) / 256`` (see :func:`_input_affine`) and
    folds the normalization into the first layer; ``meta["input_norm"]`` records it for
    :func:`lmh_deploy.deploy_graph.raw_input`. ``meta["weight_error"]`` maps each synapse to
    max |w_deployed - w| / max |w|."""
    check_finite_neurons(model, "(cannot deploy it)")
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
    raw: dict[str, tuple] = {}  # synapse name -> (unrounded W', b', input value): re-rounded at adds
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
                wq, bq, wlo, blo, q_out, q_lo_out, bound, err = _round_synapse(w, b, vin, split)
                weight_error[name] = err
                if wlo is None:  # one grid: a residual add may re-round it to its common grid
                    raw[name] = (w, b, vin)
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
                                        {"weight": wlo, "bias": blo}, lo_attrs))
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
                new_ins = _join_sum(name, ins, vals, ops, raw, consumers, weight_error)
                va, vc = vals[new_ins[0]], vals[new_ins[1]]
                grid = min(va.grid, vc.grid)  # one grid when joined (see _join_sum)
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
