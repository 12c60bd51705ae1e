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
                                                                                Sinabs, Rockpool:
                                                                                v = e^(−k)v + u
  IF         v += dt·r·u; z = v > v_th; v = v_reset where z         z           Norse, Sinabs: v += r·u
                                                                                per step; Sinabs:
                                                                                multi-spike, subtract,
                                                                                v >= -v_th
  CubaLI(F)  i += k_s·(w_in·u − i);  v += k_m·((r·i + v_leak) − v)  v (z)       Norse: i += w_in·u
             with the NEW i (snnTorch, SpikingJelly, Norse and                  (jump, its LIFCell)
             Rockpool all update i first); LIF part as above                    NIR paper: old i;
                                                                                Rockpool: i = e^(−k_s)
                                                                                ·(i + w_in·u), v =
                                                                                e^(−k)v + i
  Threshold  z = u > θ                                              z
  Delay      y[t] = u[t − round(τ/dt)] (0 before the start)         y
  Affine/Linear/Scale/Conv1d/Conv2d/SumPool2d/AvgPool2d/Flatten: per step, per sample.

"decay" form (snnTorch, SpikingJelly IF/CubaLIF): ``v = a·v + b·u + c`` with ``a = 1 − k``,
``b = k·r``, ``c = k·v_leak`` rounded once to float32, so a file written from ``beta`` reproduces
``beta·v + I`` bit for bit. ``exact`` (``--exact``): ``a = exp(−k)``, ``b = r·(1 − a)`` (``w_in``
alike), the exact solution for an input held over the step; "exp-raw" (Sinabs): ``a = exp(−k)``,
``b = r``; "rockpool": ``a = exp(−k)``, ``b = k·r/a`` -- Rockpool's ``to_nir`` writes
``r = τ·e^(−k)/dt`` for its gain-1 membrane ``v = a·v + u``, so ``b`` is 1 for its files
(snapped to 1 within 1e-6, the file's float32 ``r``). Reset: ``value`` (to v_reset; NIR's
meaning) or ``subtract`` (v −= v_th·z; snnTorch's default, Sinabs, Rockpool: not expressible in
NIR, selectable with ``--reset subtract``).

Presets (:data:`PRODUCERS`): ``nir``, ``nir-paper``, ``snntorch``, ``snntorch-delay``,
``spikingjelly``, ``norse`` (files Norse 1.1 writes: τ = dt/τ_inv, current jumps),
``norse-import`` (what Norse's ``from_nir`` builds from a standard file), ``sinabs``,
``rockpool`` (LIFNeuronTorch / LIFTorch: exponential decays, gain 1, multi-spike, subtract). Each is
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

import numpy as np

from lmh_deploy.errors import ForeignNirError

NEURONS = ("LIF", "IF", "CubaLIF")
STATEFUL = ("I", "LI", "LIF", "IF", "CubaLI", "CubaLIF", "Delay")
SUPPORTED = ("Input", "Output", "Affine", "Linear", "Scale", "Conv1d", "Conv2d", "SumPool2d",
             "AvgPool2d", "Flatten", "Threshold", "Delay", "I", "LI", "LIF", "IF", "CubaLI",
             "CubaLIF", "NIRGraph")


# ---------------------------------------------------------------------------------------------
# discretization rules
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rules:
    """How continuous-time primitives become steps (see the module docstring's table).

    ``dt``: seconds per step (None: take it from the file or ask); ``form``: {primitive: "euler" |
    "decay" | "exact" | "exp-raw" | "rockpool"}; ``cuba_input``: "euler" (``k_s·w_in·u``), "jump"
    (``w_in·u``) or "add-decay" (Rockpool: ``i = a_s·(i + w_in·u)``);
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
    "rockpool": Rules("rockpool", 1e-3, {"LIF": "rockpool", "CubaLIF": "rockpool"},
                      cuba_input="add-decay", reset="subtract", multi_spike=True, fire=">=",
                      description="Rockpool 3.1 (LIFNeuronTorch v = a v + x; LIFTorch i = "
                                  "a_s (i + x), v = a v + i; a = e^(-dt/tau); multi-spike, "
                                  "subtractive reset; dt = 1e-3; its to_nir writes "
                                  "r = tau e^(-dt/tau)/dt, i.e. gain 1)"),
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
    a = np.exp(-k) if form in ("exact", "exp-raw", "rockpool") else 1.0 - k
    g = (1.0 - a) if form == "exact" else (1.0 if form == "exp-raw" else k)
    b = g * r
    if form == "rockpool":  # r = τ·e^(−k)/dt means gain k·r/e^(−k) = 1 (float32 r: snap)
        b = k * r / a
        b = np.where(np.abs(b - 1.0) <= 1e-6, 1.0, b)
        g = k / a
    return _f32(a), _f32(b), _f32(g * v_leak), _f32(k)


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
    elif rules.cuba_input == "add-decay":  # Rockpool LIFTorch: i = a_s·(i + w_in·u)
        i_new = s["a"] * (i + s["w_in"] * u)
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
# initial states (shared by the numpy runtime and the Lava foreign process)
# ---------------------------------------------------------------------------------------------


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
