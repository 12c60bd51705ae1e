"""torch.autograd.Functions over the Triton kernels, and the layout/launch logic.

``lmh_counts`` and ``lmht_counts`` take the *evaluated* neuron parameters (after the sigmoid
maps, as tensors that may carry gradient; LIF's constants, tests) and return spike counts
``[T, B, ...]`` in the input's dtype; autograd takes the parameter gradients back through the
maps. ``lmh_counts_raw`` and ``lmht_counts_raw`` take the raw learnables instead (what the torch
modules hold) and apply the maps inside the kernels, forward and backward, so a training step
launches one sigmoid instead of a dozen tiny map kernels around each neuron layer. State math is
fp32 for fp32 and bf16 inputs alike (a bf16 input gives the spikes of the fp32 reference on
``x.float()``).
"""
from __future__ import annotations

import functools
import math

import torch

from . import theta_is_pow2
from ._lmh_triton import lmh_bwd_kernel, lmh_fwd_kernel
from ._lmht_triton import lmht_bwd_kernel, lmht_fwd_kernel

_GAMMA = 1.0  # triangle surrogate width, DESIGN §1 (TorchOps.gamma)
_FP = {"enable_fp_fusion": False}  # no FMA contraction: the recurrences match torch bit for bit
_FWD_WARPS = 4
_FWD_BLOCK = 1024
_PROGRAMS_PER_SM = 4  # backward grid: about this many programs per SM, each over ITERS blocks
LAST_KERNELS: dict = {}  # the last launch's compiled kernel per name (n_regs, n_spills; benchmarks)


def _is_pow2(n: int) -> bool:
    return n > 0 and (n & (n - 1)) == 0


def _layout(x: torch.Tensor) -> tuple[torch.Tensor, int, bool]:
    """Return ``(x, inner, channels_last)``: a dense time-major tensor whose step ``t`` is the
    flat memory ``[t*N, (t+1)*N)``, and the stride of its channel dim (dim 2) in elements."""
    inner_nchw = math.prod(x.shape[3:]) if x.dim() > 3 else 1
    if x.is_contiguous():
        return x, inner_nchw, False
    if x.dim() > 3:
        perm = (0, 1) + tuple(range(3, x.dim())) + (2,)
        if x.permute(perm).is_contiguous():
            return x, 1, True
    return x.contiguous(), inner_nchw, False


