"""The neuron equations, written once (DESIGN §1).

Every function here is pure: ``(ops, state, input, params) -> (spikes, new_state)`` over the
array back-end ``ops`` (:mod:`lmh_deploy.ops`). The torch modules, the numpy reference
interpreter, the ONNX graph builder and the Lava process models all call these same functions,
so the equations cannot drift between runtimes.

Spikes are *counts* (0/1, or 0..L); a layer's output to the next layer is ``o = theta * s``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

# ---------------------------------------------------------------------------------------------
# parameter maps
# ---------------------------------------------------------------------------------------------


def mu_map(ops, x):
    """LM-H coupling: ``mu = sigmoid(x) - 0.5`` (range -0.5 .. 0.5; 0 at x = 0)."""
    return ops.sigmoid(x) - 0.5


def lam_map(ops, x):
    """LM-H / LM-HT decay: ``lambda = sigmoid(x) + 0.5`` (range 0.5 .. 1.5; 1 at x = 0)."""
    return ops.sigmoid(x) + 0.5


def omega_map(ops, m, timesteps: int):
    """LM-HT T-GIM: ``Omega[t, j] = (2 * sigmoid(M[t, j])) / T`` (1/T at M = 0), rounded in that
    order in float32 as the original code computes it (``sigmoid(M) * (2/T)`` rounds some entries
    differently when T is not a power of two)."""
    return (ops.sigmoid(m) * 2.0) / float(timesteps)


# ---------------------------------------------------------------------------------------------
# LM-H (two compartments, Eq. 4); LIF is its special case mu_D = mu_S = 0, lambda_D = 1
# ---------------------------------------------------------------------------------------------


@dataclass
class LMHParams:
    """Evaluated LM-H constants for one step (scalars or arrays broadcastable to the input)."""

    mu_d: Any
    mu_s: Any
    lam_s: Any
    lam_d: Any
    theta: Any


def lmh_initial_state(zeros, theta):
    """``v_D(0) = 0``, ``v_S(0) = theta / 2``; ``zeros`` is a zero array of the layer's shape."""
    return (zeros, zeros + 0.5 * theta)


def lmh_step(ops, state, current, p: LMHParams):
    """One LM-H step.

    ::

        v_D[t] = mu_D * v_D[t-1] + mu_S * v_S[t-1] + I[t]
        m_S[t] = lambda_S * v_S[t-1] + lambda_D * v_D[t]
        s[t]   = 1 if m_S[t] >= theta else 0
        v_S[t] = m_S[t] - theta * s[t]          (reset term detached: dv_S/dm_S = 1)

    Returns ``(s, (v_D, v_S))``.
    """
    v_d, v_s = state
    v_d = p.mu_d * v_d + p.mu_s * v_s + current
    m_s = p.lam_s * v_s + p.lam_d * v_d
    s = ops.spike(m_s, p.theta)
    v_s = m_s - ops.detach(s) * p.theta
    return s, (v_d, v_s)


# ---------------------------------------------------------------------------------------------
# M-HT / LM-HT (Eq. 8-12)
# ---------------------------------------------------------------------------------------------


@dataclass
class LMHTParams:
    """Evaluated LM-HT constants for one step."""

    lam: Any
    theta: Any
    levels: int


def lmht_step(ops, v, current, p: LMHTParams):
    """One LM-HT step (``current`` is the Omega-mixed input I[t]).

    ::

        m[t] = lambda * v[t-1] + I[t]           (path m[t] -> v[t-1] detached; lambda keeps
                                                 dL/dm[t] * v[t-1], Eq. 14)
        s[t] = #{k in 1..L : m[t] >= fl(k * theta)}   (a cascade of L comparisons, as the
                                                 original code and NIR's Threshold nodes read it)
        v[t] = m[t] - theta * s[t]              (reset detached)

    Returns ``(s, v)``.
    """
    m = p.lam * ops.detach(v) + current
    s = ops.levels(m, p.theta, p.levels)
    v = m - ops.detach(s) * p.theta
    return s, v


def omega_mix(xs: Sequence[Any], omega_rows: Sequence[Sequence[Any]]):
    """T-GIM mixing (Eq. 12): ``I[t] = sum_j Omega[t, j] * x[j]``, summed in the order j = 0..T-1.

    ``xs`` is the list of per-step inputs, ``omega_rows[t][j]`` the scalar weights (back-end
    scalars). The fixed left-to-right order makes every back-end round identically.
    Omega is non-causal: every output step depends on every input step.
    """
    out = []
    for row in omega_rows:
        acc = row[0] * xs[0]
        for j in range(1, len(xs)):
            acc = acc + row[j] * xs[j]
        out.append(acc)
    return out


def omega_mix_blocked(xs, omega_rows):
    """:func:`omega_mix` over ``len(xs) = k*T`` steps with Omega (TxT) applied per window."""
    t = len(omega_rows)
    if len(xs) % t:
        raise ValueError(
            f"LM-HT was trained with T={t}; it runs at a multiple of T (Omega is applied per "
            f"window), not at T'={len(xs)}. Choose T' in {{{t}, {2 * t}, {3 * t}, ...}}."
        )
    out = []
    for w in range(len(xs) // t):
        out.extend(omega_mix(xs[w * t:(w + 1) * t], omega_rows))
    return out


# ---------------------------------------------------------------------------------------------
# QCFS activation (hybrid stage 1)
# ---------------------------------------------------------------------------------------------


def qcfs_forward_numpy(x, vartheta, tq):
    """``a = (vartheta/T_q) * clip(floor(x*T_q/vartheta + 1/2), 0, T_q)`` (numpy, for tests)."""
    import numpy as np

    return (vartheta / tq) * np.clip(np.floor(x * tq / vartheta + 0.5), 0, tq)
