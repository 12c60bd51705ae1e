"""tdBN (BN over T*B) vs per-step BN (one BN per step), chosen by the model config's ``bn``."""
import pytest
import torch

from lmh_deploy.models import PerStepBN, build_model, default_config


def test_per_step_bn_statistics_are_per_step():
    torch.manual_seed(0)
    m = build_model(default_config(arch="mlp", neuron="lmh", timesteps=3, bn="per_step"))
    assert m.config["bn"] == "per_step"
    syn = m.layers["fc0"]
    assert isinstance(syn.bn, PerStepBN) and len(syn.bn.steps) == 3
    # frames whose steps have very different means: per-step BN normalizes each step to ~0 mean
    x = torch.randn(3, 16, 64) + torch.tensor([0.0, 5.0, -5.0]).view(3, 1, 1)
    y = syn(x)
    assert y.mean(dim=1).abs().max() < 1e-4  # per step and unit, over the batch
    td = build_model(default_config(arch="mlp", neuron="lmh", timesteps=3)).layers["fc0"]
    td.layer.load_state_dict(syn.layer.state_dict())
    assert td(x).mean(dim=1).abs().max() > 0.5  # tdBN: one mean over T*B, steps keep their offsets
    # a time step beyond the trained T reuses the last step's BN
    m.eval()
    assert m(torch.rand(2, 1, 8, 8), timesteps=5).shape == (5, 2, 10)


def test_fold_refuses_per_step_bn():
    from lmh_deploy.graph.fold import fold

    m = build_model(default_config(arch="mlp", neuron="lmh", timesteps=2, bn="per_step")).eval()
    with pytest.raises(Exception, match="per-step BN"):
        fold(m)
    with pytest.raises(ValueError, match="unknown bn"):
        build_model(default_config(bn="batch"))
