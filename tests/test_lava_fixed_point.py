"""Loihi-2-style fixed-point arithmetic of the Lava models (numpy only; no Lava import)."""
import numpy as np
import pytest

from lmh_deploy import neuron_math as nm
from lmh_deploy.lava import fixed_point as fx


def test_q12_truncates_toward_zero():
    c = fx.Q12(2867)                                   # ~0.7
    v = np.array([1000, -1000, 7, -7, 0])
    # 2867000/4096 = 699.95 -> 699 ; -699 (floor would give -700); 7*2867/4096 = 4.9 -> 4
    assert (c * v).tolist() == [699, -699, 4, -4, 0]
    assert (v * c).tolist() == [699, -699, 4, -4, 0]     # either side


def test_decay_encodes_fraction_lost():
    assert fx.decay_delta(0.75) == 1024                 # 4096 * (1 - 0.75)
    assert fx.decay_delta(1.0) == 0
    assert fx.decay_delta(1.25) == -1024                # growth (lambda > 1) needs the sign bit
    assert fx.decay_delta(0.5) == 2047                  # clipped to 12-bit signed
    assert fx.decay_q12(0.75).k == 3072
    assert fx.coupling_q12(-0.25).k == -1024
    assert (fx.decay_q12(0.75) * np.array([-5])).tolist() == [-3]   # -3.75 -> -3


def test_quantize_weights_8bit_shared_exponent():
    w = np.array([[1.0, -0.5, 0.2], [0.0, 0.01, -1.0]])
    qw = fx.quantize_weights(w, weight_exp=6)
    assert qw.e == -7                                   # max|W| / 2**(e+1) = 64 <= 127
    assert np.all(qw.w % 2 == 0) and qw.w.min() >= -256 and qw.w.max() <= 254
    assert np.abs(qw.w * 2.0 ** qw.e - w).max() <= 2.0 ** qw.e   # half a mantissa step (2^(e+1)/2)
    assert qw.q == 2.0 ** (-13)
    big = fx.quantize_weights(np.array([[300.0, -1.0]]))
    assert big.w.max() <= 254 and abs(big.w[0, 0] * 2.0 ** big.e - 300.0) <= 2.0 ** big.e


def test_fixed_ops_levels_and_spike():
    m = np.array([-5, 0, 99, 100, 250, 1000])
    assert fx.FixedOps.levels(m, 100, 4).tolist() == [0, 0, 0, 1, 2, 4]
    assert fx.FixedOps.spike(m, 100).tolist() == [0, 0, 0, 1, 1, 1]


def test_lmht_step_fixed_hand_trace():
    """m = trunc(0.75 v) + I; s = clip(floor(m/100), 0, 2); v = m - 100 s."""
    p = nm.LMHTParams(lam=fx.decay_q12(0.75), theta=np.int64(100), levels=2)
    v = np.array([0, 0])
    trace = []
    for cur in ([150, -30], [70, 10], [260, 0]):
        s, v = nm.lmht_step(fx.FixedOps, v, np.array(cur), p)
        trace.append((s.tolist(), v.tolist()))
    # step1: m=[150,-30] s=[1,0] v=[50,-30]; step2: m=[37+70, -22+10]=[107,-12] s=[1,0] v=[7,-12]
    # step3: m=[5+260, -9+0]=[265,-9] s=[2,0] v=[65,-9]
    assert trace == [([1, 0], [50, -30]), ([1, 0], [7, -12]), ([2, 0], [65, -9])]


def test_lmh_step_fixed_hand_trace():
    """LM-H with 12-bit couplings/decays: v_D = mu_D v_D + mu_S v_S + I, m = lam_S v_S + lam_D v_D."""
    p = nm.LMHParams(mu_d=fx.coupling_q12(0.5), mu_s=fx.coupling_q12(-0.25),
                     lam_s=fx.decay_q12(0.75), lam_d=fx.decay_q12(1.0), theta=np.int64(64))
    state = (np.array([0]), np.array([32]))
    s, (vd, vs) = nm.lmh_step(fx.FixedOps, state, np.array([50]), p)
    # v_D = 0 + trunc(-8) + 50 = 42; m = 24 + 42 = 66 >= 64 -> s=1, v_S = 2
    assert (s.tolist(), vd.tolist(), vs.tolist()) == ([1], [42], [2])


def test_saturate_24bit():
    assert fx.saturate(np.array([1 << 30, -(1 << 30), 5])).tolist() == [2**23 - 1, -2**23, 5]


@pytest.mark.parametrize("x, q", [(np.array([0.0]), 1.0), (np.array([16.0, -3.0]), 2.0 ** -10)])
def test_to_units(x, q):
    assert np.array_equal(fx.to_units(x, q) * q, x)
