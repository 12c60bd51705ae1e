"""CompactSpikes: autograd keeps uint8 spike counts instead of the layer outputs theta*s.

The claims: the numbers do not change at all (loss, every gradient, bit for bit, fp32 and bf16,
reference and fused paths); the outputs are really let go (nothing holds them after forward);
the bytes saved are exactly the outputs' bytes minus their counts; a tensor that is no longer
the registered output (changed in place, or freed and its memory reused) is never swapped.
"""
from __future__ import annotations

import gc
import weakref

import pytest
import torch

from lmh_deploy.neurons import LMHNeuron, SpikingNeuron
from lmh_deploy.spike_memory import CompactSpikes

from _deploy_models import random_model

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # Triton interpreter


def _net(kind, seed=0):
    """A small CNN with non-trivial BN and neuron parameters, in training mode."""
    return random_model("cnn", kind, 4, input_shape=(3, 8, 8), levels=3, seed=seed).train()


def _step(net, x, y, compact, autocast=False):
    """Loss and all gradients of one training step; with ``compact`` under CompactSpikes
    (backward after the context is left, as in the training loop)."""
    net.zero_grad(set_to_none=True)
    stats = None
    ctx = torch.autocast("cpu", dtype=torch.bfloat16) if autocast else torch.autocast("cpu", enabled=False)
    if compact:
        with ctx, CompactSpikes(net) as cs:
            loss = torch.nn.functional.cross_entropy(net(x).mean(0).float(), y)
        stats = cs.stats
    else:
        with ctx:
            loss = torch.nn.functional.cross_entropy(net(x).mean(0).float(), y)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None}
    return loss.detach(), grads, stats


def _outputs_bytes(net, x, autocast=False):
    """(total bytes, total elements) of all spiking-layer outputs of one forward."""
    sizes = []
    hooks = [m.register_forward_hook(lambda m, i, o: sizes.append((o.untyped_storage().nbytes(), o.numel())))
             for m in net.modules() if isinstance(m, SpikingNeuron)]
    ctx = torch.autocast("cpu", dtype=torch.bfloat16) if autocast else torch.autocast("cpu", enabled=False)
    with torch.no_grad(), ctx:
        net(x)
    for h in hooks:
        h.remove()
    return sum(b for b, _ in sizes), sum(n for _, n in sizes), len(sizes)


@pytest.mark.parametrize("kind", ["lif", "lmh", "lmh-radical", "lmht"])
@pytest.mark.parametrize("autocast", [False, True])
def test_compact_spikes_exact_and_smaller(kind, autocast):
    net = _net(kind)
    g = torch.Generator().manual_seed(1)
    x, y = torch.rand(6, 3, 8, 8, generator=g) * 2, torch.randint(0, 10, (6,), generator=g)
    loss0, grads0, _ = _step(net, x, y, compact=False, autocast=autocast)
    loss1, grads1, stats = _step(net, x, y, compact=True, autocast=autocast)
    assert torch.equal(loss0, loss1)
    assert grads0.keys() == grads1.keys() and len(grads0) > 0
    for n in grads0:
        assert torch.equal(grads0[n], grads1[n]), n
    assert any(float(v.abs().sum()) > 0 for n, v in grads0.items() if "conv" in n)
    total, numel, layers = _outputs_bytes(net, x, autocast)
    assert layers >= 2 and stats["swapped"] >= layers  # every output is saved by a synapse/pool
    assert stats["bytes_saved"] == total - numel  # each output: its bytes minus 1 byte per count
    assert stats["bytes_saved"] == numel * (1 if autocast else 3)  # bf16: 2 -> 1 B; fp32: 4 -> 1 B


