"""What a network needs on Loihi 2, under the Lava fixed-point model (issue 19): neurons and
synapses per core, cores and chips, and whether weights and state fit the ranges of
:mod:`lmh_deploy.lava.fixed_point` (8-bit weight mantissas with a shared exponent, 24-bit state).
An estimate from public figures, not a placement; the counts come from :mod:`lmh_deploy.cost`.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from lmh_deploy.cost import NetDesc, Projection, n_weights, synapses
from lmh_deploy.lava.fixed_point import STATE_MAX, quantize_weights

class LoihiLimits(NamedTuple):
    """Per-core and per-chip capacities used for the estimate.

    Intel's public Loihi 2 figures (Intel Labs, "Taking Neuromorphic Computing to the Next Level
    with Loihi 2", technology brief, 2021): 128 neuro cores per chip, up to 1 million neurons (8,192 per core) and 120 million synapses per chip. Synaptic
    memory is a flexibly partitioned per-core SRAM whose capacity in synapses depends on weight
    precision and encoding; we use the chip maximum spread evenly, 120e6 / 128 = 937,500 per
    core, an upper bound (dense storage at minimal precision, no weight sharing). A layer is
    given whole cores of its own (a simple, conservative mapping: no two layers share a core)."""

    neurons_per_core: int = 8192
    synapses_per_core: int = 120_000_000 // 128
    cores_per_chip: int = 128
    source: str = ("Intel Loihi 2 technology brief (2021): 128 cores/chip, <=1M neurons "
                   "(8,192/core), <=120M synapses/chip (937,500/core if spread evenly)")


LOIHI2 = LoihiLimits()


def loihi_estimate(desc: NetDesc, limits: LoihiLimits = LOIHI2, weight_exp: int = 6) -> dict:
    """Cores per target population (spiking layers and the readout accumulators):
    ``max(ceil(neurons / neurons_per_core), ceil(incoming synapses / synapses_per_core))``;
    total cores and chips; and :func:`fixed_point_fit` per projection. An estimate of what a
    mapping needs, not a placement."""
    targets: dict = {}
    for p in desc.projections:
        key = p.target or f"readout:{p.name}"
        t = targets.setdefault(key, {"name": key, "neurons": int(np.prod(p.out_shape)),
                                     "synapses_in": 0, "weights_in": 0})
        t["synapses_in"] += synapses(p)
        t["weights_in"] += n_weights(p)
    for t in targets.values():
        t["cores"] = max(1, math.ceil(t["neurons"] / limits.neurons_per_core),
                         math.ceil(t["synapses_in"] / limits.synapses_per_core))
        t["neurons_per_core"] = t["neurons"] / t["cores"]
        t["synapses_per_core"] = t["synapses_in"] / t["cores"]
    cores = sum(t["cores"] for t in targets.values())
    fits = [fixed_point_fit(desc, p, weight_exp) for p in desc.projections if p.kind != "identity"]
    return {"layers": list(targets.values()), "cores": cores,
            "chips": math.ceil(cores / limits.cores_per_chip),
            "fixed_point": fits, "fixed_point_ok": all(f["fits"] for f in fits),
            "limits": {"neurons_per_core": limits.neurons_per_core,
                       "synapses_per_core": limits.synapses_per_core,
                       "cores_per_chip": limits.cores_per_chip, "source": limits.source}}


def fixed_point_fit(desc: NetDesc, p: Projection, weight_exp: int = 6) -> dict:
    """Whether ``p`` fits the Lava fixed-point (Loihi-2-style) model of
    :mod:`lmh_deploy.lava.fixed_point`: 8-bit weight mantissas with one shared exponent (even
    values, so mixed-sign weights keep 7 bits), state and payload in 24-bit signed units of
    ``q = 2**(e - weight_exp)``.

    Reports the weight exponent ``e``, ``weights_zeroed`` (fraction of non-zero weights whose
    mantissa rounds to 0), ``weight_max_rel_err`` (largest rounding error / max|W|), the target's
    threshold and the fold's worst-case per-step current bound in state units, and

    * ``threshold_fits`` -- ``(L+1) * theta`` is below ``2**23`` units: *necessary* (a neuron
      whose threshold the saturated state cannot reach never fires); ``fits`` is this flag;
    * ``bound_fits`` -- the worst-case current of one step (``sum |W| * max input + |b|``) is
      below ``2**23`` units: *sufficient* for that step (the membrane integrates over steps and
      the model saturates it); a pessimistic bound, often exceeded by networks that run fine;
    * ``coarse_threshold`` -- theta is below 2**8 units (less than 8 bits of resolution).
    """
    w = np.asarray(p.weight, np.float64) * (desc.input_quantum if p.analog else 1.0)
    qw = quantize_weights(w, weight_exp)
    real = qw.w.astype(np.float64) * 2.0 ** qw.e
    nz = w != 0
    amax = float(np.abs(w).max()) if w.size else 0.0
    theta, levels = None, 1
    if p.target is not None:
        pop = desc.population(p.target)
        theta, levels = pop.theta, pop.levels
    # the current bound is in the op's output units (input in units of input_quantum included)
    bound_units = None if p.current_bound is None else float(p.current_bound) / qw.q
    theta_units = None if theta is None else theta / qw.q
    threshold_fits = theta_units is None or (levels + 1) * theta_units <= STATE_MAX
    bound_fits = bound_units is None or bound_units <= STATE_MAX
    return {"name": p.name, "weight_exponent": int(qw.e), "state_unit": qw.q,
            "weights_zeroed": float(((qw.w == 0) & nz).sum() / max(int(nz.sum()), 1)),
            "weight_max_rel_err": float(np.abs(real - w).max() / amax) if amax else 0.0,
            "theta_units": theta_units, "current_bound_units": bound_units,
            "state_max_units": STATE_MAX, "fits": bool(threshold_fits),
            "threshold_fits": bool(threshold_fits), "bound_fits": bool(bound_fits),
            "coarse_threshold": bool(theta_units is not None and theta_units < 2 ** 8)}


__all__ = ["LOIHI2", "LoihiLimits", "fixed_point_fit", "loihi_estimate"]
