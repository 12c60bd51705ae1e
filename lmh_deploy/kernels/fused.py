"""torch.autograd.Functions over the Triton kernels, and the layout/launch logic.

``lmh_counts`` and ``lmht_counts`` take the *evaluated* neuron parameters (after the sigmoid
maps, as tensors that may carry gradient) and return spike counts ``[T, B, ...]`` in the input's
dtype; autograd takes the parameter gradients back through the maps. State math is fp32 for fp32
and bf16 inputs alike (a bf16 input gives the spikes of the fp32 reference on ``x.float()``).
"""
from __future__ import annotations

import math

import torch

from ._lmh_triton import lmh_bwd_kernel, lmh_fwd_kernel
from ._lmht_triton import lmht_bwd_kernel, lmht_fwd_kernel

_NUM_WARPS = 4
_GAMMA = 1.0  # triangle surrogate width, DESIGN §1 (TorchOps.gamma)
_LAUNCH = {"num_warps": _NUM_WARPS, "enable_fp_fusion": False}


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


def _lmh_block(k: int) -> int:
    """Elements per program: fewer per thread for longer chunks (2(K+1) states in registers)."""
    per_thread = 8 if k <= 4 else (4 if k <= 8 else 2)
    return per_thread * 32 * _NUM_WARPS


def _lmht_block(t: int) -> int:
    per_thread = 4 if t <= 10 else 2  # measured on an H200: 4 beats 2, 8, 16 at T = 4 and 10
    return per_thread * 32 * _NUM_WARPS


def _check_channels(x: torch.Tensor, c: int) -> None:
    if c > 1 and (x.dim() < 3 or x.shape[2] != c):
        raise ValueError(f"per-channel parameters of size {c} need input [T, B, {c}, ...], "
                         f"got {tuple(x.shape)}; build the neuron with channels={x.shape[2] if x.dim() > 2 else None}")


class LMHFunction(torch.autograd.Function):
    """Fused LM-H over all steps: ``(x [T,...], prm [4,P,C], theta []) -> s [T,...]``."""

    @staticmethod
    def forward(ctx, x, prm, theta, chunk):
        x, inner, _ = _layout(x)
        t_steps = x.shape[0]
        n = x[0].numel()
        p_rows, c = prm.shape[1], prm.shape[2]
        _check_channels(x, c)
        prm_f = prm.detach().to(torch.float32).contiguous()
        th = theta.detach().to(device=x.device, dtype=torch.float32).reshape(1)
        k = min(t_steps, chunk)
        n_ck = (t_steps + k - 1) // k - 1
        save = ctx.needs_input_grad[0] or ctx.needs_input_grad[1]
        ck = torch.empty((max(n_ck, 0) * 2, n) if save and n_ck > 0 else (1,),
                         device=x.device, dtype=torch.float32)
        s = torch.empty_like(x)
        block = 1024
        grid = (triton_cdiv(n, block),)
        lmh_fwd_kernel[grid](x, s, prm_f, th, ck, n, t_steps, p_rows, c, inner,
                             PER_CH=c > 1, SAVE=bool(save and n_ck > 0), K=k, BLOCK=block,
                             **_LAUNCH)
        ctx.save_for_backward(x, prm_f, th, ck)
        ctx.meta = (inner, k, n_ck)
        return s

    @staticmethod
    def backward(ctx, g):
        x, prm_f, th, ck = ctx.saved_tensors
        inner, k, _ = ctx.meta
        g = _match(g, x)
        t_steps = x.shape[0]
        n = x[0].numel()
        p_rows, c = prm_f.shape[1], prm_f.shape[2]
        need_p = ctx.needs_input_grad[1]
        gx = torch.empty_like(x)
        block = _lmh_block(k)
        mode, cp = _ch_mode(c > 1, c, inner, block)
        grid = (triton_cdiv(n, block),)
        nslot = 4 * p_rows
        # per-layer params: per-program partial sums [programs, 4*P]; per-channel: atomics [4,P,C]
        gp = torch.zeros((grid[0], nslot) if c == 1 else prm_f.shape, device=x.device,
                         dtype=torch.float32) if need_p else prm_f
        lmh_bwd_kernel[grid](x, g, gx, prm_f, th, ck, gp, n, t_steps, p_rows, c, inner, nslot,
                             GAMMA=_GAMMA, PER_CH=c > 1, RADICAL=p_rows > 1, NEED_PGRAD=need_p,
                             CH_MODE=mode, CP=cp, K=k, BLOCK=block, **_LAUNCH)
        if need_p and c == 1:
            gp = gp.sum(0).reshape(prm_f.shape)
        return gx, (gp if need_p else None), None, None


