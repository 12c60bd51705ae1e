"""Triton kernels for M-HT / LM-HT with L levels and the T-GIM Omega fused in.

The step is :func:`lmh_deploy.neuron_math.lmht_step` after :func:`omega_mix_blocked`, in exactly
their operation order in fp32 (no FMA contraction, IEEE division), so spikes are bit-identical to
the torch path. Per window of T steps (Omega is T x T; T' = k*T runs k windows, state carried)::

    X[j] = gain * x[j]
    I[t] = Omega[t,0] X[0] + Omega[t,1] X[1] + ... (left to right; I = X without Omega)
    m[t] = lambda * v[t-1] + I[t]
    s[t] = #{k in 1..L : m[t] >= fl(k theta)}   (a cascade of L comparisons, DESIGN §1)
    v[t] = m[t] - theta * s[t]

Backward (DESIGN §1): rectangular window ``d(theta s)/dm = 1`` on ``0.5 theta <= m <= (L+0.5)
theta``; m -> v[t-1] and the reset are detached, so the backward is local per step except
through Omega. Each backward program runs ITERS consecutive blocks and keeps the T*T Omega
terms (and a per-layer lambda's) per element in fp32 registers across them, reducing them once
at its end into its own row of a ``[programs, T*T]`` buffer that the caller sums::

    dL/dI[t]    = dL/ds[t] * window(m[t]) / theta
    dL/dx[j]    = gain * sum_t Omega[t, j] dL/dI[t]
    dL/dOmega[t, j] += sum_n dL/dI[t] X[j];   dL/dlambda += sum dL/dI[t] v[t-1]

``SCALED``: as in :mod:`._lmh_triton`, the kernels write ``theta * s`` and take ``dL/d(theta s)``.

``MAPPED``: ``lam_ptr`` holds ``sigmoid`` of the raw learnable ``a`` and the kernels apply
:func:`lmh_deploy.neuron_math.lam_map` (``lambda = sigma + 0.5``, the same fp32 operation as the
torch map); ``om_ptr`` is ``[2, T*T]``: ``sigma = sigmoid(M)`` and ``Omega = (2 sigma) / T``
(:func:`lmh_deploy.neuron_math.omega_map`, evaluated by the launcher: an IEEE division per entry
would cost every thread T*T divisions per window when T is not a power of two). The kernels
return the raw gradients (times ``sigma (1 - sigma)``, and ``2/T`` for Omega).

Constants: ``theta`` and ``gain`` are read from 1-element tensors, ``v(0) = V0_FRAC * theta``.

``THETA_POW2`` (theta an exact power of two, as ``2/L`` for L = 1, 2, 4, 8 of direct training):
the backward's division of the surrogate by theta becomes a multiplication by ``1/theta``. Both
are correctly rounded results of the same real number, so the bits are the same; an IEEE division
costs a dozen instructions. (The forward compares against the L thresholds ``fl(k theta)``.)

``OMEGA_DOT`` (an alternative measured by ``benchmarks/bench_neurons.py --sections tune``): the
window's ``dL/dI`` and ``X`` are joined into ``[BLOCK, TP]`` tiles (TP = T padded to a power of
two >= 16) and ``dL/dOmega`` accumulates as one ``tl.dot`` per window into a ``[TP, TP]`` tile
(3xTF32 on the tensor cores), instead of T*T per-element fp32 registers.

Only the input is saved; the backward kernel recomputes the forward pass window by window.
Layout as in :mod:`._lmh_triton` (step stride N, channel ``(i // INNER) % C``).
"""
from __future__ import annotations

import triton
import triton.language as tl

from ._lmh_triton import _map_slope, _reduce_add, _round_as, _theta_as_out, _zeros_tuple


@triton.jit
def _load_window(x_ptr, wbase, N, offs, mask, gain, T: tl.constexpr):
    xs = ()
    for j in tl.static_range(T):
        xj = tl.load(x_ptr + (wbase + j) * N + offs, mask=mask, other=0.0).to(tl.float32)
        xs = xs + (xj * gain,)
    return xs


@triton.jit
def _omega(om_ptr, idx, T: tl.constexpr, MAPPED: tl.constexpr):
    """``Omega`` at flat index ``idx`` (MAPPED: row 1 of the ``[2, T*T]`` buffer)."""
    if MAPPED:
        return tl.load(om_ptr + T * T + idx)
    return tl.load(om_ptr + idx)


@triton.jit
def _lam(lam_ptr, idx, MAPPED: tl.constexpr):
    """``lambda`` at ``idx`` (from its sigmoid if MAPPED: ``sigma + 0.5``)."""
    lam = tl.load(lam_ptr + idx)
    if MAPPED:
        lam = lam + 0.5
    return lam


