"""Triton kernels for LM-H (vanilla and radical, scalar or per-channel parameters); LIF is the
special case mu_D = mu_S = 0, lambda_D = 1.

The step is :func:`lmh_deploy.neuron_math.lmh_step`, computed in exactly its operation order in
fp32 (and compiled without FMA contraction), so spikes are bit-identical to the torch path::

    v_D[t] = mu_D * v_D[t-1] + mu_S * v_S[t-1] + I[t]
    m_S[t] = lambda_S * v_S[t-1] + lambda_D * v_D[t]
    s[t]   = 1 if m_S[t] >= theta else 0
    v_S[t] = m_S[t] - theta * s[t]

Backward (DESIGN §1): triangle surrogate ``ds/dm = max(0, g - |m - theta|) / g^2``, reset
detached, full BPTT through v_D and v_S. Reverse-time recurrence, with adjoints
``a_D = dL/dv_D[t]`` and ``a_S = dL/dv_S[t]`` carried from step t+1::

    dL/dm[t]   = dL/ds[t] * surrogate(m[t]) + a_S
    dL/dv_D[t] = a_D + lambda_D * dL/dm[t]          (= dL/dI[t])
    a_D <- mu_D * dL/dv_D[t];  a_S <- mu_S * dL/dv_D[t] + lambda_S * dL/dm[t]

Parameter gradients: ``dmu_D += dL/dv_D[t] v_D[t-1]``, ``dmu_S += dL/dv_D[t] v_S[t-1]``,
``dlambda_S += dL/dm[t] v_S[t-1]``, ``dlambda_D += dL/dm[t] v_D[t]``, reduced in-kernel.

Nothing but the input is saved for backward: the backward kernel recomputes the membranes of a
chunk of K steps into registers, then walks the chunk backwards. For T > K the forward pass
stores the two states at every chunk start (``2*ceil(T/K)-2`` fp32 values per neuron).

Memory layout: the input is ``[T, N]`` (step stride N); a neuron's channel is
``(i // INNER) % C``. Parameters are packed as fp32 ``[4, P, C]`` (mu_D, mu_S, lambda_S,
lambda_D); step t uses row ``min(t, P - 1)`` (radical LM-H holds the last step's values).
"""
from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _reduce_add(gp_ptr, val, mask, pid, ch, INNER, C, NSLOT,
                PER_CH: tl.constexpr, CH_MODE: tl.constexpr, CP: tl.constexpr,
                BLOCK: tl.constexpr):
    """Add the block's per-element parameter-gradient terms ``val`` into ``gp_ptr[channel]``.

    Per-layer (scalar) parameters: the block's sum goes to its own slot ``gp_ptr[pid * NSLOT]``
    of a ``[programs, NSLOT]`` buffer that the caller sums (no same-address atomic contention;
    deterministic). Per-channel: CH_MODE 0: one atomic per element (any layout); 1: the block lies in one channel;
    2: channel-innermost layout with a power-of-two C dividing BLOCK (CP = C);
    3: NCHW layout with a power-of-two INNER dividing BLOCK (CP = INNER).
    """
    val = tl.where(mask, val, 0.0)
    if PER_CH:
        if CH_MODE == 1:
            c0 = ((pid * BLOCK) // INNER) % C
            tl.atomic_add(gp_ptr + c0, tl.sum(val, axis=0))
        elif CH_MODE == 2:
            r = tl.sum(tl.reshape(val, [BLOCK // CP, CP]), axis=0)
            tl.atomic_add(gp_ptr + tl.arange(0, CP), r)
        elif CH_MODE == 3:
            r = tl.sum(tl.reshape(val, [BLOCK // CP, CP]), axis=1)
            cidx = ((pid * BLOCK) // CP + tl.arange(0, BLOCK // CP)) % C
            tl.atomic_add(gp_ptr + cidx, r)
        else:
            tl.atomic_add(gp_ptr + ch, val, mask=mask)
    else:
        tl.atomic_add(gp_ptr + pid * NSLOT, tl.sum(val, axis=0))


@triton.jit
def lmh_fwd_kernel(x_ptr, s_ptr, prm_ptr, th_ptr, ck_ptr, N, T, P, C, INNER,
                   PER_CH: tl.constexpr, SAVE: tl.constexpr, K: tl.constexpr,
                   BLOCK: tl.constexpr):
    """Forward over all T steps; writes spikes s[t] (and chunk-start states if SAVE)."""
    pid = tl.program_id(0)
    offs = pid.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < N
    theta = tl.load(th_ptr)
    if PER_CH:
        ch = (offs // INNER) % C
    else:
        ch = 0
    PC = P * C
    vd = tl.zeros([BLOCK], tl.float32)
    vs = vd + 0.5 * theta
    for t in range(T):
        if SAVE:
            if t > 0:
                if t % K == 0:
                    cbase = tl.cast(t // K - 1, tl.int64) * 2 * N
                    tl.store(ck_ptr + cbase + offs, vd, mask=mask)
                    tl.store(ck_ptr + cbase + N + offs, vs, mask=mask)
        pi = tl.minimum(t, P - 1) * C + ch
        mu_d = tl.load(prm_ptr + pi)
        mu_s = tl.load(prm_ptr + PC + pi)
        lam_s = tl.load(prm_ptr + 2 * PC + pi)
        lam_d = tl.load(prm_ptr + 3 * PC + pi)
        base = tl.cast(t, tl.int64) * N
        cur = tl.load(x_ptr + base + offs, mask=mask, other=0.0).to(tl.float32)
        vd = mu_d * vd + mu_s * vs + cur
        m = lam_s * vs + lam_d * vd
        s = (m >= theta).to(tl.float32)
        vs = m - s * theta
        tl.store(s_ptr + base + offs, s.to(s_ptr.dtype.element_ty), mask=mask)


@triton.jit
def lmh_bwd_kernel(x_ptr, g_ptr, gx_ptr, prm_ptr, th_ptr, ck_ptr, gp_ptr, N, T, P, C, INNER, NSLOT,
                   GAMMA: tl.constexpr, PER_CH: tl.constexpr, RADICAL: tl.constexpr,
                   NEED_PGRAD: tl.constexpr, CH_MODE: tl.constexpr, CP: tl.constexpr,
                   K: tl.constexpr, BLOCK: tl.constexpr):
    """Backward over all T steps (chunks of K steps, last chunk first)."""
    pid = tl.program_id(0)
    offs = pid.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < N
    theta = tl.load(th_ptr)
    if PER_CH:
        ch = (offs // INNER) % C
    else:
        ch = 0
    PC = P * C
    a_d = tl.zeros([BLOCK], tl.float32)
    a_s = tl.zeros([BLOCK], tl.float32)
    acc_md = tl.zeros([BLOCK], tl.float32)
    acc_ms = tl.zeros([BLOCK], tl.float32)
    acc_ls = tl.zeros([BLOCK], tl.float32)
    acc_ld = tl.zeros([BLOCK], tl.float32)
    nch = (T + K - 1) // K
    for cc in range(nch):
        c = nch - 1 - cc
        t0 = c * K
        if c == 0:
            vd = tl.zeros([BLOCK], tl.float32)
            vs = vd + 0.5 * theta
        else:
            cbase = tl.cast(c - 1, tl.int64) * 2 * N
            vd = tl.load(ck_ptr + cbase + offs, mask=mask, other=0.0)
            vs = tl.load(ck_ptr + cbase + N + offs, mask=mask, other=0.0)
        # recompute the chunk's states: vds[k] = v_D[t0+k-1], vss[k] = v_S[t0+k-1]
        vds = (vd,)
        vss = (vs,)
        for k in tl.static_range(K):
            t = t0 + k
            pi = tl.minimum(t, P - 1) * C + ch
            mu_d = tl.load(prm_ptr + pi)
            mu_s = tl.load(prm_ptr + PC + pi)
            lam_s = tl.load(prm_ptr + 2 * PC + pi)
            lam_d = tl.load(prm_ptr + 3 * PC + pi)
            cur = tl.load(x_ptr + tl.cast(t, tl.int64) * N + offs, mask=mask & (t < T),
                          other=0.0).to(tl.float32)
            vd = mu_d * vd + mu_s * vs + cur
            m = lam_s * vs + lam_d * vd
            s = (m >= theta).to(tl.float32)
            vs = m - s * theta
            vds = vds + (vd,)
            vss = vss + (vs,)
        # walk the chunk backwards
        for k in tl.static_range(K - 1, -1, -1):
            t = t0 + k
            valid = mask & (t < T)
            pi = tl.minimum(t, P - 1) * C + ch
            mu_d = tl.load(prm_ptr + pi)
            mu_s = tl.load(prm_ptr + PC + pi)
            lam_s = tl.load(prm_ptr + 2 * PC + pi)
            lam_d = tl.load(prm_ptr + 3 * PC + pi)
            vd_prev = vds[k]
            vs_prev = vss[k]
            vd_t = vds[k + 1]
            m = lam_s * vs_prev + lam_d * vd_t
            toff = tl.cast(t, tl.int64) * N
            g = tl.load(g_ptr + toff + offs, mask=valid, other=0.0).to(tl.float32)
            sg = tl.maximum(GAMMA - tl.abs(m - theta), 0.0) / (GAMMA * GAMMA)
            gm = g * sg + a_s
            gvd = a_d + lam_d * gm
            tl.store(gx_ptr + toff + offs, gvd.to(gx_ptr.dtype.element_ty), mask=valid)
            a_d = mu_d * gvd
            a_s = mu_s * gvd + lam_s * gm
            if NEED_PGRAD:
                if RADICAL:
                    if t < T:
                        prow = tl.minimum(t, P - 1) * C
                        _reduce_add(gp_ptr + prow, gvd * vd_prev, mask, pid, ch, INNER, C, NSLOT,
                                    PER_CH, CH_MODE, CP, BLOCK)
                        _reduce_add(gp_ptr + PC + prow, gvd * vs_prev, mask, pid, ch, INNER, C, NSLOT,
                                    PER_CH, CH_MODE, CP, BLOCK)
                        _reduce_add(gp_ptr + 2 * PC + prow, gm * vs_prev, mask, pid, ch, INNER,
                                    C, NSLOT, PER_CH, CH_MODE, CP, BLOCK)
                        _reduce_add(gp_ptr + 3 * PC + prow, gm * vd_t, mask, pid, ch, INNER, C, NSLOT,
                                    PER_CH, CH_MODE, CP, BLOCK)
                else:
                    acc_md += gvd * vd_prev
                    acc_ms += gvd * vs_prev
                    acc_ls += gm * vs_prev
                    acc_ld += gm * vd_t
    if NEED_PGRAD:
        if not RADICAL:
            _reduce_add(gp_ptr, acc_md, mask, pid, ch, INNER, C, NSLOT, PER_CH, CH_MODE, CP,
                        BLOCK)
            _reduce_add(gp_ptr + PC, acc_ms, mask, pid, ch, INNER, C, NSLOT, PER_CH, CH_MODE, CP,
                        BLOCK)
            _reduce_add(gp_ptr + 2 * PC, acc_ls, mask, pid, ch, INNER, C, NSLOT, PER_CH, CH_MODE, CP,
                        BLOCK)
            _reduce_add(gp_ptr + 3 * PC, acc_ld, mask, pid, ch, INNER, C, NSLOT, PER_CH, CH_MODE, CP,
                        BLOCK)
