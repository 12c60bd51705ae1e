"""The time loop around a neuron step, written once (DESIGN §2).

Every runtime runs a neuron layer the same way: an initial state, then for t = 0..T'-1 the step
function of :mod:`lmh_deploy.neuron_math` with that step's parameter row (per-step tables
``[P, ...]`` are read at row ``min(t, P-1)``: held at the last trained step beyond P), the input
of an LM-HT layer first mixed by its T-GIM Omega per window of T steps (Eq. 12). The torch
neurons (training), the DeployGraph interpreter (reference, torch runtime, ONNX tracing), the NIR
runtimes and the Lava process models call these functions; none spells the loop itself.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

from lmh_deploy import neuron_math as nm


def param_row(step: int, rows: int) -> int:
    """Row of a per-step parameter table ``[P, ...]`` for step ``step``: ``min(step, P - 1)``
    (time-invariant tables have P = 1; beyond the trained T the last step's row is held)."""
    return min(step, rows - 1)


def run_steps(ops, step: Callable, state, xs: Sequence[Any], params_at: Callable, t0: int = 0):
    """``s[t], state = step(ops, state, xs[t], params_at(t0 + t))`` for every t.

    ``params_at(t)`` gives the step's constants (an ``LMHParams`` / ``LMHTParams``).
    Returns ``(spikes: list over t, final state)``."""
    out = []
    for t, cur in enumerate(xs):
        s, state = step(ops, state, cur, params_at(t0 + t))
        out.append(s)
    return out, state


def run_lmh(ops, xs, params_at: Callable, state, t0: int = 0):
    """LM-H (LIF, radical LM-H) over ``xs`` from ``state`` = ``(v_D, v_S)`` (Eq. 4-7)."""
    return run_steps(ops, nm.lmh_step, state, xs, params_at, t0)


def omega_rows(omega, const: Callable = lambda w: w):
    """An Omega matrix [T, T] (torch / numpy) as rows of back-end scalars ``const(Omega[t, j])``
    for :func:`mix`; None stays None (Omega = I)."""
    if omega is None:
        return None
    n = omega.shape[0]
    return [[const(omega[i, j]) for j in range(n)] for i in range(n)]


def mix(xs: list, omega_rows, blocked: bool = True) -> list:
    """The LM-HT input ``I[t] = sum_j Omega[t, j] x[j]`` (Eq. 12); ``omega_rows`` None is Omega = I.
    ``blocked``: Omega (T x T) per window of T steps (``len(xs)`` a multiple of T)."""
    if omega_rows is None:
        return xs
    return nm.omega_mix_blocked(xs, omega_rows) if blocked else nm.omega_mix(xs, omega_rows)


def run_lmht(ops, xs, params_at: Callable, v, omega_rows=None, blocked: bool = True,
             t0: int = 0):
    """M-HT / LM-HT over ``xs`` from membrane ``v``: Omega mixing (:func:`mix`), then the steps
    (Eq. 8-11). Returns ``(spikes: list over t, final v)``."""
    return run_steps(ops, nm.lmht_step, v, mix(list(xs), omega_rows, blocked), params_at, t0)
