"""Array back-ends for the neuron equations.

Every neuron step in :mod:`lmh_deploy.neuron_math` is written once, against a tiny interface:
Python arithmetic operators (``+ - *``) on the back-end's arrays, plus the four functions below.
A back-end supplies them for its array type:

* :class:`NumpyOps` -- the reference interpreter, NIR runtime and Lava process models.
* :class:`TorchOps` -- training and the torch runtime; firing functions carry the papers'
  surrogate gradients and ``detach`` cuts the paths DESIGN §1 says are cut.
* the ONNX graph builder in ``lmh_deploy.onnx.write`` (symbolic values).

Functions
---------
``spike(m, theta)``        ``s = 1 if m >= theta else 0`` (binary firing, LM-H / LIF)
``levels(m, theta, L)``    ``s = #{k in 1..L : m >= fl(k*theta)}`` (multi-level firing, M-HT / LM-HT):
                           a cascade of L comparisons against float32 thresholds ``k*theta``, as
                           the original LM-HT code and NIR's Threshold nodes read it (not
                           ``clip(floor(fl(m/theta)), 0, L)``, which rounds differently when
                           theta is not a power of two; DESIGN §1)
``detach(x)``              identity forward; no gradient (torch only)
``sigmoid(x)``             ``1 / (1 + exp(-x))``
"""
from __future__ import annotations

import numpy as np


class NumpyOps:
    """numpy float32 back-end (no gradients)."""

    name = "numpy"

    @staticmethod
    def spike(m, theta):
        return (m >= theta).astype(np.float32)

    @staticmethod
    def levels(m, theta, levels):
        m = np.asarray(m, dtype=np.float32)
        th = np.asarray(theta, dtype=np.float32)
        s = np.zeros(np.broadcast(m, th).shape, np.float32)
        for k in range(1, int(levels) + 1):
            s += m >= level_threshold(th, k)
        return s

    @staticmethod
    def detach(x):
        return x

    @staticmethod
    def sigmoid(x):
        x = np.asarray(x, dtype=np.float32)
        return (1.0 / (1.0 + np.exp(-x))).astype(np.float32)


def _torch():
    import torch

    return torch


class _TriangleSpike:
    """Heaviside forward, triangle surrogate backward: ds/dm = max(0, g - |m - theta|) / g^2."""

    _fn = None

    @classmethod
    def fn(cls):
        if cls._fn is None:
            torch = _torch()

            class TriangleSpike(torch.autograd.Function):
                @staticmethod
                def forward(ctx, m, theta, gamma):
                    ctx.save_for_backward(m)
                    ctx.theta = theta
                    ctx.gamma = gamma
                    return (m >= theta).to(m.dtype)

                @staticmethod
                def backward(ctx, grad):
                    (m,) = ctx.saved_tensors
                    g = ctx.gamma
                    sg = torch.clamp(g - (m - ctx.theta).abs(), min=0.0) / (g * g)
                    return grad * sg, None, None

            cls._fn = TriangleSpike
        return cls._fn


def level_threshold(theta, k: int):
    """``fl(k * theta)``: the float32 threshold of level k (numpy scalar or array, or torch tensor
    of ``theta``'s dtype). A level fires at ``m >= level_threshold(theta, k)``."""
    if isinstance(theta, (float, int, np.floating, np.ndarray)):
        return np.float32(k) * np.asarray(theta, dtype=np.float32)
    return theta * float(k)


def cascade_levels(m, theta, levels: int):
    """``#{k in 1..L : m >= fl(k theta)}`` on torch tensors, in ``m``'s dtype (any ``theta``
    accepted by :func:`level_threshold`)."""
    s = None
    for k in range(1, int(levels) + 1):
        thr = level_threshold(theta, k)
        if isinstance(thr, np.ndarray):
            thr = float(thr) if thr.ndim == 0 else _torch().as_tensor(thr, device=m.device)
        fired = (m >= thr).to(m.dtype)
        s = fired if s is None else s + fired
    return s


class _MultiLevelSpike:
    """Cascade forward ``s = #{k in 1..L : m >= fl(k theta)}``; rectangular window backward:
    d(theta*s)/dm = 1 for 0.5*theta <= m <= (L + 0.5)*theta, else 0 (so ds/dm = 1/theta there)."""

    _fn = None

    @classmethod
    def fn(cls):
        if cls._fn is None:
            torch = _torch()

            class MultiLevelSpike(torch.autograd.Function):
                @staticmethod
                def forward(ctx, m, theta, levels):
                    ctx.save_for_backward(m)
                    ctx.theta = theta
                    ctx.levels = levels
                    return cascade_levels(m, theta, int(levels))

                @staticmethod
                def backward(ctx, grad):
                    (m,) = ctx.saved_tensors
                    th = ctx.theta
                    window = (m >= 0.5 * th) & (m <= (ctx.levels + 0.5) * th)
                    return grad * window.to(grad.dtype) / th, None, None

            cls._fn = MultiLevelSpike
        return cls._fn


class TorchOps:
    """torch back-end with the papers' surrogate gradients.

    ``theta`` must be a Python float or a tensor without gradient (it is a fixed buffer).
    """

    name = "torch"
    gamma = 1.0  # triangle surrogate width (DESIGN §1: gamma = 1)

    @staticmethod
    def spike(m, theta):
        return _TriangleSpike.fn().apply(m, theta, TorchOps.gamma)

    @staticmethod
    def levels(m, theta, levels):
        return _MultiLevelSpike.fn().apply(m, theta, float(levels))

    @staticmethod
    def detach(x):
        return x.detach()

    @staticmethod
    def sigmoid(x):
        return _torch().sigmoid(x)


def triangle_surrogate(m, theta, gamma=1.0):
    """The LM-H surrogate as a plain function (for tests): max(0, g - |m - theta|) / g^2."""
    return np.maximum(0.0, gamma - np.abs(np.asarray(m) - theta)) / (gamma * gamma)


def rect_surrogate(m, theta, levels):
    """The LM-HT surrogate of d(theta*s)/dm as a plain function (for tests)."""
    m = np.asarray(m)
    return ((m >= 0.5 * theta) & (m <= (levels + 0.5) * theta)).astype(np.float64)