class LMHTFunction(torch.autograd.Function):
    """Fused LM-HT: ``(x [k*T,...], lam [C], omega [T,T] | None, consts [theta, v0, gain])``."""

    @staticmethod
    def forward(ctx, x, lam, omega, consts, levels, window):
        x, inner, _ = _layout(x)
        n = x[0].numel()
        c = lam.numel()
        _check_channels(x, c)
        nw = x.shape[0] // window
        lam_f = lam.detach().to(torch.float32).reshape(-1).contiguous()
        has_om = omega is not None
        om_f = (omega.detach().to(torch.float32).contiguous() if has_om
                else torch.zeros(1, device=x.device, dtype=torch.float32))
        cst = consts.detach().to(device=x.device, dtype=torch.float32).contiguous()
        s = torch.empty_like(x)
        block = 1024 if window <= 4 else 512
        grid = (triton_cdiv(n, block),)
        lmht_fwd_kernel[grid](x, s, om_f, lam_f, cst, n, nw, c, inner, T=window, L=int(levels),
                              HAS_OMEGA=has_om, PER_CH=c > 1, BLOCK=block, **_LAUNCH)
        ctx.save_for_backward(x, lam_f, om_f, cst)
        ctx.meta = (inner, int(levels), window, has_om, tuple(lam.shape))
        return s

    @staticmethod
    def backward(ctx, g):
        x, lam_f, om_f, cst = ctx.saved_tensors
        inner, levels, window, has_om, lam_shape = ctx.meta
        g = _match(g, x)
        n = x[0].numel()
        c = lam_f.numel()
        nw = x.shape[0] // window
        need_lam = ctx.needs_input_grad[1]
        need_om = has_om and ctx.needs_input_grad[2]
        gx = torch.empty_like(x)
        block = _lmht_block(window)
        mode, cp = _ch_mode(c > 1, c, inner, block)
        grid = (triton_cdiv(n, block),)
        # per-program partial sums (scalar lambda: [programs, 1]; Omega: [programs, T*T])
        glam = torch.zeros((grid[0], 1) if c == 1 else (c,), device=x.device, dtype=torch.float32)
        gom = (torch.zeros((grid[0], window * window), device=x.device, dtype=torch.float32)
               if need_om else om_f)
        lmht_bwd_kernel[grid](x, g, gx, om_f, lam_f, cst, glam, gom, n, nw, c, inner, 1,
                              T=window, L=levels, HAS_OMEGA=has_om, PER_CH=c > 1,
                              NEED_LAM=need_lam, NEED_OMEGA=need_om, CH_MODE=mode, CP=cp,
                              BLOCK=block, **_LAUNCH)
        glam = glam.sum(0) if c == 1 else glam
        gom = gom.sum(0).reshape(window, window) if need_om else None
        return gx, glam.reshape(lam_shape) if need_lam else None, gom, None, None, None


def triton_cdiv(a: int, b: int) -> int:
    return (a + b - 1) // b


def lmh_counts(x: torch.Tensor, mu_d, mu_s, lam_s, lam_d, theta: torch.Tensor,
               per_step: bool, chunk: int = 16) -> torch.Tensor:
    """Fused LM-H spike counts (see :mod:`._lmh_triton` for the equations).

    Parameters are the evaluated values: 0-dim (per layer), ``[C]`` (per channel), or with a
    leading step dim ``[P]`` / ``[P, C]`` when ``per_step`` (radical LM-H).
    """
    vals = [torch.as_tensor(v, device=x.device, dtype=torch.float32) for v in (mu_d, mu_s, lam_s, lam_d)]
    shapes = {tuple(v.shape) for v in vals}
    if len(shapes) != 1:
        raise ValueError(f"LM-H parameters must share one shape, got {sorted(shapes)}")
    v0 = vals[0]
    p_rows = v0.shape[0] if per_step else 1
    c = v0.numel() // p_rows
    prm = torch.stack([v.reshape(p_rows, c) for v in vals])
    return LMHFunction.apply(x, prm, theta, chunk)


def lmht_counts(x: torch.Tensor, lam, omega, theta: torch.Tensor, levels: int, v0_frac: float,
                gain: torch.Tensor, timesteps: int) -> torch.Tensor:
    """Fused LM-HT spike counts over ``x.shape[0] = k*T`` steps (Omega per window; ``omega=None``
    means Omega = I, any number of steps)."""
    t_total = x.shape[0]
    if omega is not None:
        if t_total % timesteps:
            raise ValueError(
                f"LM-HT was trained with T={timesteps}; it runs at a multiple of T (Omega is applied "
                f"per window), not at T'={t_total}. Choose T' in {{{timesteps}, {2 * timesteps}, ...}}.")
        window = timesteps
    else:
        window = 1
    theta32 = theta.detach().to(torch.float32)
    v0 = v0_frac * theta32
    consts = torch.stack([theta32, v0, gain.detach().to(theta32)]).to(x.device)
    lam = torch.as_tensor(lam, device=x.device, dtype=torch.float32)
    return LMHTFunction.apply(x, lam, omega, consts, int(levels), window)
