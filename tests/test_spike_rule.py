"""One spike-count rule everywhere (DESIGN §1): ``s = #{k in 1..L : m >= fl(k theta)}``, and the
T-GIM map ``Omega = (2 sigmoid(M)) / T`` rounded in that order in float32.

The two rounding edges (hybrid LM-HT, L = 4, theta not a power of two) where the cascade and
``clip(floor(fl(m / theta)), 0, L)`` disagree:

* theta = fl(1.1), m = fl(3.3):       fl(3 theta) > m, so the cascade counts 2; floor gives 3.
* theta = fl(0.9), m = fl(3 theta):   m >= fl(3 theta), cascade 3; fl(m / theta) < 3, floor 2.

Each case is one neuron layer with hand-set theta, lambda = 1, v(0) = 0 and Omega = I, so the
first step's membrane is exactly the current. Beside the edge neuron the layer has three control
neurons (m = 0, fl(2 theta), fl(5 theta): counts 0, 2 and L = 4) on which both rules agree.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from lmh_deploy import neuron_math as nm
from lmh_deploy.ops import NumpyOps, TorchOps

F32 = np.float32
L = 4


def _case(name):
    if name == "1.1":
        th = F32(1.1)
        edge = F32(3.3)
        counts = [2, 0, 2, 4]
    else:
        th = F32(0.9)
        edge = F32(3) * th
        counts = [3, 0, 2, 4]
    m = np.array([edge, 0.0, F32(2) * th, F32(5) * th], F32)
    return th, m, counts


CASES = ["1.1", "0.9"]


@pytest.mark.parametrize("case", CASES)
def test_edges_are_real(case):
    """The inputs do sit where the two rules disagree (else every test below could not fail)."""
    th, m, counts = _case(case)
    floor = np.clip(np.floor(m / th), 0, L)
    assert floor[0] != counts[0] and floor[1:].tolist() == counts[1:]
    cascade = sum((m >= F32(k) * th).astype(int) for k in range(1, L + 1))
    assert cascade.tolist() == counts


@pytest.mark.parametrize("case", CASES)
def test_numpy_and_torch_ops(case):
    th, m, counts = _case(case)
    assert NumpyOps.levels(m, th, L).tolist() == counts
    assert NumpyOps.levels(m, float(th), L).tolist() == counts  # a Python float theta
    mt = torch.from_numpy(m).requires_grad_()
    s = TorchOps.levels(mt, torch.tensor(th), L)
    assert s.tolist() == counts
    assert TorchOps.levels(mt, float(th), L).tolist() == counts
    # rectangular window backward: ds/dm = 1/theta on 0.5 theta <= m <= (L + 0.5) theta
    (g,) = torch.autograd.grad(s.sum(), mt)
    win = (m >= F32(0.5) * th) & (m <= F32(L + 0.5) * th)
    np.testing.assert_array_equal(g.numpy(), np.where(win, F32(1) / th, 0).astype(F32))


def _neuron(case, T=4):
    from lmh_deploy.neurons import LMHTNeuron

    th, m, counts = _case(case)
    mod = LMHTNeuron(T, levels=L, theta=float(th), learn_omega=False)
    assert float(mod.theta) == th and float(mod.lam().detach()) == 1.0
    x = torch.zeros(T, 1, 4)
    x[0, 0] = torch.from_numpy(m)
    return mod, x, counts


@pytest.mark.parametrize("case", CASES)
def test_torch_module_in_training(case):
    mod, x, counts = _neuron(case)
    mod.train()
    mod.fused = False
    out = mod(x.clone().requires_grad_())
    assert torch.equal(out[0, 0], torch.tensor(counts, dtype=torch.float32) * mod.theta)
    assert mod.counts(x)[0, 0].tolist() == counts


@pytest.mark.parametrize("case", CASES)
def test_triton_kernels(case):
    pytest.importorskip("triton")
    from lmh_deploy.kernels import lmht_counts

    mod, x, counts = _neuron(case)
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    mod, x = mod.to(dev), x.to(dev)
    assert mod.fused_counts(x)[0, 0].tolist() == counts
    assert torch.equal(mod.fused_counts(x, scaled=True)[0, 0].cpu(),
                       torch.tensor(counts, dtype=torch.float32) * mod.theta.cpu())
    s = lmht_counts(x, mod.lam(), None, mod.theta, L, 0.0, mod.gain, mod.timesteps)
    assert s[0, 0].tolist() == counts


def _graph(case, timesteps=2):
    from lmh_deploy.graph.schema import DeployGraph, DeployOp

    th, m, _ = _case(case)
    ops = [DeployOp("fc0", "synapse", ("input",), {"weight": np.diag(m).astype(F32),
                                                   "bias": np.zeros(4, F32)}, {"op": "linear"}),
           DeployOp("sn0", "neuron", ("fc0",), {"lam": np.ones((1, 1), F32)},
                    {"timesteps": timesteps, "model": "lmht", "source_kind": "lmht",
                     "levels": L, "theta": float(th), "v0": 0.0}),
           DeployOp("fc1", "synapse", ("sn0",), {"weight": np.ones((2, 4), F32),
                                                  "bias": np.zeros(2, F32)}, {"op": "linear"})]
    # input x = 1 on the grid: the first step's current is exactly diag(m) @ 1 = m
    return DeployGraph(ops=ops, output="fc1", timesteps=timesteps, input_shape=(4,), num_classes=2,
                       input_quantum=2.0 ** -8, input_bound=8.0)


X1 = np.ones((1, 4), F32)


@pytest.mark.parametrize("case", CASES)
def test_reference_torch_runtime_and_onnx(case):
    from lmh_deploy.graph.interpret import run_reference, run_torch

    g = _graph(case)
    counts = _case(case)[2]
    assert run_reference(g, X1).spikes["sn0"][0, 0].tolist() == counts
    assert run_torch(g, X1).spikes["sn0"][0, 0].tolist() == counts
    pytest.importorskip("onnxruntime")
    import onnxruntime as ort

    from lmh_deploy.onnx.write import export_onnx

    mp = export_onnx(g, with_spikes=True)
    sess = ort.InferenceSession(mp.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    out = dict(zip(names, sess.run(None, {"input": X1})))
    assert out["spikes_sn0"][0, 0].tolist() == counts


@pytest.mark.parametrize("case", CASES)
def test_nir_runtimes(case, tmp_path):
    pytest.importorskip("nir")
    from lmh_deploy.nir.write import write_nir
    from lmh_deploy.nir.run_numpy import run_nir
    from lmh_deploy.nir.run_torch import run_nir_torch

    counts = _case(case)[2]
    for form in ("temporal", "unrolled"):
        path = write_nir(_graph(case), tmp_path / f"{form}.nir", form=form)
        assert run_nir(path, X1).spikes["sn0"][0, 0].tolist() == counts, form
        assert run_nir(path, X1, fuse=False).spikes["sn0"][0, 0].tolist() == counts, form
        assert run_nir_torch(path, X1).spikes["sn0"][0, 0].tolist() == counts, form


@pytest.mark.lava
@pytest.mark.timeout(120, method="signal")
@pytest.mark.parametrize("case", CASES)
def test_lava_float(case):
    pytest.importorskip("lava")
    from lmh_deploy.lava.run import run_lava_graph

    run = run_lava_graph(_graph(case), X1)
    assert run.spikes["sn0"][0, 0].tolist() == _case(case)[2]


def test_fixed_point_levels_cascade():
    """Integers: the cascade ``m >= k th`` (exact products) on both sides of every level."""
    from lmh_deploy.lava.fixed_point import FixedOps

    th = 7
    m = np.array([-1, 0, 6, 7, 13, 14, 20, 21, 27, 28, 29, 1000])
    assert FixedOps.levels(m, th, L).tolist() == [0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 4]


# ---------------------------------------------------------------------------------------------
# Omega = (2 sigmoid(M)) / T in float32, in that order
# ---------------------------------------------------------------------------------------------

def _omega_edges(T, sigmoid, xp):
    """M values (a T x T block, those nearest 0) where ``(2 sigma) / T`` and ``sigma * (2/T)``
    round differently."""
    grid = xp.linspace(-4, 4, 4001, dtype=xp.float32)
    sg = sigmoid(grid)
    differ = grid[(sg * 2.0) / T != sg * (2.0 / T)]
    assert len(differ) >= T * T  # the two formulas do differ here, so the checks can fail
    return differ[xp.argsort(abs(differ))][:T * T].reshape(T, T)


@pytest.mark.parametrize("T", [3, 5, 6, 7])
def test_omega_rounding_is_two_sigma_over_t(T):
    from lmh_deploy.neurons import LMHTNeuron

    m = _omega_edges(T, NumpyOps.sigmoid, np)
    sg = NumpyOps.sigmoid(m)
    got = nm.omega_map(NumpyOps, m, T)
    assert got.dtype == F32
    np.testing.assert_array_equal(got, (sg * F32(2)) / F32(T))  # IEEE float32, that order
    assert np.any(got != sg * (F32(2) / F32(T)))  # (sigmoid may round differently per shape)

    mt = _omega_edges(T, torch.sigmoid, torch)
    st = torch.sigmoid(mt)
    mod = LMHTNeuron(T, levels=2)
    with torch.no_grad():
        mod.M.copy_(mt)
    for got in (nm.omega_map(TorchOps, mt, T), mod.omega().detach()):
        assert torch.equal(got, (st * 2.0) / T)
        assert bool((got != st * (2.0 / T)).any())


@pytest.mark.parametrize("T", [3, 5, 6, 7])
def test_omega_mapped_kernels_match_module(T):
    """The Triton kernels apply the map themselves (MAPPED): spikes and Omega equal the module's
    at T not a power of two, with M set where the two roundings differ."""
    pytest.importorskip("triton")
    from lmh_deploy.neurons import LMHTNeuron

    mod = LMHTNeuron(T, levels=2)
    with torch.no_grad():
        mod.M.copy_(_omega_edges(T, torch.sigmoid, torch))
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    mod = mod.to(dev)
    gen = torch.Generator().manual_seed(T)
    x = (torch.randint(-40, 120, (T, 3, 37), generator=gen).float() / 16).to(dev)
    mod.fused = False
    ref = mod.counts(x)
    assert torch.equal(mod.fused_counts(x), ref)
    assert ref.sum() > 0
