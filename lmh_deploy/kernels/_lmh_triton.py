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

Per-layer parameters: each program runs ITERS consecutive blocks and keeps the gradient terms
in per-element fp32 registers across them (radical LM-H with one chunk and T = P: one
accumulator per step and parameter), reducing them once at its end into its own slot of a
``[programs, 4*P]`` buffer that the caller sums. Per-channel parameters: per-block atomics.

``SCALED``: the layer output ``o = theta * s`` is written instead of ``s`` (one pass, no extra
multiply kernel), and backward reads ``dL/do`` and forms ``dL/ds = theta * dL/do``, each product
rounded to the input dtype exactly as torch's ``s * theta`` and its autograd round it: with
ROUND_THETA (CUDA) theta is first rounded to that dtype too, as torch's CUDA kernels cast a 0-dim
fp32 operand to the bf16 common dtype (its CPU kernels use it as an fp32 scalar).

Nothing but the input is saved for backward: the backward kernel recomputes the membranes of a
chunk of K steps into registers, then walks the chunk backwards. For T > K the forward pass
stores the two states at every chunk start (``2*ceil(T/K)-2`` fp32 values per neuron).

Memory layout: the input is ``[T, N]`` (step stride N); a neuron's channel is
``(i // INNER) % C``. Parameters are packed as fp32 ``[4, P, C]`` (mu_D, mu_S, lambda_S,
lambda_D); step t uses row ``min(t, P - 1)`` (radical LM-H holds the last step's values).

``K8``: the forward kernel also writes the spike counts as uint8 to ``k8_ptr`` (same layout),
a compact copy that :class:`lmh_deploy.spike_memory.CompactSpikes` keeps for backward in place of
the layer output.

``MAPPED``: the pack holds ``sigma = sigmoid(x)`` of the raw learnables instead, and the kernels
apply :func:`lmh_deploy.neuron_math.mu_map` / ``lam_map`` themselves (``mu = sigma - 0.5``,
``lambda = sigma + 0.5``, the same single fp32 operation as the torch maps, so the same bits)
and return the gradients of the raw learnables: each parameter-gradient term is multiplied by
``d sigma / dx = sigma (1 - sigma)``. This keeps the ~12 tiny autograd kernels of the maps
(four sigmoids, four shifts, their backward) out of a training step.
"""
from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _reduce_add(gp_ptr, val, mask, pid, blk, ch, INNER, C, NSLOT,
                PER_CH: tl.constexpr, CH_MODE: tl.constexpr, CP: tl.constexpr,
                BLOCK: tl.constexpr):
    """Add the block's per-element parameter-gradient terms ``val`` into ``gp_ptr[channel]``.

    ``pid`` is the program, ``blk`` the block it is working on (``offs = blk*BLOCK + ...``).
    Per-layer (scalar) parameters: the block's sum goes to its program's own slot
    ``gp_ptr[pid * NSLOT]`` of a zeroed ``[programs, NSLOT]`` buffer that the caller sums (no
    same-address atomic contention). Per-channel: CH_MODE 0: one atomic per element (any layout); 1: the block lies in one channel;
    2: channel-innermost layout with a power-of-two C dividing BLOCK (CP = C);
    3: NCHW layout with a power-of-two INNER dividing BLOCK (CP = INNER).
    """
    val = tl.where(mask, val, 0.0)
    if PER_CH:
        if CH_MODE == 1:
            c0 = ((blk * BLOCK) // INNER) % C
            tl.atomic_add(gp_ptr + c0, tl.sum(val, axis=0))
        elif CH_MODE == 2:
            r = tl.sum(tl.reshape(val, [BLOCK // CP, CP]), axis=0)
            tl.atomic_add(gp_ptr + tl.arange(0, CP), r)
        elif CH_MODE == 3:
            r = tl.sum(tl.reshape(val, [BLOCK // CP, CP]), axis=1)
            cidx = ((blk * BLOCK) // CP + tl.arange(0, BLOCK // CP)) % C
            tl.atomic_add(gp_ptr + cidx, r)
        else:
            tl.atomic_add(gp_ptr + ch, val, mask=mask)
    else:
        tl.atomic_add(gp_ptr + pid * NSLOT, tl.sum(val, axis=0))


@triton.jit
def _add4(acc, i0: tl.constexpr, S: tl.constexpr, NACC: tl.constexpr, v0, w0, v1, w1, v2, w2, v3, w3):
    """Return ``acc`` (a tuple of NACC vectors) with ``acc[p*S + i0] += v_p * w_p`` for p = 0..3."""
    out = ()
    for i in tl.static_range(NACC):
        if i == i0:
            out = out + (tl.fma(v0, w0, acc[i]),)
        elif i == S + i0:
            out = out + (tl.fma(v1, w1, acc[i]),)
        elif i == 2 * S + i0:
            out = out + (tl.fma(v2, w2, acc[i]),)
        elif i == 3 * S + i0:
            out = out + (tl.fma(v3, w3, acc[i]),)
        else:
            out = out + (acc[i],)
    return out


@triton.jit
def _round_as(x, ptr):
    """fp32 ``x`` rounded to nearest-even in ``ptr``'s element type, returned as fp32 (bf16 by
    bit arithmetic: Triton's interpreter truncates on a plain cast; the GPU rounds the same)."""
    if ptr.dtype.element_ty == tl.bfloat16:
        u = x.to(tl.uint32, bitcast=True)
        u = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16) << 16
        return u.to(tl.float32, bitcast=True)
    elif ptr.dtype.element_ty == tl.float32:
        return x
    else:
        return x.to(ptr.dtype.element_ty).to(tl.float32)


