"""Binary reparameterization of LM-HT (lmh_deploy.reparam): an L-level network over T steps
equals a binary network over L*T sub-steps (issue 2 acceptance)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from lmh_deploy.errors import UnsupportedModelError
from lmh_deploy.models import build_model, default_config
from lmh_deploy.neurons import LMHTNeuron, ReparamLMHTNeuron
from lmh_deploy.reparam import (binarize_lmht, binarize_neuron, reparam_decays, reparam_omega,
                                window_counts)

# ------------------------------------------------------------------------------------------
# the matrices
# ------------------------------------------------------------------------------------------

OM = torch.tensor([[0.5, 0.25], [0.125, 0.75]])


def test_reparam_omega_exact_and_uniform_layout():
    # T = 2, L = 2; sub-step order (0,0) (0,1) (1,0) (1,1)
    a, b, c, d = 0.5, 0.25, 0.125, 0.75
    exact_spike = [[a, a, b, b], [0, 0, 0, 0], [c, c, d, d], [0, 0, 0, 0]]
    assert reparam_omega(OM, 2, 2, static_input=False).tolist() == exact_spike
    exact_static = [[v / 2 for v in row] for row in exact_spike]
    assert reparam_omega(OM, 2, 2, static_input=True).tolist() == exact_static
    uni = [[a / 2, a / 2, b / 2, b / 2]] * 2 + [[c / 2, c / 2, d / 2, d / 2]] * 2
    assert reparam_omega(OM, 2, 2, static_input=False, mode="uniform").tolist() == uni
    assert reparam_omega(OM, 2, 2, static_input=True, mode="uniform").tolist() == [
        [v / 2 for v in row] for row in uni]
    # Omega = I (M-HT without T-GIM)
    assert reparam_omega(None, 2, 2, False).tolist() == [[1, 1, 0, 0], [0, 0, 0, 0],
                                                         [0, 0, 1, 1], [0, 0, 0, 0]]
    # L = 1 leaves Omega unchanged
    assert torch.equal(reparam_omega(OM, 2, 1, False), OM)
    with pytest.raises(ValueError, match="exact, uniform"):
        reparam_omega(OM, 2, 2, False, mode="even")


def test_reparam_decays_leak_at_window_starts():
    assert reparam_decays(torch.tensor(0.75), 3, 2).tolist() == [0.75, 1, 0.75, 1, 0.75, 1]
    per_ch = reparam_decays(torch.tensor([0.75, 1.25]), 2, 3)
    assert per_ch.tolist() == [[0.75, 1.25], [1, 1], [1, 1], [0.75, 1.25], [1, 1], [1, 1]]


# ------------------------------------------------------------------------------------------
# single neuron
# ------------------------------------------------------------------------------------------


def _spike_fed(x: torch.Tensor, levels: int) -> torch.Tensor:
    """A spike-fed binary layer's input: the window's whole current at sub-step 0, 0 after
    (what a synapse with bias / L sees when the previous layer bursts)."""
    out = torch.zeros((x.shape[0] * levels,) + tuple(x.shape[1:]))
    out[0::levels] = x
    return out


def test_counterexample_uniform_breaks_exact_holds():
    # L = 2, theta = 1, lambda = 1, Omega = I; x = 3.5, -1:
    #   L-level: m1 = 3.5 -> s=2 (clipped), v = 1.5;  m2 = 1.5 - 1 = 0.5 -> s=0
    #   uniform IF sub-steps (I/2 each): 1.75 (s, v=.75) | 2.5 (s, v=1.5) | 1.0 (s!, v=0) | -0.5
    #     -> window counts 2, 1 (wrong);
    #   exact burst: 3.5 (s, 2.5) | 2.5 (s, 1.5) | 0.5 | 0.5 -> window counts 2, 0
    n = LMHTNeuron(2, levels=2, learn_omega=False)
    x = torch.tensor([3.5, -1.0]).reshape(2, 1, 1)
    assert n.counts(x).flatten().tolist() == [2, 0]
    xb = _spike_fed(x, 2)
    exact = binarize_neuron(n, mode="exact").counts(xb).flatten()
    uniform = binarize_neuron(n, mode="uniform").counts(xb).flatten()
    assert exact.tolist() == [1, 1, 0, 0]
    assert uniform.tolist() == [1, 1, 1, 0]
    # the same with the state given directly: v(0) = 1.5 theta, I = -theta
    n1 = LMHTNeuron(1, levels=2, learn_omega=False, v0_frac=1.5)
    x1 = torch.tensor([-1.0]).reshape(1, 1, 1)
    assert n1.counts(x1).item() == 0
    assert binarize_neuron(n1, mode="exact").counts(_spike_fed(x1, 2)).sum().item() == 0
    assert binarize_neuron(n1, mode="uniform").counts(_spike_fed(x1, 2)).sum().item() == 1


@pytest.mark.parametrize("levels", [1, 2, 4])
def test_uniform_is_exact_under_theorem_4_2_conditions(levels):
    # Omega = I, lambda = 1, v(0) = theta/2 in [0, theta), I in [0, L theta) (multiples of 2^-8)
    theta = 2.0 / levels
    g = torch.Generator().manual_seed(levels)
    q = 2.0 ** -8
    x = torch.randint(0, int(levels * theta / q), (5, 3, 200), generator=g).float() * q
    n = LMHTNeuron(5, levels=levels, learn_omega=False, v0_frac=0.5)
    u = binarize_neuron(n, mode="uniform")
    assert torch.equal(window_counts(u.counts(_spike_fed(x, levels)), levels), n.counts(x))


@pytest.mark.parametrize("levels", [1, 2, 4])
@pytest.mark.parametrize("static_input", [False, True])
def test_exact_neuron_any_input(levels, static_input):
    # learned Omega, lambda != 1, v(0) = theta/2, inputs far outside Theorem 4.2's range
    torch.manual_seed(levels)
    n = LMHTNeuron(4, levels=levels, v0_frac=0.5, channels=3)
    with torch.no_grad():
        n.M.copy_(torch.randn(4, 4) * 2)
        n.a.copy_(torch.tensor([-1.5, 0.0, 1.5]))
    x = torch.randn(8, 5, 3) * 3 * float(n.theta)  # 8 steps: two windows of T = 4
    b = binarize_neuron(n, static_input=static_input)
    assert isinstance(b, ReparamLMHTNeuron)
    # a ReparamLMHTNeuron runs exactly L*T sub-steps; for two windows apply Omega'
    # block-diagonally (as the L-level neuron does at T' = 2T), state carried across windows
    two = ReparamLMHTNeuron(torch.block_diag(b.omega_fixed, b.omega_fixed),
                            torch.cat([b.lam_steps, b.lam_steps]), float(n.theta), v0_frac=0.5)
    xb = x.repeat_interleave(levels, 0) if static_input else _spike_fed(x, levels)
    with torch.no_grad():
        s = n.counts(x)
        sb = two.counts(xb)
        assert torch.equal(b.counts(xb[:4 * levels]), sb[:4 * levels])
    assert set(sb.unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(window_counts(sb, levels), s)
    if levels > 1:
        assert (s == levels).any() and (s == 0).any()  # clipped bursts and silent windows occur


# ------------------------------------------------------------------------------------------
# networks (eval mode, random weights, non-trivial BN statistics)
# ------------------------------------------------------------------------------------------


def _randomize(model, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(".M"):
                p.copy_(torch.randn(p.shape, generator=g))
            elif name.endswith(".a"):
                p.copy_(torch.randn(p.shape, generator=g) * 0.8)
            elif ".bn." in name and name.endswith("weight"):
                p.copy_(1 + 0.3 * torch.randn(p.shape, generator=g))
            elif name.endswith("bias"):
                p.copy_(0.3 * torch.randn(p.shape, generator=g))
            else:
                p.mul_(2.0)
        for name, buf in model.named_buffers():
            if name.endswith("running_mean"):
                buf.copy_(0.2 * torch.randn(buf.shape, generator=g))
            elif name.endswith("running_var"):
                buf.copy_(0.5 + torch.rand(buf.shape, generator=g))


def _check_equivalent(model, x, levels, frames=False):
    with torch.no_grad():
        logits, spikes = model.run(x, record=True)
        b = binarize_lmht(model)
        xb = x.repeat_interleave(levels, 0) if frames else x
        logits_b, spikes_b = b.run(xb, record=True)
    T = model.timesteps
    assert logits_b.shape == (levels * T,) + tuple(logits.shape[1:])
    torch.testing.assert_close(logits_b.sum(0), logits.sum(0), rtol=1e-5, atol=1e-5)
    assert spikes.keys() == spikes_b.keys()
    for name in spikes:
        assert set(spikes_b[name].unique().tolist()) <= {0.0, 1.0}, name
        assert torch.equal(window_counts(spikes_b[name], levels), spikes[name]), name
    return spikes


@pytest.mark.parametrize("levels", [1, 2, 4])
@pytest.mark.parametrize("arch", ["mlp", "cnn"])
def test_binarized_network_same_summed_logits_and_window_counts(arch, levels):
    # theta = 2/L is a power of two for L in {1, 2, 4}: the burst arithmetic is exact
    torch.manual_seed(levels)
    model = build_model(default_config(arch, "lmht", timesteps=3, levels=levels, input_shape=(1, 8, 8)))
    model.eval()
    _randomize(model, seed=10 + levels)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(8, 1, 8, 8, generator=torch.Generator().manual_seed(levels)) * 1.5
    spikes = _check_equivalent(model, x, levels)
    # the comparison is not vacuous: every layer fires, at every level
    for s in spikes.values():
        assert 0 < s.mean()
    assert any((s == levels).any() for s in spikes.values())
    # the source model is untouched
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


def test_binarized_hybrid_resnet_with_gain_and_half_v0():
    # residual adds (identity and conv shortcuts), v(0) = theta/2, first-layer gain L
    levels = 2
    torch.manual_seed(0)
    model = build_model(default_config("resnet20", "lmht", timesteps=2, levels=levels,
                                       input_shape=(3, 8, 8), v0_frac=0.5))
    model.eval()
    _randomize(model, seed=0)
    first = model.layers[model.neuron_names()[0]]
    first.gain.fill_(float(levels))
    x = torch.randn(3, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    spikes = _check_equivalent(model, x, levels)
    # the uniform (DESIGN §1) spreading keeps the shapes but is not exact here: currents
    # change sign after clipped steps, outside Theorem 4.2's range
    with torch.no_grad():
        u = binarize_lmht(model, mode="uniform")
        logits_u, spikes_u = u.run(x, record=True)
    assert logits_u.shape == (levels * 2, 3, 10)
    assert u.config["reparam"] == {"source_timesteps": 2, "source_levels": levels, "mode": "uniform"}
    mismatch = sum(int((window_counts(spikes_u[k], levels) != spikes[k]).sum()) for k in spikes)
    assert mismatch > 0


def test_binarized_frames_repeat_each_frame_l_times():
    levels = 2
    torch.manual_seed(1)
    model = build_model(default_config("mlp", "lmht", timesteps=3, levels=levels, input_shape=(1, 8, 8)))
    model.eval()
    _randomize(model, seed=1)
    frames = torch.randn(3, 4, 1, 8, 8, generator=torch.Generator().manual_seed(1)) * 1.5
    _check_equivalent(model, frames, levels, frames=True)


def test_binarized_model_metadata_and_errors():
    model = build_model(default_config("mlp", "lmht", timesteps=3, levels=2, input_shape=(1, 8, 8)))
    b = binarize_lmht(model)
    assert not b.training
    assert b.timesteps == 6 and b.config["timesteps"] == 6 and b.config["neuron"]["levels"] == 1
    assert b.config["reparam"] == {"source_timesteps": 3, "source_levels": 2, "mode": "exact"}
    assert model.timesteps == 3 and model.config["timesteps"] == 3
    with pytest.raises(ValueError, match="exact, uniform"):
        binarize_lmht(model, mode="spread")
    lmh = build_model(default_config("mlp", "lmh", timesteps=3, input_shape=(1, 8, 8)))
    with pytest.raises(UnsupportedModelError, match="LM-HT"):
        binarize_lmht(lmh)
    with pytest.raises(ValueError, match="exactly 6 steps"):
        b(torch.randn(2, 1, 8, 8), timesteps=4)


def test_window_counts():
    s = torch.tensor([1.0, 1.0, 0.0, 1.0, 0.0, 0.0]).reshape(6, 1)
    assert window_counts(s, 2).flatten().tolist() == [2, 1, 0]
    with pytest.raises(ValueError, match="windows"):
        window_counts(s, 4)
    np.testing.assert_array_equal(window_counts(s, 1).numpy(), s.numpy())


@pytest.mark.parametrize("per_channel", [False, True])
def test_fold_of_binarized_model_keeps_per_step_lambda(per_channel):
    # the fold writes lambda' as a [L*T, C] table (per step, per channel); it used to flatten a
    # per-channel [L*T, C] table into [L*T*C, 1]
    from lmh_deploy.graph.fold import fold
    from lmh_deploy.graph.interpret import run_reference

    levels, T = 2, 3
    torch.manual_seed(0)
    model = build_model(default_config("mlp", "lmht", timesteps=T, levels=levels, input_shape=(1, 8, 8),
                                       per_channel=per_channel)).eval()
    _randomize(model, seed=3)
    b = binarize_lmht(model)
    graph = fold(b)
    for name in graph.neuron_names():
        lam = graph.neuron(name).params["lam"]
        np.testing.assert_array_equal(lam, b.layers[name].lam_steps.numpy().reshape(levels * T, -1))
        assert lam.shape == (levels * T, b.shapes[name][0] if per_channel else 1)
    # the folded binary graph agrees with the folded L-level graph window by window (the fold's
    # own grid rounding of the bias / L aside: allow a handful of flipped spikes)
    x = (torch.round(torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 384) / 256).numpy()
    ref, ref_b = run_reference(fold(model), x), run_reference(graph, x)
    for name in graph.neuron_names():
        counts = window_counts(torch.as_tensor(np.asarray(ref_b.spikes[name])), levels).numpy()
        assert np.mean(counts == np.asarray(ref.spikes[name])) > 0.99, name


def test_binarized_per_step_bn_network():
    # per-step BN (one BN per step t, where the models module offers it): sub-step (t, k) uses
    # step t's BN, its shift divided by L for spike-fed synapses
    import lmh_deploy.models as models

    if not hasattr(models, "PerStepBN"):
        pytest.skip("this models module has no per-step BN")
    levels = 2
    torch.manual_seed(0)
    model = build_model(default_config("cnn", "lmht", timesteps=2, levels=levels, input_shape=(1, 8, 8),
                                       bn="per_step")).eval()
    _randomize(model, seed=5)
    x = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(5)) * 1.5
    _check_equivalent(model, x, levels)