@triton.jit
def _mix_row(om_ptr, xs, t: tl.constexpr, T: tl.constexpr, HAS_OMEGA: tl.constexpr,
             MAPPED: tl.constexpr):
    if HAS_OMEGA:
        acc = _omega(om_ptr, t * T, T, MAPPED) * xs[0]
        for j in tl.static_range(1, T):
            acc = acc + _omega(om_ptr, t * T + j, T, MAPPED) * xs[j]
    else:
        acc = xs[t]
    return acc


@triton.jit
def _lmht_consts(th_ptr, gain_ptr, V0_FRAC):
    """``(theta, 1/theta, v(0) = V0_FRAC * theta, gain)``; ``1/theta`` is IEEE-rounded (exact
    when theta is a power of two, the only case it is used in)."""
    theta = tl.load(th_ptr)
    inv_theta = tl.math.div_rn(theta * 0.0 + 1.0, theta)
    return theta, inv_theta, V0_FRAC * theta, tl.load(gain_ptr)


@triton.jit
def _over_theta(v, theta, inv_theta, THETA_POW2: tl.constexpr):
    """``v / theta`` rounded as IEEE division (``v * inv_theta`` if THETA_POW2, where
    ``inv_theta = 1/theta`` is then exact)."""
    if THETA_POW2:
        return v * inv_theta
    else:
        return tl.math.div_rn(v, theta)


@triton.jit
def _lmht_cell(v, cur, lam, theta, inv_theta, L: tl.constexpr, THETA_POW2: tl.constexpr):
    """One LM-HT charge + fire in :func:`lmh_deploy.neuron_math.lmht_step`'s operation order:
    ``m = lam v + I``, ``s = #{k in 1..L : m >= fl(k theta)}``; returns ``(m, s)``."""
    m = lam * v + cur
    s = (m >= theta).to(tl.float32)
    for k in tl.static_range(2, L + 1):
        s += (m >= theta * k).to(tl.float32)
    return m, s


