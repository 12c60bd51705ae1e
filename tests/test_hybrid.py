"""Hybrid conversion QCFS ANN -> LM-H / LM-HT (DESIGN §1; LM-HT Theorem 4.4)."""
import math

import numpy as np
import pytest
import torch

from lmh_deploy.models import build_model, default_config
from lmh_deploy.neuron_math import qcfs_forward_numpy
from lmh_deploy.training.hybrid import HybridError, ann_config, convert, identity_check


def _ann(tq=8, input_shape=(1, 16, 16), arch="mlp", seed=0, thetas=None):
    torch.manual_seed(seed)
    ann = build_model(ann_config(default_config(arch=arch, input_shape=input_shape), tq=tq))
    with torch.no_grad():
        for i, name in enumerate(ann.neuron_names()):
            ann.layers[name].threshold.fill_(thetas[i] if thetas else 1.0 + 0.5 * i)
        for m in ann.modules():  # non-trivial BN statistics
            if isinstance(m, torch.nn.BatchNorm1d):
                m.running_mean.uniform_(-0.3, 0.3)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return ann.eval()


def _inputs_for_uniform_z(ann, n, lo, hi, seed=0):
    """Inputs x [n, 1, 16, 16] whose first pre-activation z = BN(W x) is uniform on [lo, hi]
    per unit (fc0 is square and invertible a.s.)."""
    syn = ann.layers["fc0"]
    w = syn.layer.weight.detach().double()
    bn = syn.bn
    a = (bn.weight / torch.sqrt(bn.running_var + bn.eps)).detach().double()
    c = (bn.bias - bn.running_mean * bn.weight / torch.sqrt(bn.running_var + bn.eps)).detach().double()
    g = torch.Generator().manual_seed(seed)
    z = lo + (hi - lo) * torch.rand(n, w.shape[0], generator=g, dtype=torch.float64)
    x = torch.linalg.solve(a[:, None] * w, (z - c).T).T
    return x.float().reshape(n, 1, 16, 16)


def _first_layer(model, x, t):
    """(first pre-activation [B, F] from the ANN's synapse, first neuron output [T, B, F])."""
    xt = x.unsqueeze(0).expand((t,) + tuple(x.shape)).reshape(t, x.shape[0], -1)
    cur = model.layers["fc0"](xt)
    return cur[0], model.layers["sn0"](cur)


@pytest.mark.parametrize("levels,t,tq", [(2, 4, 8), (4, 2, 4), (1, 3, 8), (2, 2, 8)])
def test_theorem_4_4_lmht_matches_qcfs_in_expectation(levels, t, tq):
    ann = _ann(tq=tq)
    snn = convert(ann, "lmht", timesteps=t, levels=levels).eval()
    theta = float(ann.layers["sn0"].threshold.detach())
    assert float(snn.layers["sn0"].theta) == theta and float(snn.layers["sn0"].gain) == levels
    x = _inputs_for_uniform_z(ann, 512, -0.25 * theta, 1.25 * theta)
    with torch.no_grad():
        z, out = _first_layer(snn, x, t)
        qcfs = ann.layers["sn0"](z)
    np.testing.assert_allclose(qcfs.numpy(), qcfs_forward_numpy(z.numpy(), theta, tq), atol=1e-6)
    rate = out.mean(0) / levels  # sum_t s(t) theta / (L T)
    d = (rate - qcfs).double().flatten()
    n = d.numel()
    # sample-size tolerance: |mean| <= 4.5 standard errors (false alarm ~ 7e-6)
    tol = 4.5 * float(d.std()) / math.sqrt(n)
    assert abs(float(d.mean())) <= tol, (float(d.mean()), tol)
    # the per-sample difference is bounded by the two half-steps
    assert float(d.abs().max()) <= theta / (2 * levels * t) + theta / (2 * tq) + 1e-5
    # negative control: without v(0) = theta/2 the bias -theta/(2LT) is detected at this n
    snn.layers["sn0"].v0_frac = 0.0
    with torch.no_grad():
        _, out0 = _first_layer(snn, x, t)
    d0 = (out0.mean(0) / levels - qcfs).double().flatten()
    assert abs(float(d0.mean())) > 4.5 * float(d0.std()) / math.sqrt(n)


def _if_numpy(z, theta, t):
    """Soft-reset IF neuron, v(0) = theta/2, fires at v >= theta: spikes [T, ...]."""
    v = np.full_like(z, theta / 2, dtype=np.float32)
    out = []
    for _ in range(t):
        v = v + z
        s = (v >= theta).astype(np.float32)
        v = v - theta * s
        out.append(s)
    return np.stack(out)