def _match(g: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``g`` with the same memory layout as ``like`` (so element i means the same neuron)."""
    if g.stride() == like.stride():
        return g
    out = torch.empty_like(like, dtype=g.dtype)
    out.copy_(g)
    return out


def _k8_target(counts_out, x):
    """``(buffer the kernel writes, tensor to copy it into afterwards or None)`` for the optional
    uint8 counts output: written in place when its layout matches the kernel's view of x."""
    if counts_out is None:
        return x, None  # a dummy pointer (K8 off)
    if counts_out.dtype != torch.uint8 or counts_out.shape != x.shape:
        raise ValueError(f"counts_out must be a uint8 tensor of shape {tuple(x.shape)}, "
                         f"got {counts_out.dtype} {tuple(counts_out.shape)}")
    if counts_out.stride() == x.stride():
        return counts_out, None
    return torch.empty_like(x, dtype=torch.uint8), counts_out


def _ch_mode(per_ch: bool, channels: int, inner: int, block: int) -> tuple[int, int]:
    """Pick the in-block reduction of per-channel parameter gradients (see _reduce_add)."""
    if not per_ch:
        return 0, 1
    if inner % block == 0:
        return 1, 1
    if inner == 1 and _is_pow2(channels) and block % channels == 0:
        return 2, channels
    if inner > 1 and _is_pow2(inner) and block % inner == 0:
        return 3, inner
    return 0, 1


def _lmh_bwd_cfg(k: int, step_acc: bool, need_p: bool) -> tuple[int, int, int]:
    """(elements per thread, warps, programs per SM) of the LM-H backward: 2(K+1) states (and,
    radical, 4K per-step accumulators) per element live in registers. Measured on an H200
    (bench_neurons --sections tune, bf16 [T,64,128,32,32], 2026-11-22): the values below."""
    if step_acc:
        return (4, 4, 8) if k <= 4 else (2, 4, 2) if k <= 10 else (1, 4, 2)
    if k <= 4:
        return (4 if need_p else 8), 4, _PROGRAMS_PER_SM
    return (2 if k <= 10 else 1), 4, _PROGRAMS_PER_SM


def _lmht_bwd_cfg(t: int, need_omega: bool) -> tuple[int, int, int, int]:
    """(elements per thread, warps, programs per SM, dot mode) of the LM-HT backward: T*T Omega
    accumulators per element. Dot mode 0: everything in per-element fp32 registers; 1 (or True):
    dL/dOmega by ``tl.dot`` of tiles joined in registers; 2: dL/dx by ``tl.dot`` too (DX_DOT);
    3: dL/dOmega by ``tl.dot`` of tiles that go through an L2 scratch (OM_SCRATCH).
    Measured on an H200 (bench_neurons --sections tune, bf16 [T,64,128,32,32], 2026-11-30, two
    runs): T = 4: 2 per thread, 4 programs/SM, mode 0 (0.203-0.209 ms; 8 programs/SM 0.211-0.215);
    T = 10: 1, 2, mode 0 (0.701-0.711 ms). Every dot mode was slower (1.2-13 ms: 255 registers
    and spills)."""
    if need_omega:
        return (2, 4, 4, 0) if t <= 4 else (1, 4, 2, 0)
    return 4, 4, _PROGRAMS_PER_SM, 0


@functools.lru_cache(maxsize=None)
def _sm_count_cuda(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def _sm_count(device: torch.device) -> int:
    if device.type == "cuda":
        return _sm_count_cuda(device.index if device.index is not None else torch.cuda.current_device())
    return 4  # interpreter on CPU: a few programs, each over several blocks


def _grid_iters(n: int, block: int, device: torch.device, pps: int) -> tuple[int, int]:
    """(programs, ITERS): about ``pps`` programs per SM, each over ITERS blocks."""
    nblk = triton_cdiv(n, block)
    iters = max(1, triton_cdiv(nblk, _sm_count(device) * pps))
    return triton_cdiv(nblk, iters), iters


def _i64(*tensors: torch.Tensor) -> bool:
    """Element offsets need 64 bits (else the kernels index in int32: fewer registers)."""
    return any(t.numel() >= 2**31 - 1 for t in tensors)


def _check_channels(x: torch.Tensor, c: int) -> None:
    if c > 1 and (x.dim() < 3 or x.shape[2] != c):
        raise ValueError(f"per-channel parameters of size {c} need input [T, B, {c}, ...], "
                         f"got {tuple(x.shape)}; build the neuron with channels={x.shape[2] if x.dim() > 2 else None}")


class LMHFunction(torch.autograd.Function):
    """Fused LM-H over all steps: ``(x [T,...], prm [4,P,C], theta []) -> s [T,...]``
    (``theta * s`` when ``scaled``). ``prm`` holds the evaluated parameters, or with ``mapped``
    the raw learnables (the kernels apply the sigmoid maps; gradients are the raw ones)."""

    @staticmethod
    def forward(ctx, x, prm, theta, chunk, scaled, mapped, counts_out):
        x, inner, _ = _layout(x)
        k8, k8_copy = _k8_target(counts_out, x)
        t_steps = x.shape[0]
        n = x[0].numel()
        p_rows, c = prm.shape[1], prm.shape[2]
        _check_channels(x, c)
        prm_f = prm.detach().to(torch.float32)
        prm_f = torch.sigmoid(prm_f) if mapped else prm_f.contiguous()
        th = theta.detach().to(device=x.device, dtype=torch.float32).reshape(1)
        k = min(t_steps, chunk)
        n_ck = (t_steps + k - 1) // k - 1
        save = ctx.needs_input_grad[0] or ctx.needs_input_grad[1]
        ck = torch.empty((max(n_ck, 0) * 2, n) if save and n_ck > 0 else (1,),
                         device=x.device, dtype=torch.float32)
        s = torch.empty_like(x)
        grid = (triton_cdiv(n, _FWD_BLOCK),)
        lmh_fwd_kernel[grid](x, s, k8, prm_f, th, ck, n, t_steps, p_rows, c, inner,
                             PER_CH=c > 1, SAVE=bool(save and n_ck > 0), SCALED=bool(scaled),
                             MAPPED=bool(mapped), K8=counts_out is not None, ROUND_THETA=x.is_cuda, K=k, BLOCK=_FWD_BLOCK, I64=_i64(x, ck), num_warps=_FWD_WARPS, **_FP)
        if k8_copy is not None:
            k8_copy.copy_(k8)
        ctx.save_for_backward(x, prm_f, th, ck)
        ctx.meta = (inner, k, n_ck, bool(scaled), bool(mapped))
        return s

    @staticmethod
    def backward(ctx, g):
        x, prm_f, th, ck = ctx.saved_tensors
        inner, k, n_ck, scaled, mapped = ctx.meta
        g = _match(g, x)
        t_steps = x.shape[0]
        n = x[0].numel()
        p_rows, c = prm_f.shape[1], prm_f.shape[2]
        need_p = ctx.needs_input_grad[1]
        radical = p_rows > 1
        # radical, per-layer, one chunk covering exactly the P parameter rows: per-step registers
        step_acc = radical and c == 1 and n_ck == 0 and t_steps == p_rows
        gx = torch.empty_like(x)
        per_thread, warps, pps = _lmh_bwd_cfg(k, step_acc, need_p)
        block = per_thread * 32 * warps
        mode, cp = _ch_mode(c > 1, c, inner, block)
        grid, iters = _grid_iters(n, block, x.device, pps)
        nslot = 4 * p_rows
        # per-layer: per-program slots [programs, 4*P] (stored once each, or zeroed and atomically
        # added per step for radical without step_acc); per-channel: zeroed [4, P, C], atomics
        if not need_p:
            gp = prm_f
        elif c == 1 and (step_acc or not radical):
            gp = torch.empty((grid, nslot), device=x.device, dtype=torch.float32)
        else:
            gp = torch.zeros((grid, nslot) if c == 1 else prm_f.shape, device=x.device,
                             dtype=torch.float32)
        lmh_bwd_kernel[(grid,)](x, g, gx, prm_f, th, ck, gp, n, t_steps, p_rows, c, inner, nslot,
                                iters, GAMMA=_GAMMA, PER_CH=c > 1, RADICAL=radical,
                                NEED_PGRAD=need_p, STEP_ACC=step_acc, SCALED=scaled,
                                MAPPED=mapped, ROUND_THETA=x.is_cuda,
                                CH_MODE=mode, CP=cp, K=k, BLOCK=block, I64=_i64(x, ck), num_warps=warps, **_FP)
        if need_p and c == 1:
            gp = gp.sum(0).reshape(prm_f.shape)
        return gx, (gp if need_p else None), None, None, None, None, None


class LMHTFunction(torch.autograd.Function):
    """Fused LM-HT: ``(x [k*T,...], lam [C], omega [T,T] | None, theta [], gain [])`` -> counts
    (``theta * counts`` when ``scaled``); ``v(0) = v0_frac * theta``. With ``mapped``, ``lam``
    and ``omega`` are the raw learnables ``a`` and ``M`` (the kernels apply the maps)."""

    @staticmethod
    def forward(ctx, x, lam, omega, theta, gain, v0_frac, levels, window, scaled, mapped,
                counts_out, pow2):
        x, inner, _ = _layout(x)
        k8, k8_copy = _k8_target(counts_out, x)
        n = x[0].numel()
        c = lam.numel()
        _check_channels(x, c)
        nw = x.shape[0] // window
        lam_f = lam.detach().to(torch.float32).reshape(-1)
        lam_f = torch.sigmoid(lam_f) if mapped else lam_f.contiguous()
        has_om = omega is not None
        if has_om:
            om_f = omega.detach().to(torch.float32)
            if mapped:  # [sigma, (2 sigma) / T]: neuron_math.omega_map's rounding, once per call
                sig = torch.sigmoid(om_f).reshape(1, -1)
                om_f = torch.cat((sig, (sig * 2.0) / float(window)))
            else:
                om_f = om_f.contiguous()
        else:
            om_f = lam_f  # unused
        th = theta.detach().to(device=x.device, dtype=torch.float32).reshape(1)
        gn = gain.detach().to(device=x.device, dtype=torch.float32).reshape(1)
        s = torch.empty_like(x)
        block = _FWD_BLOCK if window <= 4 else _FWD_BLOCK // 2
        grid = (triton_cdiv(n, block),)
        lmht_fwd_kernel[grid](x, s, k8, om_f, lam_f, th, gn, float(v0_frac), n, nw, c, inner,
                              T=window, L=int(levels), HAS_OMEGA=has_om, PER_CH=c > 1,
                              SCALED=bool(scaled), MAPPED=bool(mapped), K8=counts_out is not None,
                              THETA_POW2=bool(pow2), ROUND_THETA=x.is_cuda, BLOCK=block, I64=_i64(x),
                              num_warps=_FWD_WARPS, **_FP)
        if k8_copy is not None:
            k8_copy.copy_(k8)
        ctx.save_for_backward(x, lam_f, om_f, th, gn)
        ctx.meta = (inner, int(levels), window, has_om, tuple(lam.shape), bool(scaled),
                    bool(mapped), float(v0_frac), bool(pow2))
        return s

    @staticmethod
    def backward(ctx, g):
        x, lam_f, om_f, th, gn = ctx.saved_tensors
        inner, levels, window, has_om, lam_shape, scaled, mapped, v0_frac, pow2 = ctx.meta
        g = _match(g, x)
        n = x[0].numel()
        c = lam_f.numel()
        nw = x.shape[0] // window
        need_lam = ctx.needs_input_grad[1]
        need_om = has_om and ctx.needs_input_grad[2]
        gx = torch.empty_like(x)
        per_thread, warps, pps, om_dot = _lmht_bwd_cfg(window, need_om)
        block = per_thread * 32 * warps
        mode, cp = _ch_mode(c > 1, c, inner, block)
        grid, iters = _grid_iters(n, block, x.device, pps)
        # per-program rows, each stored once (scalar lambda: [programs, 1]; Omega: [programs, T*T]);
        # per-channel lambda: zeroed [C], atomics
        glam = (torch.empty((grid, 1), device=x.device, dtype=torch.float32) if c == 1
                else torch.zeros((c,), device=x.device, dtype=torch.float32))
        gom = (torch.empty((grid, window * window), device=x.device, dtype=torch.float32)
               if need_om else om_f)
        logtp = max(4, (window - 1).bit_length())
        scratch = int(om_dot) == 3 and need_om
        scr = (torch.empty((grid, 2 << logtp, block), device=x.device, dtype=torch.float32)
               if scratch else gom)
        LAST_KERNELS["lmht_bwd"] = lmht_bwd_kernel[(grid,)](x, g, gx, om_f, lam_f, th, gn, v0_frac, glam, gom, scr, n, nw, c,
                                 inner, 1, iters, T=window, L=levels, HAS_OMEGA=has_om,
                                 PER_CH=c > 1, NEED_LAM=need_lam, NEED_OMEGA=need_om,
                                 SCALED=scaled, MAPPED=mapped, ROUND_THETA=x.is_cuda,
                                 THETA_POW2=pow2, CH_MODE=mode, OMEGA_DOT=bool(om_dot and need_om),
                                 DX_DOT=bool(int(om_dot) == 2 and has_om), OM_SCRATCH=scratch,
                                 LOGTP=logtp, CP=cp, BLOCK=block,
                                 I64=_i64(x), num_warps=warps, **_FP)
        glam = glam.sum(0) if c == 1 else glam
        gom = gom.sum(0).reshape(window, window) if need_om else None
        return (gx, glam.reshape(lam_shape) if need_lam else None, gom,
                None, None, None, None, None, None, None, None, None)


def triton_cdiv(a: int, b: int) -> int:
    return (a + b - 1) // b


def lmh_counts(x: torch.Tensor, mu_d, mu_s, lam_s, lam_d, theta: torch.Tensor,
               per_step: bool, chunk: int = 16, scaled: bool = False,
               counts_out: torch.Tensor | None = None) -> torch.Tensor:
    """Fused LM-H spike counts (see :mod:`._lmh_triton` for the equations); with ``scaled`` the
    layer output ``theta * counts`` instead, from the same kernels (no extra pass).

    Parameters are the evaluated values: 0-dim (per layer), ``[C]`` (per channel), or with a
    leading step dim ``[P]`` / ``[P, C]`` when ``per_step`` (radical LM-H). ``counts_out``: an
    optional uint8 tensor shaped like ``x`` that also receives the counts (written by the
    forward kernel).
    """
    return _lmh_apply(x, (mu_d, mu_s, lam_s, lam_d), theta, per_step, chunk, scaled, False,
                      counts_out)


def lmh_counts_raw(x: torch.Tensor, x_mu_d, x_mu_s, x_lam_s, x_lam_d, theta: torch.Tensor,
                   per_step: bool, chunk: int = 16, scaled: bool = False,
                   counts_out: torch.Tensor | None = None) -> torch.Tensor:
    """:func:`lmh_counts` from the raw learnables of :class:`lmh_deploy.neurons.LMHNeuron`:
    ``mu = sigmoid(x) - 0.5``, ``lambda = sigmoid(x) + 0.5`` applied in the kernels (same
    spikes), gradients returned for the raw tensors."""
    return _lmh_apply(x, (x_mu_d, x_mu_s, x_lam_s, x_lam_d), theta, per_step, chunk, scaled,
                      True, counts_out)


def _lmh_apply(x, values, theta, per_step, chunk, scaled, mapped, counts_out):
    vals = [torch.as_tensor(v, device=x.device, dtype=torch.float32) for v in values]
    shapes = {tuple(v.shape) for v in vals}
    if len(shapes) != 1:
        raise ValueError(f"LM-H parameters must share one shape, got {sorted(shapes)}")
    v0 = vals[0]
    p_rows = v0.shape[0] if per_step else 1
    c = v0.numel() // p_rows
    prm = torch.stack([v.reshape(p_rows, c) for v in vals])
    if scaled and theta.requires_grad:  # a learned threshold: let autograd see the product
        return LMHFunction.apply(x, prm, theta, chunk, False, mapped, counts_out) * theta
    return LMHFunction.apply(x, prm, theta, chunk, bool(scaled), mapped, counts_out)


def lmht_counts(x: torch.Tensor, lam, omega, theta: torch.Tensor, levels: int, v0_frac: float,
                gain: torch.Tensor, timesteps: int, scaled: bool = False,
                counts_out: torch.Tensor | None = None,
                theta_pow2: bool | None = None) -> torch.Tensor:
    """Fused LM-HT spike counts over ``x.shape[0] = k*T`` steps (Omega per window; ``omega=None``
    means Omega = I, any number of steps); ``scaled``: ``theta * counts`` from the same kernels.
    ``lam`` and ``omega`` are the evaluated values; ``counts_out`` as in :func:`lmh_counts`;
    ``theta_pow2``: :func:`theta_is_pow2` of theta's value if the caller knows it (None: read
    theta, one device sync)."""
    return _lmht_apply(x, lam, omega, theta, levels, v0_frac, gain, timesteps, scaled, False,
                       counts_out, theta_pow2)


def lmht_counts_raw(x: torch.Tensor, a, m, theta: torch.Tensor, levels: int, v0_frac: float,
                    gain: torch.Tensor, timesteps: int, scaled: bool = False,
                    counts_out: torch.Tensor | None = None,
                    theta_pow2: bool | None = None) -> torch.Tensor:
    """:func:`lmht_counts` from the raw learnables of :class:`lmh_deploy.neurons.LMHTNeuron`
    (``lambda = sigmoid(a) + 0.5``, ``Omega = (2 sigmoid(M)) / T``, or ``m=None`` for Omega = I),
    the maps applied in the kernels; gradients are returned for ``a`` and ``M``."""
    return _lmht_apply(x, a, m, theta, levels, v0_frac, gain, timesteps, scaled, True,
                       counts_out, theta_pow2)


def _lmht_apply(x, lam, omega, theta, levels, v0_frac, gain, timesteps, scaled, mapped,
                counts_out, theta_pow2):
    t_total = x.shape[0]
    if omega is not None:
        if t_total % timesteps:
            raise ValueError(
                f"LM-HT was trained with T={timesteps}; it runs at a multiple of T (Omega is applied "
                f"per window), not at T'={t_total}. Choose T' in {{{timesteps}, {2 * timesteps}, ...}}.")
        window = timesteps
    else:
        window = 1
    if counts_out is not None and levels > 255:
        raise ValueError(f"uint8 counts_out holds at most 255 levels, the neuron has L={levels}")
    lam = torch.as_tensor(lam, device=x.device, dtype=torch.float32)
    gain = torch.as_tensor(gain, device=x.device, dtype=torch.float32)
    if theta_pow2 is None:
        theta_pow2 = theta_is_pow2(float(theta))
    args = (x, lam, omega, theta, gain, float(v0_frac), int(levels), window)
    if scaled and theta.requires_grad:
        return LMHTFunction.apply(*args, False, mapped, counts_out, theta_pow2) * theta
    return LMHTFunction.apply(*args, bool(scaled), mapped, counts_out, theta_pow2)
