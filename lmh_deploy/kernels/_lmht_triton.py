"""Triton kernels for M-HT / LM-HT with L levels and the T-GIM Omega fused in.

The step is :func:`lmh_deploy.neuron_math.lmht_step` after :func:`omega_mix_blocked`, in exactly
their operation order in fp32 (no FMA contraction, IEEE division), so spikes are bit-identical to
the torch path. Per window of T steps (Omega is T x T; T' = k*T runs k windows, state carried)::

    X[j] = gain * x[j]
    I[t] = Omega[t,0] X[0] + Omega[t,1] X[1] + ... (left to right; I = X without Omega)
    m[t] = lambda * v[t-1] + I[t]
    s[t] = clip(floor(m[t] / theta), 0, L)
    v[t] = m[t] - theta * s[t]

Backward (DESIGN §1): rectangular window ``d(theta s)/dm = 1`` on ``0.5 theta <= m <= (L+0.5)
theta``; m -> v[t-1] and the reset are detached, so the backward is local per step except
through Omega (dL/dOmega: per-program partial sums in a [programs, T*T] buffer)::

    dL/dI[t]    = dL/ds[t] * window(m[t]) / theta
    dL/dx[j]    = gain * sum_t Omega[t, j] dL/dI[t]
    dL/dOmega[t, j] += sum_n dL/dI[t] X[j];   dL/dlambda += sum dL/dI[t] v[t-1]

Only the input is saved; the backward kernel recomputes the forward pass window by window.
Layout as in :mod:`._lmh_triton` (step stride N, channel ``(i // INNER) % C``).
"""
from __future__ import annotations

import triton
import triton.language as tl

from ._lmh_triton import _reduce_add


@triton.jit
def _load_window(x_ptr, wbase, N, offs, mask, gain, T: tl.constexpr):
    xs = ()
    for j in tl.static_range(T):
        xj = tl.load(x_ptr + (wbase + j) * N + offs, mask=mask, other=0.0).to(tl.float32)
        xs = xs + (xj * gain,)
    return xs


@triton.jit
def _mix_row(om_ptr, xs, t: tl.constexpr, T: tl.constexpr, HAS_OMEGA: tl.constexpr):
    if HAS_OMEGA:
        acc = tl.load(om_ptr + t * T) * xs[0]
        for j in tl.static_range(1, T):
            acc = acc + tl.load(om_ptr + t * T + j) * xs[j]
    else:
        acc = xs[t]
    return acc


@triton.jit
def lmht_fwd_kernel(x_ptr, s_ptr, om_ptr, lam_ptr, cst_ptr, N, NW, C, INNER,
                    T: tl.constexpr, L: tl.constexpr, HAS_OMEGA: tl.constexpr,
                    PER_CH: tl.constexpr, BLOCK: tl.constexpr):
    """Forward over NW windows of T steps; writes spike counts s[t] in 0..L."""
    pid = tl.program_id(0)
    offs = pid.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < N
    theta = tl.load(cst_ptr)
    v0 = tl.load(cst_ptr + 1)
    gain = tl.load(cst_ptr + 2)
    if PER_CH:
        lam = tl.load(lam_ptr + (offs // INNER) % C)
    else:
        lam = tl.load(lam_ptr)
    v = tl.zeros([BLOCK], tl.float32) + v0
    for w in range(NW):
        wbase = tl.cast(w, tl.int64) * T
        xs = _load_window(x_ptr, wbase, N, offs, mask, gain, T)
        for t in tl.static_range(T):
            cur = _mix_row(om_ptr, xs, t, T, HAS_OMEGA)
            m = lam * v + cur
            s = tl.minimum(tl.maximum(tl.floor(tl.math.div_rn(m, theta)), 0.0), L)
            v = m - s * theta
            tl.store(s_ptr + (wbase + t) * N + offs, s.to(s_ptr.dtype.element_ty), mask=mask)


@triton.jit
def lmht_bwd_kernel(x_ptr, g_ptr, gx_ptr, om_ptr, lam_ptr, cst_ptr, glam_ptr, gom_ptr,
                    N, NW, C, INNER, NSLOT,
                    T: tl.constexpr, L: tl.constexpr, HAS_OMEGA: tl.constexpr,
                    PER_CH: tl.constexpr, NEED_LAM: tl.constexpr, NEED_OMEGA: tl.constexpr,
                    CH_MODE: tl.constexpr, CP: tl.constexpr, BLOCK: tl.constexpr):
    """Backward: recompute each window forward, then dL/dx, dL/dlambda, dL/dOmega."""
    pid = tl.program_id(0)
    offs = pid.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < N
    theta = tl.load(cst_ptr)
    v0 = tl.load(cst_ptr + 1)
    gain = tl.load(cst_ptr + 2)
    if PER_CH:
        ch = (offs // INNER) % C
        lam = tl.load(lam_ptr + ch)
    else:
        ch = 0
        lam = tl.load(lam_ptr)
    lo = 0.5 * theta
    hi = (L + 0.5) * theta
    v = tl.zeros([BLOCK], tl.float32) + v0
    acc_lam = tl.zeros([BLOCK], tl.float32)
    for w in range(NW):
        wbase = tl.cast(w, tl.int64) * T
        xs = _load_window(x_ptr, wbase, N, offs, mask, gain, T)
        gis = ()
        for t in tl.static_range(T):
            cur = _mix_row(om_ptr, xs, t, T, HAS_OMEGA)
            m = lam * v + cur
            s = tl.minimum(tl.maximum(tl.floor(tl.math.div_rn(m, theta)), 0.0), L)
            g = tl.load(g_ptr + (wbase + t) * N + offs, mask=mask, other=0.0).to(tl.float32)
            win = ((m >= lo) & (m <= hi)).to(tl.float32)
            gi = tl.math.div_rn(g * win, theta)
            if NEED_LAM:
                acc_lam += gi * v
            v = m - s * theta
            gis = gis + (gi,)
        for j in tl.static_range(T):
            if HAS_OMEGA:
                acc = tl.load(om_ptr + j) * gis[0]
                for t in tl.static_range(1, T):
                    acc = acc + tl.load(om_ptr + t * T + j) * gis[t]
            else:
                acc = gis[j]
            gxj = acc * gain
            tl.store(gx_ptr + (wbase + j) * N + offs, gxj.to(gx_ptr.dtype.element_ty), mask=mask)
        if NEED_OMEGA:
            for t in tl.static_range(T):
                for j in tl.static_range(T):
                    part = tl.sum(tl.where(mask, gis[t] * xs[j], 0.0), axis=0)
                    tl.atomic_add(gom_ptr + pid * (T * T) + t * T + j, part)
    if NEED_LAM:
        _reduce_add(glam_ptr, acc_lam, mask, pid, ch, INNER, C, NSLOT, PER_CH, CH_MODE, CP, BLOCK)
