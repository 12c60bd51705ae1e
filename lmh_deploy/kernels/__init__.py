"""Fused GPU kernels (Triton) for the LM-H, LIF and LM-HT neurons.

One launch runs all T steps forward with the states in registers; one launch runs the backward
(recomputing the membranes instead of saving them) and reduces the parameter gradients in-kernel.
The math is :mod:`lmh_deploy.neuron_math`'s, in the same operation order, so the spikes equal the
reference torch path bit for bit in fp32. The torch modules in :mod:`lmh_deploy.neurons` call
these automatically for CUDA tensors; the reference path stays for CPU, export and tests.

Triton is optional (extra ``gpu``); on a machine without a GPU the kernels run in Triton's
interpreter (``TRITON_INTERPRET=1`` set before triton is first imported) on CPU tensors.
"""
from __future__ import annotations

import functools
import math


@functools.lru_cache(maxsize=None)
def kernels_available() -> bool:
    """True when Triton imports (the fused path is used for CUDA tensors only)."""
    try:
        import triton  # noqa: F401
    except Exception:  # pragma: no cover - depends on the environment
        return False
    return True


def theta_is_pow2(theta: float) -> bool:
    """Whether ``theta`` is an exact power of two with a normal fp32 reciprocal (then
    ``m * (1/theta)`` rounds exactly as ``m / theta``; the LM-HT kernels use it)."""
    return (math.isfinite(theta) and theta > 0 and math.frexp(theta)[0] == 0.5
            and 2.0 ** -125 <= theta <= 2.0 ** 125)


def _fused():
    try:
        from . import fused
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(f"the fused neuron kernels need Triton: pip install 'lmh-deploy[gpu]' ({e})") from e
    return fused


def lmh_counts(x, mu_d, mu_s, lam_s, lam_d, theta, per_step: bool, chunk: int = 16,
               scaled: bool = False, counts_out=None):
    """Fused LM-H / LIF spike counts ``[T, ...]`` (``theta * counts`` if ``scaled``); see
    :func:`.fused.lmh_counts`."""
    return _fused().lmh_counts(x, mu_d, mu_s, lam_s, lam_d, theta, per_step, chunk, scaled,
                               counts_out)


def lmh_counts_raw(x, x_mu_d, x_mu_s, x_lam_s, x_lam_d, theta, per_step: bool, chunk: int = 16,
                   scaled: bool = False, counts_out=None):
    """Fused LM-H from the raw learnables (the sigmoid maps applied in the kernels); see
    :func:`.fused.lmh_counts_raw`."""
    return _fused().lmh_counts_raw(x, x_mu_d, x_mu_s, x_lam_s, x_lam_d, theta, per_step, chunk,
                                   scaled, counts_out)


def lmht_counts(x, lam, omega, theta, levels: int, v0_frac: float, gain, timesteps: int,
                scaled: bool = False, counts_out=None, theta_pow2=None):
    """Fused LM-HT spike counts ``[k*T, ...]`` (``theta * counts`` if ``scaled``); see
    :func:`.fused.lmht_counts`."""
    return _fused().lmht_counts(x, lam, omega, theta, levels, v0_frac, gain, timesteps, scaled,
                                counts_out, theta_pow2)


def lmht_counts_raw(x, a, m, theta, levels: int, v0_frac: float, gain, timesteps: int,
                    scaled: bool = False, counts_out=None, theta_pow2=None):
    """Fused LM-HT from the raw learnables ``a`` and ``M`` (the maps applied in the kernels);
    see :func:`.fused.lmht_counts_raw`."""
    return _fused().lmht_counts_raw(x, a, m, theta, levels, v0_frac, gain, timesteps, scaled,
                                    counts_out, theta_pow2)


__all__ = ["kernels_available", "theta_is_pow2", "lmh_counts", "lmh_counts_raw", "lmht_counts", "lmht_counts_raw"]