@triton.jit
def lmht_fwd_kernel(x_ptr, s_ptr, k8_ptr, om_ptr, lam_ptr, th_ptr, gain_ptr, V0_FRAC, N, NW, C,
                    INNER, T: tl.constexpr, L: tl.constexpr, HAS_OMEGA: tl.constexpr,
                    PER_CH: tl.constexpr, SCALED: tl.constexpr, MAPPED: tl.constexpr,
                    K8: tl.constexpr, THETA_POW2: tl.constexpr,
                    ROUND_THETA: tl.constexpr, I64: tl.constexpr, BLOCK: tl.constexpr):
    """Forward over NW windows of T steps; writes spike counts s[t] in 0..L (theta*s if SCALED)."""
    pid = tl.program_id(0)
    IDX: tl.constexpr = tl.int64 if I64 else tl.int32  # element offsets
    offs = pid.to(IDX) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < N
    theta, inv_theta, v0, gain = _lmht_consts(th_ptr, gain_ptr, V0_FRAC)
    theta_o = _theta_as_out(theta, s_ptr, ROUND_THETA)
    if PER_CH:
        lam = _lam(lam_ptr, (offs // INNER) % C, MAPPED)
    else:
        lam = _lam(lam_ptr, 0, MAPPED)
    v = tl.zeros([BLOCK], tl.float32) + v0
    for w in range(NW):
        wbase = tl.cast(w, IDX) * T
        xs = _load_window(x_ptr, wbase, N, offs, mask, gain, T)
        for t in tl.static_range(T):
            cur = _mix_row(om_ptr, xs, t, T, HAS_OMEGA, MAPPED)
            m, s = _lmht_cell(v, cur, lam, theta, inv_theta, L, THETA_POW2)
            v = m - s * theta
            if K8:  # the counts as uint8 too (see _lmh_triton)
                tl.store(k8_ptr + (wbase + t) * N + offs, s.to(tl.uint8), mask=mask)
            if SCALED:
                s = _round_as(s * theta_o, s_ptr)
            tl.store(s_ptr + (wbase + t) * N + offs, s.to(s_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _outer_acc(acc, a, b, T: tl.constexpr):
    """``acc[t*T + j] += a[t] * b[j]`` for a tuple of T*T vectors."""
    out = ()
    for t in tl.static_range(T):
        for j in tl.static_range(T):
            out = out + (tl.fma(a[t], b[j], acc[t * T + j]),)
    return out


@triton.jit
def _join_cols(vals, T: tl.constexpr, TP: tl.constexpr, LOGTP: tl.constexpr,
               BLOCK: tl.constexpr):
    """``[BLOCK, TP]`` tile of the T vectors ``vals`` (zero-padded to TP columns), by repeated
    ``tl.join`` (register moves only). Column ``c`` holds ``vals[bitreverse(c)]`` (see
    :func:`_bitrev`): each join adds a new minor axis."""
    cols = ()
    for i in tl.static_range(TP):
        if i < T:
            cols = cols + (vals[i],)
        else:
            cols = cols + (tl.zeros([BLOCK], tl.float32),)
    for lvl in tl.static_range(LOGTP):
        nxt = ()
        for i in tl.static_range(TP >> (lvl + 1)):
            nxt = nxt + (tl.join(cols[2 * i], cols[2 * i + 1]),)
        cols = nxt
    return tl.reshape(cols[0], [BLOCK, TP])


@triton.jit
def _bitrev(c, LOGTP: tl.constexpr):
    """Reverse the LOGTP low bits of ``c`` (the column order of :func:`_join_cols`)."""
    r = c * 0
    for b in tl.static_range(LOGTP):
        r = r * 2 + ((c >> b) & 1)
    return r


@triton.jit
def lmht_bwd_kernel(x_ptr, g_ptr, gx_ptr, om_ptr, lam_ptr, th_ptr, gain_ptr, V0_FRAC, glam_ptr,
                    gom_ptr, scr_ptr, N, NW, C, INNER, NSLOT, ITERS,
                    T: tl.constexpr, L: tl.constexpr, HAS_OMEGA: tl.constexpr,
                    PER_CH: tl.constexpr, NEED_LAM: tl.constexpr, NEED_OMEGA: tl.constexpr,
                    SCALED: tl.constexpr, MAPPED: tl.constexpr, ROUND_THETA: tl.constexpr,
                    THETA_POW2: tl.constexpr, CH_MODE: tl.constexpr, OMEGA_DOT: tl.constexpr, LOGTP: tl.constexpr,
                    CP: tl.constexpr, I64: tl.constexpr, BLOCK: tl.constexpr,
                    DX_DOT: tl.constexpr = False, OM_SCRATCH: tl.constexpr = False):
    """Backward of ITERS consecutive blocks: recompute each window forward, then dL/dx,
    dL/dlambda, dL/dOmega. ``DX_DOT`` (with HAS_OMEGA): ``dL/dx`` of a window as one
    ``[BLOCK, TP] x [TP, TP]`` 3xTF32 ``tl.dot`` of the dL/dI tile with Omega (held as a tile for
    the whole program) instead of T*T scalar Omega loads and FMAs. ``OM_SCRATCH`` (with
    OMEGA_DOT): the window's dL/dI and X rows go through a per-program scratch ``[2, TP, BLOCK]``
    (L2-resident) and come back as ``[TP, BLOCK]`` / ``[BLOCK, TP]`` tiles for the ``tl.dot``,
    instead of being joined in registers (which spills)."""
    pid = tl.program_id(0)
    IDX: tl.constexpr = tl.int64 if I64 else tl.int32  # element offsets
    theta, inv_theta, v0, gain = _lmht_consts(th_ptr, gain_ptr, V0_FRAC)
    theta_o = _theta_as_out(theta, g_ptr, ROUND_THETA)
    lo = 0.5 * theta
    hi = (L + 0.5) * theta
    NOM: tl.constexpr = T * T if (NEED_OMEGA and not OMEGA_DOT) else 0
    acc_om = _zeros_tuple(NOM, BLOCK)
    TP: tl.constexpr = 1 << LOGTP
    acc_dot = tl.zeros([TP, TP], tl.float32)
    acc_lam = tl.zeros([BLOCK], tl.float32)
    if DX_DOT:  # Omega tile: (p, q) holds Omega[bitrev(p), bitrev(q)] (the _join_cols order)
        rr = _bitrev(tl.arange(0, TP), LOGTP)
        om_tile = tl.load(om_ptr + (T * T if MAPPED else 0) + rr[:, None] * T + rr[None, :],
                          mask=(rr[:, None] < T) & (rr[None, :] < T), other=0.0)
    for it in range(ITERS):
        blk = pid.to(IDX) * ITERS + it
        offs = blk * BLOCK + tl.arange(0, BLOCK)
        mask = offs < N
        if PER_CH:
            ch = (offs // INNER) % C
        else:
            ch = 0
        lam = _lam(lam_ptr, ch, MAPPED)
        v = tl.zeros([BLOCK], tl.float32) + v0
        for w in range(NW):
            wbase = tl.cast(w, IDX) * T
            xs = _load_window(x_ptr, wbase, N, offs, mask, gain, T)
            gw = ()
            for t in tl.static_range(T):
                gw = gw + (tl.load(g_ptr + (wbase + t) * N + offs, mask=mask, other=0.0),)
            gis = ()
            for t in tl.static_range(T):
                cur = _mix_row(om_ptr, xs, t, T, HAS_OMEGA, MAPPED)
                m, s = _lmht_cell(v, cur, lam, theta, inv_theta, L, THETA_POW2)
                g = gw[t].to(tl.float32)
                if SCALED:  # dL/ds = theta * dL/do, rounded as autograd of s * theta rounds it
                    g = _round_as(g * theta_o, g_ptr)
                win = ((m >= lo) & (m <= hi)).to(tl.float32)
                gi = _over_theta(g * win, theta, inv_theta, THETA_POW2)
                if NEED_LAM:
                    acc_lam = tl.fma(gi, v, acc_lam)
                v = m - s * theta
                gis = gis + (gi,)
            if DX_DOT:
                gt = _join_cols(gis, T, TP, LOGTP, BLOCK)
                gxt = tl.dot(gt, om_tile, input_precision="tf32x3") * gain
                tl.store(gx_ptr + (wbase + rr[None, :]) * N + offs[:, None],
                         gxt.to(gx_ptr.dtype.element_ty), mask=mask[:, None] & (rr[None, :] < T))
            else:
                for j in tl.static_range(T):
                    if HAS_OMEGA:
                        acc = _omega(om_ptr, j, T, MAPPED) * gis[0]
                        for t in tl.static_range(1, T):
                            acc = tl.fma(_omega(om_ptr, t * T + j, T, MAPPED), gis[t], acc)
                    else:
                        acc = gis[j]
                    gxj = acc * gain
                    tl.store(gx_ptr + (wbase + j) * N + offs, gxj.to(gx_ptr.dtype.element_ty),
                             mask=mask)
            if NEED_OMEGA:
                if OMEGA_DOT and OM_SCRATCH:  # rows t of [2, TP, BLOCK]; tile (p, q) = Omega[p, q]
                    ar = tl.arange(0, BLOCK)
                    rows = tl.arange(0, TP)
                    sb = scr_ptr + pid.to(IDX) * (2 * TP * BLOCK)
                    tl.debug_barrier()  # the previous window's tiles are read by now
                    for t in tl.static_range(T):
                        tl.store(sb + t * BLOCK + ar, gis[t])
                        tl.store(sb + (TP + t) * BLOCK + ar, xs[t])
                    tl.debug_barrier()  # every thread's rows are written
                    rok = rows < T
                    gt = tl.load(sb + rows[:, None] * BLOCK + ar[None, :], mask=rok[:, None],
                                 other=0.0)
                    xt = tl.load(sb + (TP + rows[None, :]) * BLOCK + ar[:, None],
                                 mask=rok[None, :], other=0.0)
                    acc_dot = tl.dot(gt, xt, acc_dot, input_precision="tf32x3")
                elif OMEGA_DOT:
                    if not DX_DOT:
                        gt = _join_cols(gis, T, TP, LOGTP, BLOCK)
                    xt = _join_cols(xs, T, TP, LOGTP, BLOCK)
                    acc_dot = tl.dot(tl.trans(gt), xt, acc_dot, input_precision="tf32x3")
                else:
                    acc_om = _outer_acc(acc_om, gis, xs, T)
        if NEED_LAM:
            if PER_CH:  # channels differ between blocks: flush this block's terms
                _reduce_add(glam_ptr, acc_lam * _map_slope(lam_ptr, ch, MAPPED), mask, pid, blk,
                            ch, INNER, C, NSLOT, PER_CH, CH_MODE, CP, BLOCK)
                acc_lam = tl.zeros([BLOCK], tl.float32)
    if NEED_OMEGA:
        if OMEGA_DOT:  # tile (p, q) is Omega[bitrev(p), bitrev(q)] (OM_SCRATCH: Omega[p, q])
            if OM_SCRATCH:
                r = tl.arange(0, TP)
            else:
                r = _bitrev(tl.arange(0, TP), LOGTP)
            idx = r[:, None] * T + r[None, :]
            ok = (r[:, None] < T) & (r[None, :] < T)
            d = acc_dot
            if MAPPED:  # d Omega / d M = (2/T) sigma (1 - sigma)
                d = d * _map_slope(om_ptr, tl.where(ok, idx, 0), MAPPED) * (2.0 / T)
            tl.store(gom_ptr + pid * (T * T) + idx, d, mask=ok)
        else:
            for i in tl.static_range(T * T):
                d = tl.sum(acc_om[i], axis=0)
                if MAPPED:  # d Omega / d M = (2/T) sigma (1 - sigma)
                    d = d * _map_slope(om_ptr, i, MAPPED) * (2.0 / T)
                tl.store(gom_ptr + pid * (T * T) + i, d)
    if NEED_LAM:
        if not PER_CH:
            tl.store(glam_ptr + pid, tl.sum(acc_lam, axis=0) * _map_slope(lam_ptr, 0, MAPPED))
