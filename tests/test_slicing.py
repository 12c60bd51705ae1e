"""Time-slicing online training (LM-H Alg. 2): no gradient crosses a slice boundary, one
optimizer step per slice, forward values identical to the full run, memory O(k)."""
import pytest
import torch

from lmh_deploy.models import build_model, default_config
from lmh_deploy.training.slicing import (check_sliceable, detach_state, release, saved_tensor_meter,
                                         slice_bounds, train_step_sliced)


def _ce_mean(logits, y):
    return torch.nn.functional.cross_entropy(logits.mean(0), y)


def _model(neuron="lmh", t=4, **kw):
    torch.manual_seed(0)
    return build_model(default_config(arch="mlp", neuron=neuron, timesteps=t, **kw))


def test_slice_bounds():
    assert slice_bounds(8, 3) == [(0, 3), (3, 6), (6, 8)]
    assert slice_bounds(4, 4) == [(0, 4)]
    with pytest.raises(ValueError, match="--slice"):
        slice_bounds(4, 0)


@pytest.mark.parametrize("neuron", ["lmh", "lmh-radical", "lif", "lmht"])
def test_forward_values_cross_slices(neuron):
    """Forward computes normally across boundaries: eval-mode sliced logits == full run."""
    kw = {"learn_omega": False} if neuron == "lmht" else {}
    m = _model(neuron, t=6, **kw).eval()
    x = torch.rand(5, 1, 8, 8) * 2
    with torch.no_grad():
        full, full_spikes = m.run(x, record=True)
        state, parts, spikes = {}, [], []
        for t0, t1 in slice_bounds(6, 4):
            out, sp = m.run(x, t1 - t0, record=True, neuron_state=state, t0=t0)
            parts.append(out)
            spikes.append(sp)
            state = detach_state(state)
    for name, s in full_spikes.items():  # spike for spike
        torch.testing.assert_close(torch.cat([sp[name] for sp in spikes]), s, rtol=0, atol=0)
    # logits: same up to BLAS blocking of the T*B-row matmul
    torch.testing.assert_close(torch.cat(parts), full, rtol=1e-5, atol=1e-6)


def test_gradients_do_not_cross_slice_boundaries():
    m = _model("lmh", t=4)
    frames = (torch.rand(4, 3, 1, 8, 8) * 2).requires_grad_(True)
    y = torch.tensor([0, 1, 2])
    # slice 1 (steps 0, 1), then slice 2 (steps 2, 3) from the detached state
    state = {}
    m(frames[0:2], 2, neuron_state=state, t0=0)
    state = detach_state(state)
    assert all(not v.requires_grad for s in state.values() for v in (s if isinstance(s, tuple) else (s,)))
    s1 = dict(state)  # the run writes the slice-2 final states back into the dict it gets
    out2 = m(frames[2:4], 2, neuron_state=state, t0=2)
    _ce_mean(out2, y).backward()
    g = frames.grad
    assert torch.count_nonzero(g[0:2]) == 0 and torch.count_nonzero(g[2:4]) > 0
    # slice-2 parameter gradients equal those of a run that starts from constant states
    p_grads = {n: p.grad.clone() for n, p in m.named_parameters() if p.grad is not None}
    m.zero_grad()
    const = {k: tuple(v.clone() for v in s) for k, s in s1.items()}
    _ce_mean(m(frames.detach()[2:4], 2, neuron_state=const, t0=2), y).backward()
    for n, p in m.named_parameters():
        if n in p_grads:
            torch.testing.assert_close(p.grad, p_grads[n])
    # control: full BPTT does send slice-2 loss gradient into steps 0, 1
    frames.grad = None
    m.zero_grad()
    _ce_mean(m(frames)[2:4], y).backward()
    assert torch.count_nonzero(frames.grad[0:2]) > 0


def test_one_optimizer_step_per_slice_and_tet():
    m = _model("lmh", t=6)
    opt = torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9)
    calls = []
    x, y = torch.rand(8, 1, 8, 8), torch.randint(0, 10, (8,))

    def tet(logits, y):
        calls.append(logits.shape[0])
        return torch.stack([torch.nn.functional.cross_entropy(o, y) for o in logits]).mean()

    before = [p.detach().clone() for p in m.parameters()]
    steps = []
    loss, logits = train_step_sliced(m, x, y, opt, tet, k=4, after_step=lambda: steps.append(1))
    assert calls == [4, 2] and len(steps) == 2 and logits.shape == (6, 8, 10)
    assert opt.state[next(iter(m.parameters()))]["momentum_buffer"] is not None
    assert any(not torch.equal(a, p) for a, p in zip(before, m.parameters()))
    assert loss > 0


def test_refusals():
    with pytest.raises(ValueError, match="tdBN"):
        check_sliceable(_model("lmh", bn="per_step"), 2)
    with pytest.raises(ValueError, match="multiple of 4"):
        check_sliceable(_model("lmht", t=4), 2)
    check_sliceable(_model("lmht", t=2), 4)  # k = 2T: whole windows
    m = _model("lmht", t=4)
    with pytest.raises(ValueError, match="multiple of 4"):
        m(torch.rand(2, 1, 8, 8), 2, neuron_state={}, t0=2)


def _peak_saved(t, k):
    m = _model("lmh", t=t)
    opt = torch.optim.SGD(m.parameters(), lr=0.0)
    x, y = torch.rand(16, 1, 8, 8), torch.randint(0, 10, (16,))
    with saved_tensor_meter() as meter:
        train_step_sliced(m, x, y, opt, _ce_mean, k=k, after_step=lambda: release(meter))
    return meter["peak"]


def test_saved_activation_memory_flat_in_T():
    sliced = [_peak_saved(t, 2) for t in (2, 4, 8)]
    full = [_peak_saved(t, t) for t in (2, 4, 8)]
    assert sliced[0] == sliced[1] == sliced[2]
    assert full[0] == sliced[0] and full[1] > 1.5 * full[0] and full[2] > 1.5 * full[1]