@triton.jit
def _theta_as_out(theta, ptr, ROUND_THETA: tl.constexpr):
    """theta as torch's ``s * theta`` uses it for a tensor of ``ptr``'s dtype: torch's CUDA
    kernels first cast the 0-dim fp32 theta to that dtype (ROUND_THETA), its CPU kernels use it
    as an fp32 scalar."""
    if ROUND_THETA:
        return _round_as(theta, ptr)
    else:
        return theta


@triton.jit
def _zeros_tuple(n: tl.constexpr, BLOCK: tl.constexpr):
    out = ()
    for i in tl.static_range(n):
        out = out + (tl.zeros([BLOCK], tl.float32),)
    return out


@triton.jit
def _lmh_params(prm_ptr, pi, PC, MAPPED: tl.constexpr):
    """The four parameters at flat index ``pi`` of one row of the ``[4, P, C]`` pack (row
    stride PC): ``(mu_D, mu_S, lambda_S, lambda_D)``, mapped from their sigmoids if MAPPED."""
    mu_d = tl.load(prm_ptr + pi)
    mu_s = tl.load(prm_ptr + PC + pi)
    lam_s = tl.load(prm_ptr + 2 * PC + pi)
    lam_d = tl.load(prm_ptr + 3 * PC + pi)
    if MAPPED:
        mu_d = mu_d - 0.5
        mu_s = mu_s - 0.5
        lam_s = lam_s + 0.5
        lam_d = lam_d + 0.5
    return mu_d, mu_s, lam_s, lam_d


@triton.jit
def _map_slope(prm_ptr, idx, MAPPED: tl.constexpr):
    """``d param / d raw`` at ``prm_ptr[idx]``: ``sigma (1 - sigma)`` if MAPPED, else 1."""
    if MAPPED:
        sg = tl.load(prm_ptr + idx)
        return sg * (1.0 - sg)
    else:
        return 1.0


@triton.jit
def _lmh_cell(vd, vs, cur, mu_d, mu_s, lam_s, lam_d, theta):
    """One LM-H step in :func:`lmh_deploy.neuron_math.lmh_step`'s operation order (launched
    without FMA contraction, so it rounds as the reference): returns ``(s, v_D, v_S)``."""
    vd = mu_d * vd + mu_s * vs + cur
    m = lam_s * vs + lam_d * vd
    s = (m >= theta).to(tl.float32)
    return s, vd, m - s * theta


