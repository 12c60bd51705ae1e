"""Neuron forward math against hand-computed traces and identities (issue 2 acceptance).

Every expected number below was worked out by hand (the arithmetic is in the comments); all
parameters and inputs are dyadic (multiples of powers of two) so float32 evaluates them exactly
and whole spike tensors, and membrane potentials, are compared for equality.

Each trace runs twice: through the torch module (raw parameters set so that the sigmoid maps give
the round values exactly) and through the numpy back-end (``neuron_math`` step functions with
``NumpyOps`` and the evaluated parameters).
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lmh_deploy import neuron_math as nm
from lmh_deploy.neurons import LIFNeuron, LMHNeuron, LMHTNeuron
from lmh_deploy.ops import NumpyOps


#: torch-module tests also run on CUDA when present (the fused GPU kernels must give the same
#: hand-computed traces)
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def raw_for(sig: float) -> float:
    """A float32 raw value x with torch.sigmoid(x) == sig exactly (searched near logit(sig)),
    so that mu = sig - 0.5 / lambda = sig + 0.5 / Omega = 2 sig / T are exact round numbers."""
    x0 = torch.tensor(math.log(sig / (1.0 - sig)), dtype=torch.float32)
    for direction in (1.0, -1.0):
        x = x0.clone()
        for _ in range(64):
            if torch.sigmoid(x).item() == sig:
                return x.item()
            x = torch.nextafter(x, torch.tensor(direction * 100.0))
    raise AssertionError(f"no float32 x with sigmoid(x) == {sig} near logit")


def mu_raw(mu: float) -> float:
    return raw_for(mu + 0.5)


def lam_raw(lam: float) -> float:
    return raw_for(lam - 0.5)


def t1(values) -> torch.Tensor:
    """[T] values -> [T, 1, 1] time-major tensor (one batch element, one neuron)."""
    return torch.tensor(values, dtype=torch.float32).reshape(-1, 1, 1)


# ------------------------------------------------------------------------------------------
# numpy back-end runners (the step functions of neuron_math with NumpyOps)
# ------------------------------------------------------------------------------------------


def run_lmh_numpy(xs, params_per_step, theta):
    """params_per_step[t] = (mu_d, mu_s, lam_s, lam_d); returns (spikes, v_S) arrays [T]."""
    f32 = np.float32
    state = nm.lmh_initial_state(np.zeros(1, f32), f32(theta))
    spikes, vs = [], []
    for x, (md, ms, ls, ld) in zip(xs, params_per_step):
        p = nm.LMHParams(mu_d=f32(md), mu_s=f32(ms), lam_s=f32(ls), lam_d=f32(ld), theta=f32(theta))
        s, state = nm.lmh_step(NumpyOps, state, np.array([x], f32), p)
        spikes.append(s[0])
        vs.append(state[1][0])
    return np.array(spikes), np.array(vs)


def run_lmht_numpy(xs, lam, theta, levels, omega=None, v0=0.0):
    """Omega-mixed (per window of len(omega)) then lmht_step; returns (I, spikes, v) arrays."""
    f32 = np.float32
    cur = [np.array([x], f32) for x in xs]
    if omega is not None:
        rows = [[f32(w) for w in row] for row in omega]
        cur = nm.omega_mix_blocked(cur, rows)
    p = nm.LMHTParams(lam=f32(lam), theta=f32(theta), levels=levels)
    v = np.array([v0], f32)
    spikes, vs = [], []
    for c in cur:
        s, v = nm.lmht_step(NumpyOps, v, c, p)
        spikes.append(s[0])
        vs.append(v[0])
    return np.array([c[0] for c in cur]), np.array(spikes), np.array(vs)


# ------------------------------------------------------------------------------------------
# LIF
# ------------------------------------------------------------------------------------------

# theta = 1, lambda = 0.5, v(0) = theta/2 = 0.5;  m[t] = 0.5 v[t-1] + I[t]
#  t1: m = 0.25  + 0.75 = 1.0      >= 1 -> s=1 (exactly at threshold), v = 0
#  t2: m = 0     + 0.5  = 0.5              s=0, v = 0.5
#  t3: m = 0.25  + 1.0  = 1.25             s=1, v = 0.25     (soft reset keeps 0.25)
#  t4: m = 0.125 + 0.25 = 0.375            s=0, v = 0.375
#  t5: m = 0.1875 + 2.5 = 2.6875           s=1, v = 1.6875   (binary: one spike, residual kept)
#  t6: m = 0.84375 - 0.5 = 0.34375         s=0, v = 0.34375
LIF_X = [0.75, 0.5, 1.0, 0.25, 2.5, -0.5]
LIF_S = [1, 0, 1, 0, 1, 0]
LIF_V = [0.0, 0.5, 0.25, 0.375, 1.6875, 0.34375]


@pytest.mark.parametrize("device", DEVICES)
def test_lif_trace_torch(device):
    s = LIFNeuron(6, decay=0.5, theta=1.0).to(device).counts(t1(LIF_X).to(device))
    assert torch.equal(s.cpu(), t1(LIF_S))


def test_lif_trace_numpy():
    s, v = run_lmh_numpy(LIF_X, [(0.0, 0.0, 0.5, 1.0)] * 6, 1.0)
    np.testing.assert_array_equal(s, LIF_S)
    np.testing.assert_array_equal(v, LIF_V)


def test_lif_output_is_theta_times_spikes():
    # theta = 2: same trace with everything doubled (v(0) = 1).
    n = LIFNeuron(6, decay=0.5, theta=2.0)
    x = t1(LIF_X) * 2
    assert torch.equal(n.counts(x), t1(LIF_S))
    assert torch.equal(n(x), 2.0 * t1(LIF_S))


# ------------------------------------------------------------------------------------------
# LM-H (vanilla)
# ------------------------------------------------------------------------------------------

# theta = 1, mu_D = 1/4, mu_S = -1/4, lambda_S = 3/4, lambda_D = 5/4; v_D(0) = 0, v_S(0) = 1/2
#   v_D[t] = v_D/4 - v_S/4 + I ;  m = 3/4 v_S + 5/4 v_D
#  t1: v_D = 0 - 1/8 + 5/8 = 1/2            m = 3/8 + 5/8 = 1          s=1 (at threshold), v_S=0
#  t2: v_D = 1/8 - 0 + 1/2 = 5/8            m = 0 + 25/32 = 25/32      s=0, v_S = 25/32
#  t3: v_D = 5/32 - 25/128 + 1 = 123/128    m = 75/128 + 615/512 = 915/512 (1.787) s=1,
#                                           v_S = 403/512 (soft reset keeps 403/512)
#  t4: v_D = 123/512 - 403/2048 - 1/2 = -935/2048
#                                           m = 1209/2048 - 4675/8192 = 161/8192  s=0
#  t5: v_D = -935/8192 - 161/32768 + 2 = 61635/32768
#                                           m = 483/32768 + 308175/131072 = 310107/131072 (2.366)
#                                           s=1, v_S = 179035/131072
#  t6: v_D = 61635/131072 - 179035/524288 + 1/4 = 198577/524288
#                                           m = 537105/524288 + 992885/2097152 = 3141305/2097152
#                                           (1.498) s=1, v_S = 1044153/2097152
LMH_P = (0.25, -0.25, 0.75, 1.25)
LMH_X = [5 / 8, 1 / 2, 1.0, -1 / 2, 2.0, 1 / 4]
LMH_S = [1, 0, 1, 0, 1, 1]
LMH_VS = [0.0, 25 / 32, 403 / 512, 161 / 8192, 179035 / 131072, 1044153 / 2097152]


def _set_lmh(n: LMHNeuron, mu_d, mu_s, lam_s, lam_d):
    with torch.no_grad():
        for name, fn, vals in (("x_mu_d", mu_raw, mu_d), ("x_mu_s", mu_raw, mu_s),
                               ("x_lam_s", lam_raw, lam_s), ("x_lam_d", lam_raw, lam_d)):
            p = getattr(n, name)
            vals = vals if isinstance(vals, (list, tuple)) else [vals] * max(1, p.numel())
            p.copy_(torch.tensor([fn(v) for v in vals], dtype=torch.float32).reshape(p.shape))


@pytest.mark.parametrize("device", DEVICES)
def test_lmh_trace_torch(device):
    n = LMHNeuron(6)
    _set_lmh(n, *LMH_P)
    mu_d, mu_s, lam_s, lam_d = (float(v.detach()) for v in n.evaluated())
    assert (mu_d, mu_s, lam_s, lam_d) == LMH_P  # the maps gave the round values exactly
    n = n.to(device)
    x = t1(LMH_X).to(device)
    assert torch.equal(n.counts(x).cpu(), t1(LMH_S))
    assert torch.equal(n(x).detach().cpu(), t1(LMH_S) * 1.0)


def test_lmh_trace_numpy():
    s, vs = run_lmh_numpy(LMH_X, [LMH_P] * 6, 1.0)
    np.testing.assert_array_equal(s, LMH_S)
    np.testing.assert_array_equal(vs, LMH_VS)


@pytest.mark.parametrize("device", DEVICES)
def test_lmh_per_channel_trace(device):
    # channel 0 carries the hand trace above, channel 1 sits at init (IF, v_S(0) = 1/2):
    # channel 1 inputs 1/2, 0, 1/4, 1/4, 1, 0 -> m = 1 (s=1), 0, 1/4, 1/2, 3/2 (s=1), 1/2
    n = LMHNeuron(6, channels=2)
    _set_lmh(n, *[[v, 0.0 if i < 2 else 1.0] for i, v in enumerate(LMH_P)])
    x1 = [0.5, 0.0, 0.25, 0.25, 1.0, 0.0]
    x = torch.tensor([LMH_X, x1], dtype=torch.float32).T.reshape(6, 1, 2)
    expect = torch.tensor([LMH_S, [1, 0, 0, 0, 1, 0]], dtype=torch.float32).T.reshape(6, 1, 2)
    n = n.to(device)
    assert torch.equal(n.counts(x.to(device)).cpu(), expect)
    # per-channel params broadcast over conv feature maps [T, B, C, H, W] too
    xc = x.reshape(6, 1, 2, 1, 1).expand(6, 1, 2, 3, 3).contiguous()
    assert torch.equal(n.counts(xc.to(device)).cpu(), expect.reshape(6, 1, 2, 1, 1).expand(6, 1, 2, 3, 3))


# ------------------------------------------------------------------------------------------
# radical LM-H (per-step parameters, Eq. 7)
# ------------------------------------------------------------------------------------------

# theta = 1; step t uses (mu_D, mu_S, lambda_S, lambda_D)[t]; v_D(0) = 0, v_S(0) = 1/2
RAD_P = [(1 / 4, -1 / 4, 3 / 4, 1.0),
         (-1 / 4, 1 / 8, 5 / 4, 3 / 4),
         (1 / 8, 0.0, 1.0, 5 / 4),
         (0.0, 1 / 4, 7 / 8, 9 / 8),
         (-1 / 8, -1 / 8, 9 / 8, 7 / 8)]
#  t1: v_D = 0 - 1/8 + 3/4 = 5/8                m = 3/8 + 5/8 = 1          s=1 (at threshold), v_S=0
#  t2: v_D = -5/32 + 0 + 1/2 = 11/32            m = 0 + 33/128             s=0, v_S = 33/128
#  t3: v_D = 11/256 + 0 + 1/2 = 139/256         m = 33/128 + 695/1024 = 959/1024   s=0
#  t4: v_D = 0 + 959/4096 + 3/2 = 7103/4096     m = 6713/8192 + 63927/32768 = 90779/32768 (2.77)
#                                               s=1, v_S = 58011/32768
#  t5: v_D = -7103/32768 - 58011/262144 - 1/4 = -180371/262144
#                                               m = 522099/262144 - 1262597/2097152
#                                                 = 2914195/2097152 (1.39)  s=1
RAD_X = [3 / 4, 1 / 2, 1 / 2, 3 / 2, -1 / 4]
RAD_S = [1, 0, 0, 1, 1]
RAD_VS = [0.0, 33 / 128, 959 / 1024, 58011 / 32768, 817043 / 2097152]


@pytest.mark.parametrize("device", DEVICES)
def test_radical_lmh_trace_torch(device):
    n = LMHNeuron(5, radical=True)
    _set_lmh(n, *[list(col) for col in zip(*RAD_P)])
    x = t1(RAD_X).to(device)
    assert torch.equal(n.to(device).counts(x).cpu(), t1(RAD_S))
    # with step 0's parameters held for all steps the trace differs (the per-step values matter)
    n0 = LMHNeuron(5)
    _set_lmh(n0, *RAD_P[0])
    assert not torch.equal(n0.to(device).counts(x).cpu(), t1(RAD_S))


def test_radical_lmh_trace_numpy():
    s, vs = run_lmh_numpy(RAD_X, RAD_P, 1.0)
    np.testing.assert_array_equal(s, RAD_S)
    np.testing.assert_array_equal(vs, RAD_VS)


# ------------------------------------------------------------------------------------------
# LM-HT, Omega = I (learn_omega=False): every level 0..L, clipping above L, exact thresholds
# ------------------------------------------------------------------------------------------

# (L, theta, lambda, inputs, expected spikes, expected v); v(0) = 0; m = lambda v + I,
# s = clip(floor(m/theta), 0, L), v = m - theta s.
LMHT_CASES = [
    # L=1, theta=2, lambda=3/4
    #  m: 2 (=theta, s=1, v=0) | 1 (s=0, v=1) | 3/4+7/2 = 17/4 (floor 2 -> clip 1, v=9/4)
    #     | 27/16+5 = 107/16 (floor 3 -> clip 1, v=75/16) | 225/64-1 = 161/64 (s=1, v=33/64)
    #     | 99/256+3/2 = 483/256 (s=0)
    (1, 2.0, 0.75, [2.0, 1.0, 3.5, 5.0, -1.0, 1.5],
     [1, 0, 1, 1, 1, 0], [0.0, 1.0, 2.25, 4.6875, 0.515625, 1.88671875]),
    # L=2, theta=1, lambda=3/4
    #  m: 1 (s=1, v=0) | 1/2 (s=0) | 3/8+9/4 = 21/8 (s=2, v=5/8) | 15/32+4 = 143/32 (floor 4 ->
    #     clip 2, v=79/32) | 237/128-3/4 = 141/128 (s=1, v=13/128) | 39/512+3/2 = 807/512 (s=1,
    #     v=295/512) | 885/2048-3 = -5259/2048 (negative: s=0, v keeps it)
    (2, 1.0, 0.75, [1.0, 0.5, 2.25, 4.0, -0.75, 1.5, -3.0],
     [1, 0, 2, 2, 1, 1, 0], [0.0, 0.5, 0.625, 2.46875, 0.1015625, 0.576171875, -5259 / 2048]),
    # L=4, theta=1/2, lambda=5/4
    #  m: 3/2 (= 3 theta exactly: s=3, v=0) | 1/4 (s=0) | 5/16+1 = 21/16 (floor 2.625: s=2,
    #     v=5/16) | 25/64+1/2 = 57/64 (s=1, v=25/64) | 125/256+3 = 893/256 (floor 6.98 -> clip 4,
    #     v=381/256) | 1905/1024-5/2 = -655/1024 (s=0) | -3275/4096+1/4 = -2251/4096 (s=0)
    (4, 0.5, 1.25, [1.5, 0.25, 1.0, 0.5, 3.0, -2.5, 0.25],
     [3, 0, 2, 1, 4, 0, 0], [0.0, 0.25, 0.3125, 0.390625, 381 / 256, -655 / 1024, -2251 / 4096]),
]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("levels,theta,lam,xs,spikes,vs", LMHT_CASES)
def test_lmht_identity_omega_trace(levels, theta, lam, xs, spikes, vs, device):
    assert set(spikes) == set(range(levels + 1))  # every level 0..L is reached
    n = LMHTNeuron(len(xs), levels=levels, learn_omega=False)
    assert float(n.theta) == theta  # direct-training default theta = 2/L
    with torch.no_grad():
        n.a.fill_(lam_raw(lam))
    assert float(n.lam().detach()) == lam
    n = n.to(device)
    assert torch.equal(n.counts(t1(xs).to(device)).cpu(), t1(spikes))
    assert torch.equal(n(t1(xs).to(device)).detach().cpu(), t1(spikes) * theta)
    _, s, v = run_lmht_numpy(xs, lam, theta, levels)
    np.testing.assert_array_equal(s, spikes)
    np.testing.assert_array_equal(v, vs)


# ------------------------------------------------------------------------------------------
# LM-HT with a non-trivial T-GIM: T = 4, run over 8 steps (two windows, Omega per window,
# membrane carried across windows)
# ------------------------------------------------------------------------------------------

OMEGA = [[3 / 8, 1 / 8, 1 / 16, 1 / 4],
         [1 / 8, 1 / 4, 3 / 8, 1 / 16],
         [1 / 4, 5 / 16, 1 / 8, 3 / 16],
         [1 / 16, 3 / 16, 1 / 4, 3 / 8]]
OMEGA_X = [4.0, 0.0, 2.0, -2.0, 1.0, 3.0, 0.0, 6.0]
# I[t] = sum_j Omega[t, j] x[window j]:
#  window 1 (x = 4, 0, 2, -2):  3/2 + 0 + 1/8 - 1/2 = 9/8 | 1/2 + 0 + 3/4 - 1/8 = 9/8
#                               1 + 0 + 1/4 - 3/8 = 7/8   | 1/4 + 0 + 1/2 - 3/4 = 0
#  window 2 (x = 1, 3, 0, 6):   3/8 + 3/8 + 0 + 3/2 = 9/4 | 1/8 + 3/4 + 0 + 3/8 = 5/4
#                               1/4 + 15/16 + 0 + 9/8 = 37/16 | 1/16 + 9/16 + 0 + 9/4 = 23/8
OMEGA_I = [9 / 8, 9 / 8, 7 / 8, 0.0, 9 / 4, 5 / 4, 37 / 16, 23 / 8]
OMEGA_CASES = [
    # L=1, theta=2, lambda=3/4:  m = 9/8 (s=0) | 27/32+9/8 = 63/32 (s=0) | 189/128+7/8 = 301/128
    #  (s=1, v=45/128) | 135/512 (s=0) | 405/2048+9/4 = 5013/2048 (s=1, v=917/2048)
    #  | 2751/8192+5/4 = 12991/8192 (s=0) | 38973/32768+37/16 = 114749/32768 (s=1, v=49213/32768)
    #  | 147639/131072+23/8 = 524471/131072 (4.0014: floor 2 -> clip 1)
    (1, 2.0, 0.75, [0, 0, 1, 0, 1, 0, 1, 1]),
    # L=2, theta=1, lambda=3/4:  m = 9/8 (s=1, v=1/8) | 3/32+9/8 = 39/32 (s=1, v=7/32)
    #  | 21/128+7/8 = 133/128 (s=1, v=5/128) | 15/512 (s=0) | 45/2048+9/4 = 4653/2048 (s=2,
    #  v=557/2048) | 1671/8192+5/4 = 11911/8192 (s=1, v=3719/8192) | 11157/32768+37/16
    #  = 86933/32768 (s=2, v=21397/32768) | 64191/131072+23/8 = 441023/131072 (3.36: floor 3 ->
    #  clip 2)
    (2, 1.0, 0.75, [1, 1, 1, 0, 2, 1, 2, 2]),
    # L=4, theta=1/2, lambda=5/4:  m = 9/8 (s=2, v=1/8) | 5/32+9/8 = 41/32 (s=2, v=9/32)
    #  | 45/128+7/8 = 157/128 (s=2, v=29/128) | 145/512 (s=0) | 725/2048+9/4 = 5333/2048 (2.60:
    #  floor 5 -> clip 4, v=1237/2048) | 6185/8192+5/4 = 16425/8192 (2.005: floor 4 -> s=4,
    #  v=41/8192) | 205/32768+37/16 = 75981/32768 (clip 4) | ... + 23/8 (clip 4)
    (4, 0.5, 1.25, [2, 2, 2, 0, 4, 4, 4, 4]),
]


def _omega_module(levels, lam):
    n = LMHTNeuron(4, levels=levels)
    with torch.no_grad():
        # Omega = 2 sigmoid(M) / T = sigmoid(M) / 2  ->  sigmoid(M) = 2 Omega
        n.M.copy_(torch.tensor([[raw_for(2 * w) for w in row] for row in OMEGA]))
        n.a.fill_(lam_raw(lam))
    assert n.omega().tolist() == OMEGA
    return n


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("levels,theta,lam,spikes", OMEGA_CASES)
def test_lmht_tgim_trace(levels, theta, lam, spikes, device):
    n = _omega_module(levels, lam).to(device)
    assert torch.equal(n.counts(t1(OMEGA_X).to(device)).cpu(), t1(spikes))
    cur, s, _ = run_lmht_numpy(OMEGA_X, lam, theta, levels, omega=OMEGA)
    np.testing.assert_array_equal(cur, OMEGA_I)
    np.testing.assert_array_equal(s, spikes)


@pytest.mark.parametrize("device", DEVICES)
def test_lmht_hybrid_init_and_gain(device):
    # hybrid: theta = 1 (QCFS threshold), v(0) = theta/2, first-layer gain L = 2, Omega = I,
    # lambda = 1.  x = 0.25, 0.75, 0, 1.25, -1  ->  I = 2x = 0.5, 1.5, 0, 2.5, -2
    #  m: 1/2 + 1/2 = 1 (s=1, v=0) | 3/2 (s=1, v=1/2) | 1/2 (s=0) | 3 (clip 2, v=1) | -1 (s=0)
    n = LMHTNeuron(5, levels=2, theta=1.0, v0_frac=0.5, learn_omega=False)
    n.gain.fill_(2.0)
    n = n.to(device)
    assert torch.equal(n.counts(t1([0.25, 0.75, 0.0, 1.25, -1.0]).to(device)).cpu(), t1([1, 1, 0, 2, 0]))
    _, s, _ = run_lmht_numpy([0.5, 1.5, 0.0, 2.5, -2.0], 1.0, 1.0, 2, v0=0.5)
    np.testing.assert_array_equal(s, [1, 1, 0, 2, 0])


# ------------------------------------------------------------------------------------------
# identities: LM-H degenerates to LIF; LM-H at init is a soft-reset IF with v_S(0) = theta/2
# ------------------------------------------------------------------------------------------


def test_lmh_with_lif_parameters_equals_lif():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(12, 8, 40, generator=g) * 0.8 + 0.4
    for lam in (0.75, 1.0, 1.25):
        lmh = LMHNeuron(12)
        _set_lmh(lmh, 0.0, 0.0, lam, 1.0)  # mu_D = mu_S = 0, lambda_D = 1, lambda_S = lam
        lif = LIFNeuron(12, decay=lam)
        s = lmh.counts(x)
        assert torch.equal(s, lif.counts(x))
        assert 0 < s.mean() < 1  # a non-trivial comparison
        # and with theta != 1
        lmh2, lif2 = LMHNeuron(12, theta=0.5), LIFNeuron(12, decay=lam, theta=0.5)
        _set_lmh(lmh2, 0.0, 0.0, lam, 1.0)
        assert torch.equal(lmh2.counts(x), lif2.counts(x))


def _if_soft_reset(x: torch.Tensor, theta: float) -> torch.Tensor:
    """Integrate-and-fire, soft reset, v(0) = theta/2: v += x; s = v >= theta; v -= theta s."""
    v = torch.full_like(x[0], theta / 2)
    out = []
    for t in range(x.shape[0]):
        v = v + x[t]
        s = (v >= theta).float()
        v = v - theta * s
        out.append(s)
    return torch.stack(out)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("theta", [1.0, 0.5, 2.0])
def test_lmh_at_init_is_soft_reset_if(theta, device):
    g = torch.Generator().manual_seed(1)
    x = (torch.randn(10, 4, 3, 5, 5, generator=g) * 0.6 + 0.3) * theta
    x[0, 0, 0, 0, 0] = theta / 2  # lands exactly on the threshold at t1 -> fires
    n = LMHNeuron(10, theta=theta).to(device)
    s = n.counts(x.to(device)).cpu()
    assert s[0, 0, 0, 0, 0] == 1
    assert torch.equal(s, _if_soft_reset(x, theta))
    assert 0 < s.mean() < 1
    # numpy back-end at init (mu = 0, lambda = 1) agrees too
    xs = x.numpy().reshape(10, -1)
    f32 = np.float32
    state = nm.lmh_initial_state(np.zeros(xs.shape[1], f32), f32(theta))
    p = nm.LMHParams(mu_d=f32(0), mu_s=f32(0), lam_s=f32(1), lam_d=f32(1), theta=f32(theta))
    sn = []
    for t in range(10):
        st, state = nm.lmh_step(NumpyOps, state, xs[t], p)
        sn.append(st)
    np.testing.assert_array_equal(np.stack(sn), s.detach().numpy().reshape(10, -1))


# ------------------------------------------------------------------------------------------
# Theorem 4.2 (LM-HT paper): M-HT (Omega = I, lambda = 1) over T steps = IF over L*T sub-steps
# ------------------------------------------------------------------------------------------


def _if_substeps(current: np.ndarray, v0: np.ndarray, theta: float, levels: int):
    """IF over L sub-steps per step with input I[t]/L: returns per-step spike sums and v(L t)."""
    v = v0.copy()
    counts, vs = [], []
    for t in range(current.shape[0]):
        c = np.zeros_like(v)
        for _ in range(levels):
            v = v + current[t] / levels
            s = (v >= theta).astype(np.float32)
            v = v - theta * s
            c = c + s
        counts.append(c)
        vs.append(v.copy())
    return np.stack(counts), np.stack(vs)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("levels", [1, 2, 4, 8])
@pytest.mark.parametrize("theta", [1.0, 0.5])
def test_theorem_4_2_i_mht_equals_if_substeps(levels, theta, device):
    rng = np.random.default_rng(levels * 10 + int(theta * 4))
    T, n = 6, 4000
    q = 2.0 ** -8  # multiples of 2^-8: every sum below is exact in float32
    current = (rng.integers(0, int(levels * theta / q), size=(T, n)) * q).astype(np.float32)
    v0 = (rng.integers(0, int(theta / q), size=n) * q).astype(np.float32)
    assert current.max() < levels * theta and v0.max() < theta
    # M-HT with the numpy back-end, per-neuron v(0)
    p = nm.LMHTParams(lam=np.float32(1.0), theta=np.float32(theta), levels=levels)
    v, spikes, vs = v0.copy(), [], []
    for t in range(T):
        s, v = nm.lmht_step(NumpyOps, v, current[t], p)
        spikes.append(s)
        vs.append(v)
    spikes, vs = np.stack(spikes), np.stack(vs)
    if_counts, if_v = _if_substeps(current, v0, theta, levels)
    np.testing.assert_array_equal(spikes, if_counts)  # s(t) = sum of IF spikes in window t
    np.testing.assert_array_equal(vs, if_v)  # v(t) = v_IF(L t)
    assert set(np.unique(spikes)) == set(range(levels + 1))
    # the torch module (Omega = I, lambda = 1) with a scalar v(0) = theta/2
    mod = LMHTNeuron(T, levels=levels, theta=theta, v0_frac=0.5, learn_omega=False).to(device)
    s_mod = mod.counts(torch.from_numpy(current).reshape(T, 1, n).to(device)).detach().cpu().numpy().reshape(T, n)
    half = np.full(n, theta / 2, np.float32)
    np.testing.assert_array_equal(s_mod, _if_substeps(current, half, theta, levels)[0])


@pytest.mark.parametrize("levels", [1, 2, 4])
def test_theorem_4_2_ii_constant_input_total(levels):
    rng = np.random.default_rng(levels)
    theta, T, n, q = 1.0, 5, 3000, 2.0 ** -8
    c = (rng.integers(0, int(levels * theta / q), size=n) * q).astype(np.float32)
    v0 = (rng.integers(0, int(theta / q), size=n) * q).astype(np.float32)
    p = nm.LMHTParams(lam=np.float32(1.0), theta=np.float32(theta), levels=levels)
    v, total = v0.copy(), np.zeros(n, np.float32)
    for _ in range(T):
        s, v = nm.lmht_step(NumpyOps, v, c, p)
        total += s
    expect = np.clip(np.floor((v0 + T * c) / theta), 0, levels * T)
    np.testing.assert_array_equal(total, expect)
