"""Backward rules of DESIGN §1 against hand-computed values (issue 2 acceptance).

* LM-H / LIF: triangle surrogate ``ds/dm = max(0, g - |m - theta|) / g^2`` (g = 1), reset detached.
* LM-HT: rectangular window ``d(theta s)/dm = 1`` for ``0.5 theta <= m <= (L + 0.5) theta``;
  the path ``m[t] -> v[t-1]`` and the reset are detached; lambda gets
  ``sum_t dL/dm[t] v[t-1]`` (Eq. 14) and Omega gets ``dL/dm[i] x[j]`` (Eq. 15).
* radical LM-H: the parameters of step t only receive gradient from steps >= t.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from lmh_deploy.neurons import LMHNeuron, LMHTNeuron
from lmh_deploy.ops import TorchOps, rect_surrogate, triangle_surrogate


#: module-level gradient tests also run on CUDA when present (the fused GPU kernels' backward)
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def col(values, requires_grad=False, device="cpu") -> torch.Tensor:
    """[T] -> [T, 1, 1] float32 leaf tensor (one batch element, one neuron)."""
    t = torch.tensor(values, dtype=torch.float32, device=device).reshape(-1, 1, 1)
    return t.requires_grad_(requires_grad)


# ------------------------------------------------------------------------------------------
# surrogate formulas
# ------------------------------------------------------------------------------------------

# d = m - theta:          -2  -1  -0.5  0   0.25  0.75  1   1.5
TRI_D = np.array([-2.0, -1.0, -0.5, 0.0, 0.25, 0.75, 1.0, 1.5])
TRI_G1 = [0.0, 0.0, 0.5, 1.0, 0.75, 0.25, 0.0, 0.0]  # max(0, 1 - |d|)
#  g = 1/2: max(0, 1/2 - |d|) / (1/4):   d = 0 -> 2, d = 0.25 -> 1, others 0
TRI_G05 = [0.0, 0.0, 0.0, 2.0, 1.0, 0.0, 0.0, 0.0]


@pytest.mark.parametrize("theta", [1.0, 2.0, 0.5])
def test_triangle_surrogate_formula(theta):
    np.testing.assert_array_equal(triangle_surrogate(theta + TRI_D, theta), TRI_G1)
    np.testing.assert_array_equal(triangle_surrogate(theta + TRI_D, theta, gamma=0.5), TRI_G05)


def test_rect_surrogate_formula():
    # theta = 1, L = 2: window [0.5, 2.5], both edges included
    m = [-1.0, 0.49, 0.5, 1.0, 2.0, 2.5, 2.51, 3.0]
    np.testing.assert_array_equal(rect_surrogate(m, 1.0, 2), [0, 0, 1, 1, 1, 1, 0, 0])
    # theta = 1/2, L = 4: window [0.25, 2.25]
    m = [0.0, 0.25, 0.5, 2.0, 2.25, 2.5]
    np.testing.assert_array_equal(rect_surrogate(m, 0.5, 4), [0, 1, 1, 1, 1, 0])


@pytest.mark.parametrize("theta", [1.0, 2.0, 0.5])
def test_torch_spike_forward_and_triangle_gradient(theta):
    m = torch.tensor(theta + TRI_D, dtype=torch.float32, requires_grad=True)
    s = TorchOps.spike(m, theta)
    # forward: Heaviside with >= (m exactly at theta fires)
    assert s.tolist() == [0, 0, 0, 1, 1, 1, 1, 1]
    s.sum().backward()
    assert m.grad.tolist() == TRI_G1


@pytest.mark.parametrize("theta,levels", [(1.0, 2), (0.5, 4), (2.0, 1)])
def test_torch_levels_forward_and_window_gradient(theta, levels):
    # points (in units of theta): -1, 0.25, 0.5 (edge), 1 (theta), L, L + 0.5 (edge), L + 0.75
    u = [-1.0, 0.25, 0.5, 1.0, float(levels), levels + 0.5, levels + 0.75]
    m = torch.tensor([theta * v for v in u], dtype=torch.float32, requires_grad=True)
    s = TorchOps.levels(m, theta, levels)
    assert s.tolist() == [0, 0, 0, 1, levels, levels, levels]
    (theta * s).sum().backward()  # d(theta s)/dm = 1 inside [0.5 theta, (L + 0.5) theta]
    assert m.grad.tolist() == [0, 0, 1, 1, 1, 1, 0]


# ------------------------------------------------------------------------------------------
# LM-H at initialization: d o[2] / d x[1] = theta tri(m_S[2] - theta)   (reset detached)
# ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("theta,x,expect", [
    # theta = 1: v_S(0) = 1/2; m_S[1] = 1/2 + 3/4 = 5/4 -> s=1, v_S = 1/4;
    #   m_S[2] = 1/4 + 1/2 = 3/4 -> tri(3/4 - 1) = 3/4; d o2/d x1 = 1 * 3/4 * dv_S1/dx1 (= 1)
    (1.0, [0.75, 0.5], 0.75),
    # theta = 2: v_S(0) = 1; m_S[1] = 1 + 3/2 = 5/2 -> s=1, v_S = 1/2;
    #   m_S[2] = 1/2 + 3/4 = 5/4 -> tri(5/4 - 2) = 1/4; d o2/d x1 = 2 * 1/4 = 1/2
    (2.0, [1.5, 0.75], 0.5),
])
@pytest.mark.parametrize("device", DEVICES)
def test_lmh_init_gradient_through_detached_reset(theta, x, expect, device):
    n = LMHNeuron(2, theta=theta).to(device)
    xt = col(x, requires_grad=True, device=device)
    o = n(xt)
    o[1].sum().backward()
    # had the reset not been detached: dv_S1/dx1 = 1 - theta tri(m_S[1] - theta) would scale it
    assert xt.grad.flatten().tolist() == [expect, expect]  # d o2/d x1 and d o2/d x2 (same m_S[2])


def test_lmh_init_gradient_batch_matches_formula():
    # random inputs: d o[2]/d x[1] = theta tri(m_S[2] - theta), with m_S[2] = v_S[1] + x[2]
    g = torch.Generator().manual_seed(3)
    theta = 1.0
    x = (torch.rand(2, 64, generator=g) * 1.5).requires_grad_(True)
    o = LMHNeuron(2, theta=theta)(x)
    o[1].sum().backward()
    with torch.no_grad():
        m1 = theta / 2 + x[0]
        v1 = m1 - theta * (m1 >= theta).float()
        m2 = v1 + x[1]
    expect = theta * triangle_surrogate(m2.numpy(), theta).astype(np.float32)
    np.testing.assert_allclose(x.grad[0].numpy(), expect, rtol=0, atol=1e-6)
    assert (x.grad[0] > 0).any()


# ------------------------------------------------------------------------------------------
# LM-HT: detached m[t] -> v[t-1]; Eq. 14 (lambda) and Eq. 15 (Omega)
# ------------------------------------------------------------------------------------------


def _lmht_jacobian(n: LMHTNeuron, x: torch.Tensor) -> torch.Tensor:
    """J[t, j] = d o[t] / d x[j] for a single neuron ([T, 1, 1] input)."""
    rows = []
    for t in range(x.shape[0]):
        xx = x.detach().clone().requires_grad_(True)
        n(xx)[t].sum().backward()
        rows.append(xx.grad.flatten().clone())
    return torch.stack(rows)


@pytest.mark.parametrize("device", DEVICES)
def test_lmht_identity_omega_no_gradient_to_previous_steps(device):
    # Omega = I, lambda = 1, theta = 1, L = 2, v(0) = 0; x = 1.75, 0.5, 1.25, 0.75:
    #  m = 1.75 (s=1, v=.75) | 1.25 (s=1, v=.25) | 1.5 (s=1, v=.5) | 1.25: every m in [0.5, 2.5]
    # m[t] depends on x[t-1] through v[t-1], but that path is detached: J = identity.
    n = LMHTNeuron(4, levels=2, learn_omega=False).to(device)
    jac = _lmht_jacobian(n, col([1.75, 0.5, 1.25, 0.75], device=device))
    assert torch.equal(jac.cpu(), torch.eye(4))


@pytest.mark.parametrize("device", DEVICES)
def test_lmht_omega_jacobian_is_omega_times_window(device):
    # learned Omega (random M), lambda = 1, L = 2, theta = 1: d o[t]/d x[j] = Omega[t, j] rect(m[t]).
    torch.manual_seed(0)
    n = LMHTNeuron(4, levels=2)
    with torch.no_grad():
        n.M.copy_(torch.randn(4, 4))
    x = col([1.0, 1.5, -3.0, 8.0])
    n = n.to(device)
    jac = _lmht_jacobian(n, x.to(device)).cpu()
    om = n.omega().detach().cpu()  # as evaluated on the device (sigmoid may differ by an ulp)
    with torch.no_grad():
        cur = om @ x.flatten()
        v, window = 0.0, []
        for t in range(4):
            m = v + cur[t]
            s = min(max(float(torch.floor(m)), 0.0), 2.0)
            v = m - s
            window.append(rect_surrogate(float(m), 1.0, 2))
    expect = om * torch.tensor(window, dtype=torch.float32)[:, None]
    torch.testing.assert_close(jac, expect, rtol=0, atol=0)
    assert 0 < sum(window) < 4  # some steps inside the window, some outside


@pytest.mark.parametrize("lam_sig,x,expect_dlam", [
    # lambda = 1 (a = 0): x = 7/4, 1/2, 1/8 ; v(0) = 0, L = 2, theta = 1, loss = 1 o1 + 2 o2 + 3 o3
    #   m1 = 7/4 (s=1, v=3/4, in window) | m2 = 3/4 + 1/2 = 5/4 (s=1, v=1/4, in window)
    #   | m3 = 1/4 + 1/8 = 3/8 (outside the window: dL/dm3 = 0)
    #   dL/dlambda = 1*v(0) + 2*v(1) + 0 = 3/2
    (0.5, [1.75, 0.5, 0.125], 1.5),
    # lambda = 3/4: x = 7/4, 1/2, 5/4:  m1 = 7/4 (v=3/4) | m2 = 9/16 + 1/2 = 17/16 (v=1/16)
    #   | m3 = 3/64 + 5/4 = 83/64 (in window)   dL/dlambda = 0 + 2 * 3/4 + 3 * 1/16 = 27/16
    (0.25, [1.75, 0.5, 1.25], 27 / 16),
])
@pytest.mark.parametrize("device", DEVICES)
def test_lmht_lambda_gradient_eq14(lam_sig, x, expect_dlam, device):
    n = LMHTNeuron(3, levels=2, learn_omega=False)
    with torch.no_grad():
        n.a.fill_(float(torch.logit(torch.tensor(lam_sig))))
    sig = float(torch.sigmoid(n.a.detach()))
    n = n.to(device)
    c = col([1.0, 2.0, 3.0], device=device)
    (n(col(x, device=device)) * c).sum().backward()
    # lambda = sigmoid(a) + 1/2  ->  dL/da = dL/dlambda * sigmoid'(a)
    assert float(n.a.grad) == pytest.approx(expect_dlam * sig * (1 - sig), rel=1e-6)
    assert float(n.a.grad) != 0


@pytest.mark.parametrize("device", DEVICES)
def test_lmht_omega_gradient_eq15(device):
    # T = 2, L = 2, theta = 1, lambda = 1, M = 0 -> Omega = 1/2 everywhere; x = 3/2, 1
    #   I = (3/4 + 1/2, 3/4 + 1/2) = (5/4, 5/4); m1 = 5/4 (s=1, v=1/4); m2 = 1/4 + 5/4 = 3/2 (s=1)
    #   loss = 1 o1 + 3 o2  ->  dL/dm = (1, 3) (both in the window)
    #   Eq. 15: dL/domega[i, j] = dL/dm[i] x[j] = [[3/2, 1], [9/2, 3]]
    #   Omega = 2 sigmoid(M) / T -> dOmega/dM = (2/T) sigmoid'(0) = 1/4: dL/dM = [[3/8, 1/4], [9/8, 3/4]]
    #   Eq. 14: dL/dlambda = 1 v(0) + 3 v(1) = 3/4  ->  dL/da = 3/4 * 1/4 = 3/16
    #   dL/dx[j] = sum_i dL/dm[i] Omega[i, j] = (1 + 3)/2 = 2 (no path through v)
    n = LMHTNeuron(2, levels=2).to(device)
    x = col([1.5, 1.0], requires_grad=True, device=device)
    (n(x) * col([1.0, 3.0], device=device)).sum().backward()
    assert n.M.grad.tolist() == [[0.375, 0.25], [1.125, 0.75]]
    assert float(n.a.grad) == 3 / 16
    assert x.grad.flatten().tolist() == [2.0, 2.0]


# ------------------------------------------------------------------------------------------
# radical LM-H: per-step parameter gradients
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
def test_radical_lmh_per_step_gradients(device):
    # at init (mu = 0, lambda = 1), theta = 1, v_S(0) = 1/2, x = 5/8, 3/8, 3/4, 1/4:
    #   m_S = 9/8 (s=1, v_S=1/8) | 1/2 (v_S=1/2) | 5/4 (s=1, v_S=1/4) | 1/2
    #   every m_S in (0, 2): tri > 0 at every step; v_S[t-1] = 1/2, 1/8, 1/2, 1/4 and
    #   v_D[t-1] = 0, 5/8, 3/8, 3/4 are non-zero (except v_D(0) = 0).
    x = col([0.625, 0.375, 0.75, 0.25], device=device)
    names = ("x_mu_d", "x_mu_s", "x_lam_s", "x_lam_d")
    for t in range(4):
        n = LMHNeuron(4, radical=True).to(device)
        n(x)[t].sum().backward()
        for name in names:
            g = getattr(n, name).grad
            assert torch.all(g[t + 1:] == 0), (name, t, g)  # later steps' parameters untouched
            if name == "x_mu_d" and t == 0:
                assert g[0] == 0  # dm/dmu_D[0] = lambda_D v_D(0) = 0
            else:
                assert g[t] != 0, (name, t, g)
    # hand values for the third step (1-based t = 3, parameter index 2): m_S[3] = 5/4,
    # tri(5/4 - 1) = 3/4, sigmoid'(0) = 1/4, v_S[2] = 1/2, v_D[2] = 3/8, v_D[3] = 3/4:
    #   d o[3]/d x_lam_s[2] = 3/4 * v_S[2] * 1/4  = 3/4 * 1/2 * 1/4 = 3/32
    #   d o[3]/d x_lam_d[2] = 3/4 * v_D[3] * 1/4  = 3/4 * 3/4 * 1/4 = 9/64
    #   d o[3]/d x_mu_s[2]  = 3/4 * lambda_D v_S[2] * 1/4 = 3/32
    #   d o[3]/d x_mu_d[2]  = 3/4 * lambda_D v_D[2] * 1/4 = 3/4 * 3/8 * 1/4 = 9/128
    n = LMHNeuron(4, radical=True).to(device)
    n(x)[2].sum().backward()
    assert float(n.x_lam_s.grad[2]) == 3 / 32
    assert float(n.x_lam_d.grad[2]) == 9 / 64
    assert float(n.x_mu_s.grad[2]) == 3 / 32
    assert float(n.x_mu_d.grad[2]) == 9 / 128