@triton.jit
def lmh_fwd_kernel(x_ptr, s_ptr, k8_ptr, prm_ptr, th_ptr, ck_ptr, N, T, P, C, INNER,
                   PER_CH: tl.constexpr, SAVE: tl.constexpr, SCALED: tl.constexpr,
                   MAPPED: tl.constexpr, K8: tl.constexpr,
                   ROUND_THETA: tl.constexpr, K: tl.constexpr,
                   I64: tl.constexpr, BLOCK: tl.constexpr):
    """Forward over all T steps; writes spikes s[t] (theta*s[t] if SCALED) and, if SAVE, the
    chunk-start states."""
    pid = tl.program_id(0)
    IDX: tl.constexpr = tl.int64 if I64 else tl.int32  # element offsets
    offs = pid.to(IDX) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < N
    theta = tl.load(th_ptr)
    theta_o = _theta_as_out(theta, s_ptr, ROUND_THETA)
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
                    cbase = tl.cast(t // K - 1, IDX) * 2 * N
                    tl.store(ck_ptr + cbase + offs, vd, mask=mask)
                    tl.store(ck_ptr + cbase + N + offs, vs, mask=mask)
        pi = tl.minimum(t, P - 1) * C + ch
        mu_d, mu_s, lam_s, lam_d = _lmh_params(prm_ptr, pi, PC, MAPPED)
        base = tl.cast(t, IDX) * N
        cur = tl.load(x_ptr + base + offs, mask=mask, other=0.0).to(tl.float32)
        s, vd, vs = _lmh_cell(vd, vs, cur, mu_d, mu_s, lam_s, lam_d, theta)
        if K8:
            tl.store(k8_ptr + base + offs, s.to(tl.uint8), mask=mask)
        if SCALED:
            s = _round_as(s * theta_o, s_ptr)
        tl.store(s_ptr + base + offs, s.to(s_ptr.dtype.element_ty), mask=mask)


@triton.jit
def lmh_bwd_kernel(x_ptr, g_ptr, gx_ptr, prm_ptr, th_ptr, ck_ptr, gp_ptr, N, T, P, C, INNER, NSLOT,
                   ITERS, GAMMA: tl.constexpr, PER_CH: tl.constexpr, RADICAL: tl.constexpr,
                   NEED_PGRAD: tl.constexpr, STEP_ACC: tl.constexpr, SCALED: tl.constexpr,
                   MAPPED: tl.constexpr, ROUND_THETA: tl.constexpr,
                   CH_MODE: tl.constexpr, CP: tl.constexpr, K: tl.constexpr, I64: tl.constexpr, BLOCK: tl.constexpr):
    """Backward over all T steps (chunks of K steps, last chunk first) for ITERS consecutive
    blocks of BLOCK neurons. STEP_ACC (radical, per-layer, T = K = P): per-step accumulators."""
    pid = tl.program_id(0)
    IDX: tl.constexpr = tl.int64 if I64 else tl.int32  # element offsets
    theta = tl.load(th_ptr)
    theta_o = _theta_as_out(theta, g_ptr, ROUND_THETA)
    PC = P * C
    S: tl.constexpr = K if STEP_ACC else 1
    NACC: tl.constexpr = 4 * S
    # per-layer (or per-step) parameter-gradient terms, per element, summed over the blocks
    acc = _zeros_tuple(NACC, BLOCK)
    nch = (T + K - 1) // K
    for it in range(ITERS):
        blk = pid.to(IDX) * ITERS + it
        offs = blk * BLOCK + tl.arange(0, BLOCK)
        mask = offs < N
        if PER_CH:
            ch = (offs // INNER) % C
        else:
            ch = 0
        a_d = tl.zeros([BLOCK], tl.float32)
        a_s = tl.zeros([BLOCK], tl.float32)
        for cc in range(nch):
            c = nch - 1 - cc
            t0 = c * K
            if c == 0:
                vd = tl.zeros([BLOCK], tl.float32)
                vs = vd + 0.5 * theta
            else:
                cbase = tl.cast(c - 1, IDX) * 2 * N
                vd = tl.load(ck_ptr + cbase + offs, mask=mask, other=0.0)
                vs = tl.load(ck_ptr + cbase + N + offs, mask=mask, other=0.0)
            # recompute the chunk's states: vds[k] = v_D[t0+k-1], vss[k] = v_S[t0+k-1];
            # the chunk's incoming gradients are loaded here too (all loads in flight at once)
            vds = (vd,)
            vss = (vs,)
            gs = ()
            for k in tl.static_range(K):
                t = t0 + k
                valid = mask & (t < T)
                pi = tl.minimum(t, P - 1) * C + ch
                mu_d, mu_s, lam_s, lam_d = _lmh_params(prm_ptr, pi, PC, MAPPED)
                toff = tl.cast(t, IDX) * N
                cur = tl.load(x_ptr + toff + offs, mask=valid, other=0.0).to(tl.float32)
                gs = gs + (tl.load(g_ptr + toff + offs, mask=valid, other=0.0),)
                s, vd, vs = _lmh_cell(vd, vs, cur, mu_d, mu_s, lam_s, lam_d, theta)
                vds = vds + (vd,)
                vss = vss + (vs,)
            # walk the chunk backwards
            for k in tl.static_range(K - 1, -1, -1):
                t = t0 + k
                valid = mask & (t < T)
                pi = tl.minimum(t, P - 1) * C + ch
                mu_d, mu_s, lam_s, lam_d = _lmh_params(prm_ptr, pi, PC, MAPPED)
                vd_prev = vds[k]
                vs_prev = vss[k]
                vd_t = vds[k + 1]
                m = lam_s * vs_prev + lam_d * vd_t
                g = gs[k].to(tl.float32)
                if SCALED:  # dL/ds = theta * dL/do, rounded as autograd of s * theta rounds it
                    g = _round_as(g * theta_o, g_ptr)
                sg = tl.maximum(GAMMA - tl.abs(m - theta), 0.0) / (GAMMA * GAMMA)
                gm = tl.fma(g, sg, a_s)
                gvd = tl.fma(lam_d, gm, a_d)
                tl.store(gx_ptr + tl.cast(t, IDX) * N + offs,
                         gvd.to(gx_ptr.dtype.element_ty), mask=valid)
                a_d = mu_d * gvd
                a_s = tl.fma(mu_s, gvd, lam_s * gm)
                if NEED_PGRAD:
                    if STEP_ACC:
                        acc = _add4(acc, k, S, NACC, gvd, vd_prev, gvd, vs_prev, gm, vs_prev,
                                    gm, vd_t)
                    elif RADICAL:
                        if t < T:
                            prow = tl.minimum(t, P - 1) * C
                            pidx = prow + ch
                            _reduce_add(gp_ptr + prow,
                                        gvd * vd_prev * _map_slope(prm_ptr, pidx, MAPPED),
                                        mask, pid, blk, ch, INNER, C, NSLOT, PER_CH, CH_MODE, CP,
                                        BLOCK)
                            _reduce_add(gp_ptr + PC + prow,
                                        gvd * vs_prev * _map_slope(prm_ptr, PC + pidx, MAPPED),
                                        mask, pid, blk, ch, INNER, C, NSLOT, PER_CH, CH_MODE, CP,
                                        BLOCK)
                            _reduce_add(gp_ptr + 2 * PC + prow,
                                        gm * vs_prev * _map_slope(prm_ptr, 2 * PC + pidx, MAPPED),
                                        mask, pid, blk, ch, INNER, C, NSLOT, PER_CH, CH_MODE, CP,
                                        BLOCK)
                            _reduce_add(gp_ptr + 3 * PC + prow,
                                        gm * vd_t * _map_slope(prm_ptr, 3 * PC + pidx, MAPPED),
                                        mask, pid, blk, ch, INNER, C, NSLOT, PER_CH, CH_MODE, CP,
                                        BLOCK)
                    else:
                        acc = _add4(acc, 0, 1, 4, gvd, vd_prev, gvd, vs_prev, gm, vs_prev,
                                    gm, vd_t)
        if NEED_PGRAD:
            if PER_CH:
                if not RADICAL:  # channels differ between blocks: flush this block's terms
                    for p in tl.static_range(4):
                        _reduce_add(gp_ptr + p * PC, acc[p] * _map_slope(prm_ptr, p * PC + ch, MAPPED),
                                    mask, pid, blk, ch, INNER, C, NSLOT, PER_CH, CH_MODE, CP, BLOCK)
                    acc = _zeros_tuple(NACC, BLOCK)
    if NEED_PGRAD:
        if not PER_CH:
            if STEP_ACC or not RADICAL:  # one store per program and slot (P = 1 unless STEP_ACC)
                for p in tl.static_range(4):
                    for k in tl.static_range(S):
                        tl.store(gp_ptr + pid * NSLOT + p * P + k,
                                 tl.sum(acc[p * S + k], axis=0) * _map_slope(prm_ptr, p * P + k, MAPPED))
