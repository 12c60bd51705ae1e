"""STDS (LM-H Eqs. S1-S2): schedule values, projection, masked gradients, resume, sparsity."""
import math

import pytest
import torch

from lmh_deploy.models import build_model, default_config
from lmh_deploy.training.sparse import STDS, soft_threshold, stds_width


def test_schedule_eq_s2():
    D, T = 0.05, 100
    assert stds_width(0, T, D) == 0.0
    assert stds_width(50, T, D) == pytest.approx(D / 2)
    assert stds_width(25, T, D) == pytest.approx(D / 2 * (math.sin(math.pi / 4 - math.pi / 2) + 1))
    assert stds_width(100, T, D) == pytest.approx(D) and stds_width(1000, T, D) == pytest.approx(D)
    vals = [stds_width(t, T, D) for t in range(T + 1)]
    assert all(b >= a for a, b in zip(vals, vals[1:]))


def test_soft_threshold_eq_s1():
    th = torch.tensor([-0.3, -0.05, -0.01, 0.0, 0.02, 0.05, 0.4])
    torch.testing.assert_close(soft_threshold(th, 0.05), torch.tensor([-0.25, 0, 0, 0, 0, 0, 0.35]))


def test_step_protocol_masks_gradient_and_reprojects():
    torch.manual_seed(0)
    lin = torch.nn.Sequential(torch.nn.Linear(4, 3, bias=False))
    with torch.no_grad():
        lin[0].weight.copy_(torch.tensor([[0.5, -0.5, 0.01, -0.02], [0.2, 0.0, -0.3, 0.04], [1, 2, 3, 4.0]]))
    theta0 = lin[0].weight.detach().clone()
    s = STDS(lin, width=0.1, total_updates=2, step=1)  # d_1 = 0.05
    assert s.d == pytest.approx(0.05)
    torch.testing.assert_close(lin[0].weight.detach(), soft_threshold(theta0, 0.05))
    opt = torch.optim.SGD(lin.parameters(), lr=0.1)
    lin(torch.ones(1, 4)).sum().backward()  # dL/dW = 1 everywhere
    s.pre_step()
    torch.testing.assert_close(lin[0].weight.grad, (theta0.abs() > 0.05).float())
    opt.step()
    s.post_step()
    theta1 = theta0 - 0.1 * (theta0.abs() > 0.05).float()
    torch.testing.assert_close(s.latent["0.weight"], theta1)
    assert s.d == pytest.approx(0.1)
    torch.testing.assert_close(lin[0].weight.detach(), soft_threshold(theta1, 0.1))
    # resume from the sparse weights recovers theta wherever the weight survived
    r = STDS.from_sparse(lin, 0.1, 2, 2)
    alive = lin[0].weight != 0
    torch.testing.assert_close(r.latent["0.weight"][alive], theta1[alive])
    torch.testing.assert_close(lin[0].weight.detach(), soft_threshold(theta1, 0.1))


def test_training_reaches_sparsity():
    torch.manual_seed(0)
    model = build_model(default_config(arch="mlp", neuron="lmh", timesteps=2))
    s = STDS(model, width=0.05, total_updates=20)
    assert s.sparsity() < 0.01
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    x, y = torch.rand(32, 1, 8, 8), torch.randint(0, 10, (32,))
    for _ in range(20):
        loss = torch.nn.functional.cross_entropy(model(x).mean(0), y)
        opt.zero_grad()
        loss.backward()
        s.pre_step()
        opt.step()
        s.post_step()
    m = s.metrics()
    assert m["stds_d"] == pytest.approx(0.05) and m["sparsity"] > 0.5, m
    assert all(torch.equal(p, soft_threshold(s.latent[n], 0.05)) for n, p in s.params)
