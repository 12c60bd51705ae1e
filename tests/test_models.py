"""Networks: every architecture builds and runs; LM-HT trains in networks with hidden linear
neuron layers (ResNet-19, VGG-16 at CIFAR size); running at other T (issue 2 acceptance)."""
from __future__ import annotations

import pytest
import torch

from lmh_deploy.models import ARCHS, build_model, default_config
from lmh_deploy.neurons import LMHNeuron, LMHTNeuron


#: the CIFAR-size LM-HT nets also run on CUDA when present (fused GPU kernels)
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _grads_ok(model) -> None:
    """Every parameter got a finite gradient; every LM-HT layer's M and a a non-zero one."""
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, f"parameters without gradient: {missing[:5]}"
    for n, p in model.named_parameters():
        assert torch.isfinite(p.grad).all(), n
    lmht = [m for m in model.modules() if isinstance(m, LMHTNeuron)]
    assert lmht
    for m in lmht:
        assert m.M.grad.abs().sum() > 0
        assert m.a.grad.abs().sum() > 0


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("arch", ["resnet19", "vgg16"])
def test_lmht_cifar_nets_with_hidden_linear_neurons_forward_backward(arch, device):
    torch.manual_seed(0)
    cfg = default_config(arch, "lmht", timesteps=2, num_classes=10, input_shape=(3, 32, 32), levels=2)
    model = build_model(cfg).to(device)
    # the architecture has a neuron layer on a [T, B, F] linear output (the reference code's
    # T-GIM breaks exactly there)
    fc_neurons = [n.name for n in model.nodes
                  if n.kind == "neuron" and len(model.shapes[n.inputs[0]]) == 1]
    assert fc_neurons
    x = torch.randn(2, 3, 32, 32, device=device)
    logits, spikes = model.run(x, record=True)
    assert logits.shape == (2, 2, 10)
    for name in fc_neurons:
        s = spikes[name]
        assert s.dim() == 3 and s.shape[:2] == (2, 2)
        assert set(s.unique().tolist()) <= {0.0, 1.0, 2.0}
    torch.nn.functional.cross_entropy(logits.mean(0), torch.tensor([1, 7], device=device)).backward()
    _grads_ok(model)


@pytest.mark.parametrize("arch", list(ARCHS))
def test_every_arch_builds_and_gives_t_b_k(arch):
    torch.manual_seed(0)
    cfg = default_config(arch, "lmh", timesteps=2, num_classes=7, input_shape=(3, 8, 8))
    if arch.startswith("ref-"):  # imported architectures: at 1/16 width (their width multiplier)
        cfg["width"] = 1 / 16
    model = build_model(cfg)
    with torch.no_grad():
        out = model(torch.randn(3, 3, 8, 8))
    assert out.shape == (2, 3, 7)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("neuron", ["lif", "lmh", "lmh-radical", "lmht"])
@pytest.mark.parametrize("arch", ["mlp", "cnn"])
def test_digit_nets_every_neuron_forward_backward(arch, neuron):
    torch.manual_seed(0)
    model = build_model(default_config(arch, neuron, timesteps=3, num_classes=10, input_shape=(1, 8, 8)))
    out = model(torch.randn(4, 1, 8, 8) * 2)
    assert out.shape == (3, 4, 10)
    out.mean(0).logsumexp(1).sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing


# ------------------------------------------------------------------------------------------
# other T
# ------------------------------------------------------------------------------------------


def test_radical_lmh_beyond_trained_t_holds_last_parameters():
    torch.manual_seed(0)
    short = LMHNeuron(3, channels=4, radical=True)
    with torch.no_grad():
        for p in short.parameters():
            p.copy_(torch.randn_like(p))
    # the same neuron trained "for 6 steps" with steps 3..5 holding step 2's parameters
    long = LMHNeuron(6, channels=4, radical=True)
    with torch.no_grad():
        for name in ("x_mu_d", "x_mu_s", "x_lam_s", "x_lam_d"):
            src = getattr(short, name)
            getattr(long, name).copy_(torch.cat([src, src[-1:].expand(3, 4)]))
    x = torch.randn(6, 5, 4, 2, 2) * 0.8 + 0.5
    s = short.counts(x)
    assert torch.equal(s, long.counts(x))
    assert 0 < s.mean() < 1
    # holding step 0's parameters instead would differ
    other = LMHNeuron(6, channels=4, radical=True)
    with torch.no_grad():
        for name in ("x_mu_d", "x_mu_s", "x_lam_s", "x_lam_d"):
            src = getattr(short, name)
            getattr(other, name).copy_(torch.cat([src, src[:1].expand(3, 4)]))
    assert not torch.equal(s, other.counts(x))


def test_radical_lmh_network_runs_past_t():
    torch.manual_seed(0)
    cfg = default_config("cnn", "lmh-radical", timesteps=2, input_shape=(1, 8, 8))
    model = build_model(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".x_" in name:
                p.copy_(torch.randn_like(p))
        x = torch.randn(3, 1, 8, 8)
        out2 = model(x)
        out5 = model(x, timesteps=5)
    assert out5.shape == (5, 3, 10)
    assert torch.equal(out5[:2], out2)  # causal: the first T steps are unchanged


def test_lmht_runs_at_multiples_of_t_and_rejects_others():
    torch.manual_seed(0)
    cfg = default_config("mlp", "lmht", timesteps=3, input_shape=(1, 8, 8), levels=2)
    model = build_model(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(".M"):
                p.copy_(torch.randn_like(p))
        x = torch.randn(4, 1, 8, 8) * 2
        out3 = model(x)
        out6 = model(x, timesteps=6)
    assert out6.shape == (6, 4, 10)
    # Omega acts per window and the state is only carried forward: window 1 is unchanged
    assert torch.equal(out6[:3], out3)
    # the second window differs from the first only through the carried membrane state
    n = LMHTNeuron(3, levels=2)
    with torch.no_grad():
        n.M.copy_(torch.randn(3, 3))
    xs = torch.randn(6, 2, 5) * 2
    s = n.counts(xs)
    assert torch.equal(s[:3], n.counts(xs[:3]))
    with pytest.raises(ValueError, match=r"multiple of T.*\{3, 6, 9"):
        model(x, timesteps=4)
    with pytest.raises(ValueError, match="T'=4"):
        n.counts(torch.randn(4, 2, 5))