@pytest.mark.parametrize("kind", ["lmh", "lmh-radical"])
def test_lmh_identity_init_is_the_if_neuron_of_qcfs(kind):
    tq = 4
    ann = _ann(tq=tq)
    snn = convert(ann, kind).eval()
    assert snn.timesteps == tq
    for name, facts in identity_check(snn).items():
        assert facts["theta"] == float(ann.layers[name].threshold.detach())
        assert max(facts["mu_d"], facts["mu_s"], facts["lam_s_minus_1"], facts["lam_d_minus_1"]) == 0.0
    theta = float(ann.layers["sn0"].threshold.detach())
    x = _inputs_for_uniform_z(ann, 256, -0.25 * theta, 1.25 * theta, seed=1)
    with torch.no_grad():
        z, out = _first_layer(snn, x, tq)
        qcfs = ann.layers["sn0"](z).numpy()
    spikes = _if_numpy(z.numpy(), np.float32(theta), tq)
    np.testing.assert_array_equal(out.numpy(), theta * spikes)  # spike for spike
    # static input over T = T_q steps: the IF rate *is* QCFS (away from bin edges by rounding)
    edge = np.abs((z.numpy() * tq / theta + 0.5) - np.round(z.numpy() * tq / theta + 0.5)) < 1e-4
    mean = out.mean(0).numpy()
    np.testing.assert_allclose(mean[~edge], qcfs[~edge], atol=1e-5)
    # all four parameters are copied weights; every synapse tensor identical
    sa, ss = ann.state_dict(), snn.state_dict()
    for k in sa:
        if k.split(".")[1] not in ann.neuron_names():
            assert torch.equal(sa[k], ss[k]), k


@pytest.mark.parametrize("train_mode", [False, True])
def test_lmht_hidden_synapses_carry_L_times_the_ann_current(train_mode):
    levels = 4
    ann = _ann(tq=8, input_shape=(1, 8, 8))
    snn = convert(ann, "lmht", timesteps=2, levels=levels)
    ann.train(train_mode)
    snn.train(train_mode)
    a = torch.rand(1, 32, 256) * 2
    with torch.no_grad():
        for name in ("fc1", "fc2"):
            src = a if name == "fc1" else a[..., :256]
            want = ann.layers[name](src)
            got = snn.layers[name](levels * src)
            scale = levels if name == "fc1" else 1.0  # readout divided by L: logits equal
            # train mode: batch variance + eps (eps is not rescaled), relative O(eps / var)
            torch.testing.assert_close(got, scale * want, rtol=1e-3, atol=2e-3)


def test_refuses_non_qcfs_and_unknown_kind():
    snn = build_model(default_config())
    with pytest.raises(HybridError, match="QCFS ANN"):
        convert(snn, "lmh")
    with pytest.raises(HybridError, match="targets"):
        convert(_ann(), "lif")


def _train(model, x, y, epochs, lr, t=None, wd=5e-4, seed=0, batch=64):
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=wd)
    steps = epochs * math.ceil(len(x) / batch)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(x), generator=g)
        for i in range(0, len(x), batch):
            idx = perm[i:i + batch]
            loss = torch.nn.functional.cross_entropy(model(x[idx], t).mean(0), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()


@torch.no_grad()
def _acc(model, x, y):
    model.eval()
    return float((model(x).mean(0).argmax(-1) == y).float().mean())


@pytest.mark.slow
def test_hybrid_on_digits_finetune_does_not_reduce_accuracy(capsys):
    from lmh_deploy.data.digits import digits_arrays

    xtr, ytr, xte, yte = (torch.from_numpy(a) for a in digits_arrays())
    torch.manual_seed(0)
    tq = 4
    ann = build_model(ann_config(default_config(arch="mlp", input_shape=(1, 8, 8)), tq=tq, threshold=2.0))
    _train(ann, xtr, ytr, epochs=12, lr=0.05)
    ann_acc = _acc(ann, xte, yte)
    report = {"ann_qcfs_tq4": ann_acc}
    for kind, t, levels in (("lmh", 2, None), ("lmht", 1, 2)):
        snn = convert(ann, kind, timesteps=t, levels=levels or 2)
        before = _acc(snn, xte, yte)
        _train(snn, xtr, ytr, epochs=3, lr=2e-3, seed=1)
        after = _acc(snn, xte, yte)
        report[f"{kind}_T{t}" + (f"_L{levels}" if levels else "")] = (before, after)
        # one test sample of slack (1/360): the cascade spike rule and Omega's rounding (issue 12)
        # moved one LM-HT prediction (0.9806 -> 0.9778); a real regression moves many
        assert after >= before - 1.0 / len(yte) - 1e-9, (kind, before, after)
    with capsys.disabled():
        print("\nhybrid digits accuracy (before, after fine-tuning):", report)
    assert ann_acc > 0.9
