"""Loihi-2-style fixed-point arithmetic for the Lava neuron models (numpy only, no Lava import).

The fixed-point ProcessModels run the *same* step functions of :mod:`lmh_deploy.neuron_math` as
the floating-point ones; only the back-end and the parameter objects change:

* :class:`FixedOps` -- integer firing: ``spike(m, th) = [m >= th]``,
  ``levels(m, th, L) = #{k in 1..L : m >= k th}``, the cascade of DESIGN §1 (on integers
  ``k th`` is exact, so this equals ``clip(m // th, 0, L)``).
* :class:`Q12` -- a 12-bit fixed-point coefficient ``c ~ k / 4096``. ``Q12 * v`` is
  ``trunc_toward_zero(k * v / 4096)`` (Loihi's decay arithmetic), so ``p.mu_d * v_d`` in
  ``lmh_step`` becomes the chip's multiply-and-shift without rewriting the equation.
  Decays (retention ``lambda``) are stored as the 12-bit fraction *lost* per step,
  ``delta = round(4096 * (1 - lambda))`` and applied as ``k = 4096 - delta``; ``delta < 0`` encodes
  ``lambda > 1`` (LM-H/LM-HT allow lambda up to 1.5), which needs the sign bit of Loihi 2's
  programmable neurons. Couplings ``mu`` (range -0.5..0.5) are stored as ``k = round(4096 mu)``.
* Weights: 8-bit mantissas with one shared power-of-two exponent per layer. Mixed-sign weights
  lose their lowest bit (Loihi's sign-magnitude synapse), so the integer weights handed to Lava's
  bit-accurate ``Dense`` are even numbers in [-256, 254] (``w = 2 m``, ``m`` in [-128, 127]).
  ``Dense`` outputs ``(sum_j w_ij s_j) << weight_exp``; one unit of that output (and of the
  neuron's state) is worth ``q = 2**(e - weight_exp)`` where ``W ~ w * 2**e``.
* State: 24-bit signed, saturated to ``[-2**23, 2**23 - 1]`` after every step.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

DECAY_BITS = 12
DECAY_UNITY = 1 << DECAY_BITS
STATE_BITS = 24
STATE_MAX = (1 << (STATE_BITS - 1)) - 1
STATE_MIN = -(1 << (STATE_BITS - 1))


class FixedOps:
    """Integer back-end for :mod:`lmh_deploy.neuron_math` (int64 arrays, no gradients)."""

    name = "fixed"

    @staticmethod
    def spike(m, theta):
        """``s = 1 if m >= theta else 0``."""
        return (np.asarray(m) >= theta).astype(np.int64)

    @staticmethod
    def levels(m, theta, levels):
        """``s = #{k in 1..L : m >= k theta}`` (the cascade; integer thresholds are exact)."""
        m = np.asarray(m, dtype=np.int64)
        s = np.zeros(m.shape, np.int64)
        for k in range(1, int(levels) + 1):
            s += m >= np.int64(k) * np.int64(theta)
        return s

    @staticmethod
    def detach(x):
        return x

    @staticmethod
    def sigmoid(x):  # pragma: no cover - parameters arrive already evaluated
        raise TypeError("fixed-point models take evaluated parameters; sigmoid is not available")


def trunc_shift(prod, bits: int = DECAY_BITS):
    """``trunc_toward_zero(prod / 2**bits)`` on int64 (sign-magnitude shift, as Loihi does)."""
    prod = np.asarray(prod, dtype=np.int64)
    return np.sign(prod) * np.right_shift(np.abs(prod), bits)


class Q12:
    """A 12-bit coefficient ``c = k / 4096``; ``c * v = trunc_toward_zero(k * v / 4096)``.

    ``k`` is an int64 scalar or array (per neuron). Works on either side of ``*``.
    (A plain class, not a dataclass: Lava executes this file outside ``sys.modules`` when it
    searches ProcessModels, where ``@dataclass`` fails.)
    """

    __slots__ = ("k",)

    def __init__(self, k):
        self.k = k

    def __repr__(self):
        return f"Q12(k={self.k!r})"

    def __mul__(self, v):
        return trunc_shift(np.asarray(v, dtype=np.int64) * np.asarray(self.k, dtype=np.int64))

    __rmul__ = __mul__

    @property
    def value(self):
        """The real coefficient represented."""
        return np.asarray(self.k, dtype=np.float64) / DECAY_UNITY


def coupling_q12(mu) -> Q12:
    """A coupling ``mu`` -> ``Q12(k = round(4096 mu))`` (12 bits + sign: |mu| <= 0.5 fits)."""
    k = np.rint(np.asarray(mu, dtype=np.float64) * DECAY_UNITY).astype(np.int64)
    return Q12(np.clip(k, -DECAY_UNITY, DECAY_UNITY))


def decay_delta(retention):
    """Retention ``lambda`` -> 12-bit fraction lost per step ``delta = round(4096 (1 - lambda))``,
    signed, clipped to [-2048, 2047] (lambda in [0.5, 1.5] of LM-H/LM-HT fits)."""
    d = np.rint((1.0 - np.asarray(retention, dtype=np.float64)) * DECAY_UNITY).astype(np.int64)
    return np.clip(d, -(DECAY_UNITY // 2), DECAY_UNITY // 2 - 1)


def decay_q12(retention) -> Q12:
    """A decay: ``lambda * v = trunc(v * (4096 - delta) / 4096)`` with ``delta = decay_delta``."""
    return Q12(DECAY_UNITY - decay_delta(retention))


def saturate(v):
    """Clip a state to the signed 24-bit range."""
    return np.clip(v, STATE_MIN, STATE_MAX)


class QuantizedWeights(NamedTuple):
    """``W ~ w * 2**e``; Lava's Dense sends ``(w @ s) << weight_exp`` in units of ``q``."""

    w: np.ndarray        # int32 [out, in], even values in [-256, 254]
    e: int               # shared exponent of the float weights
    weight_exp: int      # Dense's left shift
    q: float             # real value of one output unit: 2**(e - weight_exp)


def quantize_weights(weight, weight_exp: int = 6) -> QuantizedWeights:
    """8-bit mantissa, shared exponent: ``m = clip(round(W / 2**(e+1)), -128, 127)``, ``w = 2 m``,
    with the smallest ``e`` such that ``max|W| / 2**(e+1) <= 127``."""
    weight = np.asarray(weight, dtype=np.float64)
    amax = float(np.max(np.abs(weight))) if weight.size else 0.0
    e = 0 if amax == 0.0 else int(np.ceil(np.log2(amax / 127.0))) - 1
    m = np.clip(np.rint(weight / 2.0 ** (e + 1)), -128, 127).astype(np.int32)
    return QuantizedWeights(w=2 * m, e=e, weight_exp=int(weight_exp), q=2.0 ** (e - weight_exp))


def to_units(value, q: float):
    """A real value (bias, threshold, initial state) -> integer state units of size ``q``."""
    return np.rint(np.asarray(value, dtype=np.float64) / q).astype(np.int64)