def test_outputs_are_released_after_forward():
    """With CompactSpikes nothing keeps the layer outputs alive between forward and backward."""
    net = _net("lmh")
    x = torch.rand(4, 3, 8, 8)
    for compact, expect_alive in ((False, True), (True, False)):
        refs = []
        hooks = [m.register_forward_hook(lambda m, i, o: refs.append(weakref.ref(o)))
                 for m in net.modules() if isinstance(m, SpikingNeuron)]
        if compact:
            with CompactSpikes(net):
                loss = net(x).sum()
        else:
            loss = net(x).sum()
        for h in hooks:
            h.remove()
        gc.collect()
        alive = [r() is not None for r in refs]
        # the last layer's output feeds only the linear read-out, which also saves it
        assert all(alive) if expect_alive else not any(alive), (compact, alive)
        loss.backward()


def test_fused_path_hands_over_kernel_counts(monkeypatch):
    """The fused kernels (Triton interpreter on the CPU) write the uint8 counts in the forward
    pass; gradients with and without CompactSpikes are identical."""
    pytest.importorskip("triton")
    monkeypatch.setattr(SpikingNeuron, "_use_fused", lambda self, x: True)
    for kind in ("lmh", "lmht"):
        net = _net(kind, seed=3)
        g = torch.Generator().manual_seed(4)
        x, y = torch.rand(3, 3, 8, 8, generator=g) * 2, torch.randint(0, 10, (3,), generator=g)
        loss0, grads0, _ = _step(net, x, y, compact=False)
        loss1, grads1, stats = _step(net, x, y, compact=True)
        assert torch.equal(loss0, loss1) and stats["swapped"] > 0
        for n in grads0:
            assert torch.equal(grads0[n], grads1[n]), (kind, n)


def test_counts_out_equal_the_counts():
    """The kernels' uint8 copy equals the counts, also for a layout the kernel has to copy."""
    pytest.importorskip("triton")
    mod = LMHNeuron(4, channels=3)
    x = torch.rand(4, 2, 3, 5, 5) * 2
    k8 = torch.empty_like(x, dtype=torch.uint8)
    s = mod.fused_counts(x, counts_out=k8)
    assert torch.equal(k8, s.to(torch.uint8)) and int(k8.max()) == 1
    xt = x.transpose(3, 4)  # not dense in any layout the kernel indexes: copied first
    k8t = torch.zeros(xt.shape, dtype=torch.uint8)
    st = mod.fused_counts(xt, counts_out=k8t)
    assert torch.equal(k8t, st.to(torch.uint8))
    with pytest.raises(ValueError, match="uint8"):
        mod.fused_counts(x, counts_out=torch.empty_like(x))


def test_only_the_registered_unchanged_output_is_swapped():
    cs = CompactSpikes(torch.nn.Sequential())
    theta = torch.tensor(0.5)
    out = torch.tensor([0.0, 0.5, 0.5, 0.0])
    cs.add(out, torch.tensor([0, 1, 1, 0], dtype=torch.uint8), theta)
    packed = cs._pack(out.view(2, 2))  # a view of the output: swapped, rebuilt as that view
    rebuilt = cs._unpack(packed)
    assert rebuilt is not out and torch.equal(rebuilt, out.view(2, 2)) and rebuilt.stride() == (2, 1)
    out.add_(1.0)  # changed in place after registration: no longer the spikes
    assert cs._pack(out) is out
    other = torch.ones(4)
    assert cs._pack(other) is other  # never registered
    # an output freed and its memory handed to another tensor: the dead entry must not match
    dead = torch.zeros(4)
    cs.add(dead, torch.zeros(4, dtype=torch.uint8), theta)
    entry = cs._outputs.pop(dead.untyped_storage().data_ptr())
    del dead
    gc.collect()
    assert entry.ref() is None
    cs._outputs[other.untyped_storage().data_ptr()] = entry  # as if `other` reused that memory
    assert cs._pack(other) is other


def test_neurons_are_restored_after_the_context():
    net = _net("lmh")
    with CompactSpikes(net):
        assert all(m.spike_sink is not None for m in net.modules() if isinstance(m, SpikingNeuron))
    assert all(m.spike_sink is None for m in net.modules() if isinstance(m, SpikingNeuron))
