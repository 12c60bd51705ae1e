"""The top-level API and the export of a user's own module (issue 16, items 3 and 4)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import lmh_deploy as lmh
from lmh_deploy.errors import UnsupportedModelError

T = 4


def _sequential():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), lmh.LMHNeuron(T),
                        nn.AvgPool2d(2), nn.Flatten(), nn.Linear(8 * 4 * 4, 10))
    with torch.no_grad():  # non-trivial BN statistics and neuron parameters
        net[1].running_mean.uniform_(-0.2, 0.2)
        net[1].running_var.uniform_(0.5, 1.5)
        net[1].weight.uniform_(0.5, 2.0)
        for p in net[2].parameters():
            p.uniform_(-1, 1)
    return net.eval()


class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(1, 4, 3, padding=1)
        self.n1 = lmh.LIFNeuron(T)
        self.c2 = nn.Conv2d(4, 4, 3, padding=1)
        self.c3 = nn.Conv2d(4, 4, 3, padding=1)
        self.n2 = lmh.LMHNeuron(T)
        self.fc = nn.Linear(4 * 8 * 8, 10)

    def forward(self, x):
        a = self.n1(self.c1(x))
        return self.fc(torch.flatten(self.n2(self.c2(a) + self.c3(a)), 1))


def _own_forward_seq(net, x):
    """The user module's own layers, applied as documented: torch layers per step (T and B
    merged), neurons on the time-major sequence."""
    h = x.unsqueeze(0).expand((T,) + x.shape).reshape((T * x.shape[0],) + x.shape[1:])
    for m in net:
        if isinstance(m, lmh.LMHNeuron):
            h = m(h.reshape((T, -1) + h.shape[1:])).reshape((-1,) + h.shape[1:])
        else:
            h = m(h)
    return h.reshape(T, x.shape[0], -1)


def _digits(n=64):
    from lmh_deploy.evaluate import load_eval_data

    return load_eval_data("digits", n)[0]


@pytest.mark.parametrize("fmt", ["onnx", "nir"])
def test_sequential_export_matches_reference_and_own_forward(tmp_path, fmt):
    net = _sequential()
    x = _digits()
    res = lmh.export_model(net, fmt, tmp_path / f"s.{fmt}", input_shape=(1, 8, 8),
                           sample=x, with_spikes=True) if fmt == "onnx" else \
        lmh.export_model(net, fmt, tmp_path / f"s.{fmt}", T, input_shape=(1, 8, 8), sample=x)
    v = res["validation"]
    assert v["spike_agreement"] == 1.0 and v["layers_compared"] == 1 and v["max_abs_logit_diff"] == 0.0
    with torch.no_grad():
        own = _own_forward_seq(net, torch.from_numpy(x)).numpy()
    run = lmh.run_model(res["path"], "digits", limit=64)
    graph = lmh.fold_model(net, (1, 8, 8), T)
    from lmh_deploy.graph.interpret import run_reference

    ref = run_reference(graph, x, T)
    with torch.no_grad():  # the traced SpikingNet is the module's own forward, bit for bit
        assert np.array_equal(lmh_deploy_trace(net)(torch.from_numpy(x)).numpy(), own)
    # fold fidelity (weight grid): same prediction wherever the top-2 margin exceeds the error
    m_ref, m_own = ref.logits.mean(0), own.mean(0)
    err = np.abs(m_ref - m_own).max()
    assert err < 0.05 * np.abs(m_own).max()
    top2 = np.sort(m_own, -1)
    clear = top2[:, -1] - top2[:, -2] > 2 * err
    assert clear.sum() >= 48 and (m_ref.argmax(-1) == m_own.argmax(-1))[clear].all()
    assert run["accuracy"] == float((ref.logits.mean(0).argmax(-1) ==
                                     load_labels(64)).mean())


def load_labels(n):
    from lmh_deploy.evaluate import load_eval_data

    return load_eval_data("digits", n)[1]


def test_custom_module_with_residual_add(tmp_path):
    torch.manual_seed(1)
    net = Residual().eval()
    x = _digits(32)
    res = lmh.export_model(net, "onnx", tmp_path / "r.onnx", input_shape=(1, 8, 8),
                           train_timesteps=T, sample=x, with_spikes=True)
    assert res["validation"]["spike_agreement"] == 1.0 and res["validation"]["layers_compared"] == 2
    model = lmh_deploy_trace(net)
    with torch.no_grad():
        xt = torch.from_numpy(x)
        h = xt.unsqueeze(0).expand((T,) + xt.shape)
        m = lambda mod, v: mod(v.reshape((-1,) + v.shape[2:])).reshape(v.shape[:2] + (-1,) + v.shape[3:])  # noqa: E731
        a = net.n1(m(net.c1, h).reshape(T, 32, 4, 8, 8))
        s = (m(net.c2, a) + m(net.c3, a)).reshape(T, 32, 4, 8, 8)
        own = net.fc(net.n2(s).reshape(T, 32, -1))
        assert torch.equal(model(xt), own)


def lmh_deploy_trace(net):
    from lmh_deploy.graph.trace import from_module

    return from_module(net, (1, 8, 8), T)


def test_unfoldable_layer_is_named():
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(144, 10))
    with pytest.raises(UnsupportedModelError, match=r"layer '1' \(ReLU\) cannot be folded"):
        lmh.fold_model(net, (1, 8, 8), T)
    net = nn.Sequential(nn.Conv2d(1, 4, 3), lmh.LMHNeuron(T), nn.MaxPool2d(2), nn.Flatten(),
                        nn.Linear(36, 10))
    with pytest.raises(UnsupportedModelError, match=r"layer '2' \(MaxPool2d\)"):
        lmh.fold_model(net, (1, 8, 8), T)


def test_export_validation_failure_leaves_no_file(tmp_path, monkeypatch):
    """A written file that differs from the reference is an error and leaves no output."""
    import lmh_deploy.onnx.run as orun

    real = orun.run_onnx_model

    def corrupt(model, x, timesteps=None):
        r = real(model, x, timesteps)
        r.logits[..., 0] += 1.0
        return r

    monkeypatch.setattr(orun, "run_onnx_model", corrupt)
    from lmh_deploy.verify import ExportValidationError

    out = tmp_path / "bad.onnx"
    with pytest.raises(ExportValidationError, match="validation failed"):
        lmh.export_model(_sequential(), "onnx", out, T, input_shape=(1, 8, 8))
    assert not out.exists() and list(tmp_path.iterdir()) == []
    lmh.export_model(_sequential(), "onnx", out, T, input_shape=(1, 8, 8), validate=False)
    assert out.exists()
