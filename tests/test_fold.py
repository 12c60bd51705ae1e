"""The fold: BN / theta / pool factors folded correctly, the exact-sum grid holds, errors typed."""
import numpy as np
import pytest
import torch

import lmh_deploy.graph.fold as fold_mod
from lmh_deploy.errors import TimestepsError, UnsupportedModelError
from lmh_deploy.graph.fold import fold
from lmh_deploy.graph.interpret import run_reference, run_torch
from lmh_deploy.models import build_model, default_config


def _randomize(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    for mod in model.modules():
        if isinstance(mod, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
            n = mod.num_features
            mod.running_mean.copy_(torch.rand(n, generator=g) * 0.6 - 0.3)
            mod.running_var.copy_(torch.rand(n, generator=g) * 1.5 + 0.5)
            mod.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            mod.bias.data.copy_(torch.rand(n, generator=g) * 0.5 - 0.2)
    for name, p in model.named_parameters():
        if name.split(".")[-1] in ("x_mu_d", "x_mu_s", "x_lam_s", "x_lam_d", "a", "M"):
            p.data.copy_(torch.rand(p.shape, generator=g) * 2 - 1)
    return model.eval()


CASES = [
    ("mlp", (1, 8, 8), "lmh", {}),
    ("cnn", (1, 8, 8), "lmh-radical", {"per_channel": True}),
    ("cnn", (1, 8, 8), "lmht", {"levels": 4}),
    ("resnet20", (3, 16, 16), "lmht", {"levels": 2, "theta": 0.7}),
    ("mlp", (1, 8, 8), "lif", {}),
    ("resnet34", (3, 32, 32), "lmh", {}),  # an average pool feeding a residual add
]


@pytest.mark.parametrize("arch,shape,neuron,kw", CASES)
def test_fold_reproduces_unfolded_model_on_a_fine_grid(monkeypatch, arch, shape, neuron, kw):
    """With a grid far finer than float32 (no rounding to speak of), the folded graph computes
    what the trained module computes: same spikes at every layer, logits to float precision.
    This checks the algebra of the fold (BN, theta, pool and shortcut factors)."""
    monkeypatch.setattr(fold_mod, "EXACT_BITS", 45)
    torch.manual_seed(1)
    model = _randomize(build_model(default_config(arch, neuron, timesteps=4, input_shape=shape, **kw)))
    g = fold(model)
    x = np.random.RandomState(0).randint(-32, 33, (6,) + shape) / 16.0
    ref = run_reference(g, x)
    with torch.no_grad():
        logits, spikes = model.run(torch.tensor(x, dtype=torch.float32), record=True)
    assert set(ref.spikes) == set(spikes)
    agree = np.mean([np.mean(ref.spikes[k] == spikes[k].numpy()) for k in spikes])
    assert agree > 0.9999
    np.testing.assert_allclose(ref.logits, logits.numpy(), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("arch,shape,neuron,kw", CASES)
def test_exact_sum_grid_and_bit_identical_runtimes(arch, shape, neuron, kw):
    """Every synapse's weights are integer multiples of its grid and the worst-case partial sum
    fits in float32's significand, so numpy and torch compute bit-identical currents."""
    torch.manual_seed(2)
    model = _randomize(build_model(default_config(arch, neuron, timesteps=4, input_shape=shape, **kw)), 3)
    g = fold(model, input_quantum=2 ** -4, input_bound=2.0)
    for op in g.ops:
        if op.kind != "synapse":
            continue
        w = op.arrays["weight"].astype(np.float64)
        b = op.arrays["bias"].astype(np.float64)
        qw, qo = op.attrs["weight_grid"], op.attrs["out_grid"]
        assert np.log2(qw).is_integer() and np.log2(qo).is_integer()
        assert np.all(np.mod(w / qw, 1) == 0) and np.all(np.mod(b / qo, 1) == 0)
        assert op.attrs["out_bound"] / qo < 2.0 ** 24
    x = np.random.RandomState(1).randint(-32, 33, (5,) + shape) / 16.0
    a, b = run_reference(g, x), run_torch(g, x)
    for k in a.spikes:
        np.testing.assert_array_equal(a.spikes[k], b.spikes[k])
    np.testing.assert_array_equal(a.logits, b.logits)


def test_digits_grid_keeps_predictions():
    """On the digits input grid (multiples of 1/16 in [0, 1]) the rounding to the exact-sum grid
    changes almost no spike of the trained-style model."""
    torch.manual_seed(1)
    model = _randomize(build_model(default_config("mlp", "lmh", timesteps=4)))
    g = fold(model, input_quantum=1 / 16, input_bound=1.0)
    x = np.random.RandomState(0).randint(0, 17, (64, 1, 8, 8)) / 16.0
    ref = run_reference(g, x)
    with torch.no_grad():
        logits, spikes = model.run(torch.tensor(x, dtype=torch.float32), record=True)
    assert np.mean(ref.spikes["sn0"] == spikes["sn0"].numpy()) > 0.999
    assert np.mean(ref.logits.mean(0).argmax(-1) == logits.numpy().mean(0).argmax(-1)) >= 0.95


def test_counts_between_layers_and_theta_folded():
    """Graphs carry counts: with theta = 0.5 for LM-HT L=4 the next layer's weights carry theta."""
    torch.manual_seed(0)
    model = build_model(default_config("mlp", "lmht", levels=4, timesteps=2)).eval()
    g = fold(model, input_quantum=1 / 16, input_bound=1.0)
    w_trained = model.layers["fc2"].layer.weight.detach().numpy().astype(np.float64)
    w_deployed = g.synapse_weights("fc2")[0]
    np.testing.assert_allclose(w_deployed, 0.5 * w_trained, atol=1e-4)
    ref = run_reference(g, np.zeros((2, 1, 8, 8)) + 0.5)
    for s in ref.spikes.values():
        assert set(np.unique(s)) <= {0.0, 1.0, 2.0, 3.0, 4.0}


def test_fold_errors():
    from lmh_deploy.neurons import QCFS

    ann = build_model(default_config("mlp", "qcfs")).eval()
    assert isinstance(ann.layers["sn0"], QCFS)
    with pytest.raises(UnsupportedModelError, match="QCFS"):
        fold(ann)
    snn = build_model(default_config("mlp", "lmh"))
    with pytest.raises(UnsupportedModelError, match="eval"):
        fold(snn.train())
    g = fold(build_model(default_config("mlp", "lmht", timesteps=4)).eval())
    assert g.check_timesteps(8) == 8
    with pytest.raises(TimestepsError, match="multiple of 4"):
        g.check_timesteps(6)
    with pytest.raises(TimestepsError):
        g.check_timesteps(0)


def test_time_invariance_flags():
    mk = lambda n, **kw: fold(build_model(default_config("mlp", n, timesteps=4, **kw)).eval())
    assert mk("lmh").time_invariant and mk("lif").time_invariant
    assert not mk("lmh-radical").time_invariant
    assert not mk("lmht").time_invariant
    assert mk("lmht", learn_omega=False).time_invariant


@pytest.mark.parametrize("arch,shape,neuron,kw", [
    ("resnet20", (3, 16, 16), "lmht", {"levels": 2, "theta": 0.7}),  # identity shortcut, theta != 1
    ("resnet34", (3, 32, 32), "lmh", {}),  # average pool feeding a residual add; 1x1 shortcuts
])
def test_residual_add_is_exact_in_any_fused_order(arch, shape, neuron, kw):
    """The inputs of every residual add share one power-of-two grid g with bound_a + bound_b below
    2**24 g (shortcut factors theta rounded onto g), so a runtime that fuses the add into the
    convolution's accumulator gets the same bits: accumulating shortcut, bias and the products in
    float32 in a shuffled order equals the exact (float64) sum and the reference's float32 sum."""
    torch.manual_seed(2)
    model = _randomize(build_model(default_config(arch, neuron, timesteps=2, input_shape=shape, **kw)), 3)
    # one grid per synapse (split=False): a split synapse (hi + lo, one float32 rounding) joins a
    # residual add as a fixed-grid input, exact as an elementwise add (test_fold_fidelity.py)
    g = fold(model, input_quantum=2 ** -4, input_bound=2.0, split=False)
    adds = [op for op in g.ops if op.kind == "add"]
    assert adds and any(g.op(i).kind == "scale" for op in adds for i in op.inputs)
    x = np.random.RandomState(1).randint(-32, 33, (2,) + shape) / 16.0
    spikes = run_reference(g, x).spikes
    rng = np.random.RandomState(0)
    for op in adds:
        a, c = (g.op(i) for i in op.inputs)
        assert a.kind == "synapse" and a.attrs["op"] == "conv"
        grid = a.attrs["out_grid"]
        if c.kind == "scale":
            f = float(c.arrays["factor"])
            assert (f / grid).is_integer()
            src = g.op(c.inputs[0])
            levels = g.neuron(src.name).levels if src.kind == "neuron" else 4 * g.levels
            bound_c = f * levels
        elif c.kind == "neuron":  # theta = 1: counts, on every grid g <= 1
            assert grid <= 1.0
            bound_c = float(g.neuron(c.name).levels)
        else:
            assert c.attrs["out_grid"] == grid
            bound_c = c.attrs["out_bound"]
        assert a.attrs["out_bound"] + bound_c < 2.0 ** 24 * grid
        # emulate a fused accumulator on a few output positions of step 0
        spk = spikes[a.inputs[0]][0].astype(np.float32)  # [B, C, H, W] counts
        w, b = a.arrays["weight"], a.arrays["bias"]
        pad = a.attrs["padding"]
        xp = np.pad(spk, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
        k = w.shape[-1]
        for _ in range(20):
            o, hh, ww = rng.randint(w.shape[0]), rng.randint(spk.shape[2] - k + 2 * pad + 1), \
                rng.randint(spk.shape[3] - k + 2 * pad + 1)
            prods = (w[o] * xp[0, :, hh:hh + k, ww:ww + k]).ravel()  # exact (small counts)
            n_c = int(bound_c / grid)
            sc = np.float32(grid * rng.randint(-n_c, n_c + 1))  # any shortcut value within its bound
            terms = np.concatenate([[sc, b[o]], prods]).astype(np.float32)
            exact = terms.astype(np.float64).sum()
            for perm in (rng.permutation(len(terms)), np.arange(len(terms))[::-1]):
                assert np.cumsum(terms[perm], dtype=np.float32)[-1] == exact
