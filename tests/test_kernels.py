"""Fused Triton neuron kernels vs the reference torch path (DESIGN §1).

On a machine without a GPU the kernels run in Triton's interpreter on CPU tensors
(``TRITON_INTERPRET=1``, set by ``conftest.py`` before triton is first imported); with CUDA
they run compiled on the GPU. Spikes must equal the reference exactly; gradients (input and parameters)
within fp32 tolerance. Inputs are quantized so that membranes land exactly on thresholds.
"""
from __future__ import annotations

import os

import pytest
import torch

CUDA = torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET", "0") != "1"
pytest.importorskip("triton", reason="Triton not installed (pip install 'lmh-deploy[gpu]')")

from lmh_deploy.kernels import lmh_counts, lmh_counts_raw, lmht_counts  # noqa: E402
from lmh_deploy.neurons import LIFNeuron, LMHNeuron, LMHTNeuron  # noqa: E402

DEV = "cuda" if CUDA else "cpu"
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def _inputs(shape, seed, step=0.25, scale=1.5, channels_last=False):
    """Random currents on a grid of ``step`` (so many membranes hit theta exactly)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.round(torch.randn(shape, generator=g) * scale / step) * step
    x = x.to(DEV)
    if channels_last:
        perm = (0, 1) + tuple(range(3, x.dim())) + (2,)
        x = x.permute(perm).contiguous().permute(_inverse(perm))
    return x


def _inverse(perm):
    inv = [0] * len(perm)
    for i, p in enumerate(perm):
        inv[p] = i
    return tuple(inv)


def _randomize(mod, seed, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in mod.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * scale)


def _fused(mod, x):
    """The module's own fused path (what ``counts`` runs on CUDA): LM-H and LM-HT from their raw
    learnables (maps in the kernels), LIF from its constants. LM-H runs in chunks of 4 steps
    here, so T = 10 exercises the saved chunk-start states."""
    if isinstance(mod, LMHNeuron):
        return lmh_counts_raw(x, *mod.raw(), mod.theta, per_step=mod.radical, chunk=4)
    return mod.fused_counts(x)


def _fused_evaluated(mod, x):
    """The fused path from the evaluated parameters (autograd takes the grads through the maps)."""
    if isinstance(mod, LMHTNeuron):
        return lmht_counts(x, mod.lam(), mod.omega(), mod.theta, mod.levels, mod.v0_frac,
                           mod.gain, mod.timesteps)
    return lmh_counts(x, *mod.evaluated(), mod.theta, per_step=getattr(mod, "radical", False),
                      chunk=4)


def _compare(mod, x, seed=0, fused=_fused):
    """Spikes equal; dL/dx and dL/dparams allclose, for L = sum(s * G) with a random G."""
    mod = mod.to(DEV)
    params = [p for p in mod.parameters() if p.requires_grad]
    x_ref = x.clone().requires_grad_()
    mod.fused = False
    s_ref = mod.counts(x_ref)
    gen = torch.Generator().manual_seed(seed + 99)
    g = torch.randn(s_ref.shape, generator=gen).to(DEV)
    grads_ref = torch.autograd.grad((s_ref * g).sum(), [x_ref] + params)
    x_f = x.clone().requires_grad_()
    s = fused(mod, x_f)
    assert s.dtype == x.dtype and s.shape == x.shape
    assert torch.equal(s, s_ref), f"{(s != s_ref).sum().item()} spikes differ"
    grads = torch.autograd.grad((s * g).sum(), [x_f] + params)
    for name, a, b in zip(["x"] + [n for n, p in mod.named_parameters() if p.requires_grad],
                          grads, grads_ref):
        scale = float(b.abs().max()) + 1e-6
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5 * scale, msg=f"grad {name}")
    assert float(grads_ref[0].abs().sum()) > 0  # the comparison is not vacuous
    return s_ref


@pytest.mark.parametrize("T", [1, 2, 4, 10])
@pytest.mark.parametrize("radical", [False, True])
@pytest.mark.parametrize("per_channel", [False, True])
def test_lmh_matches_reference(T, radical, per_channel):
    mod = LMHNeuron(T, channels=5 if per_channel else None, radical=radical)
    _randomize(mod, seed=T)
    _compare(mod, _inputs((T, 3, 5, 7), seed=T + 10 * radical), seed=T)


@pytest.mark.parametrize("kind", ["lmh", "lmh-radical-ch", "lmht", "lmht-ch"])
def test_evaluated_parameter_path_matches_reference(kind):
    """lmh_counts / lmht_counts from evaluated parameters (autograd through the torch maps; the
    path of LIF's constants and of external callers) equal the reference too, at T = 10."""
    T = 10
    if kind.startswith("lmht"):
        mod = LMHTNeuron(T, levels=2, channels=5 if kind.endswith("ch") else None)
    else:
        mod = LMHNeuron(T, channels=5 if kind.endswith("ch") else None, radical="radical" in kind)
    _randomize(mod, seed=31)
    _compare(mod, _inputs((T, 3, 5, 7), seed=32, step=0.125), fused=_fused_evaluated)


@pytest.mark.parametrize("kind", ["lmh", "lmht"])
def test_module_fused_counts_default_chunk(kind):
    """The module's fused_counts as called on CUDA (LM-H's default chunk of 16 covers T = 10)."""
    T = 10
    mod = LMHNeuron(T, channels=5) if kind == "lmh" else LMHTNeuron(T, levels=3)
    _randomize(mod, seed=41)
    _compare(mod, _inputs((T, 2, 5, 9), seed=42, step=0.125),
             fused=lambda m, x: m.fused_counts(x))


@pytest.mark.parametrize("T", [1, 2, 4, 10])
def test_lmh_identity_init_hits_threshold(T):
    """At init (soft-reset IF, v_S(0) = theta/2) grid inputs put m exactly on theta."""
    mod = LMHNeuron(T)
    x = _inputs((T, 2, 37), seed=3, step=0.5, scale=1.0)
    m1 = 0.5 + x[0]
    assert bool((m1 == 1.0).any())
    _compare(mod, x)


@pytest.mark.parametrize("T", [1, 4, 10])
def test_lif_matches_reference(T):
    mod = LIFNeuron(T, decay=0.75)
    s = _compare(mod, _inputs((T, 2, 3, 5, 5), seed=T))
    assert 0 < float(s.detach().mean()) < 1


def test_radical_beyond_trained_T_holds_last_step():
    mod = LMHNeuron(4, radical=True, channels=3)
    _randomize(mod, seed=5)
    _compare(mod, _inputs((7, 2, 3, 9), seed=5))


@pytest.mark.parametrize("shape,channels_last", [
    ((10, 2, 3, 16, 16), False),   # block lies in one channel
    ((4, 2, 6, 2, 2), False),      # power-of-two inner: per-block channel groups
    ((4, 2, 4, 3, 5), True),       # channels-last, power-of-two C
    ((4, 3, 5, 3, 3), True),       # channels-last, odd C: per-element atomics
    ((4, 3, 8), False),            # linear layer [T, B, F]
])
def test_lmh_per_channel_layouts(shape, channels_last):
    mod = LMHNeuron(shape[0], channels=shape[2])
    _randomize(mod, seed=1)
    x = _inputs(shape, seed=2, channels_last=channels_last)
    _compare(mod, x)


@pytest.mark.parametrize("T", [1, 2, 4, 10])
@pytest.mark.parametrize("levels", [1, 2, 3])
def test_lmht_matches_reference(T, levels):
    mod = LMHTNeuron(T, levels=levels, channels=5 if levels == 2 else None)
    _randomize(mod, seed=T * levels)
    _compare(mod, _inputs((T, 3, 5, 7), seed=T, step=0.125))


def test_lmht_identity_init_exact_levels():
    """Omega = 1/T, theta = 1 (L = 2): grid inputs land on every level boundary."""
    mod = LMHTNeuron(4, levels=2)
    s = _compare(mod, _inputs((4, 2, 3, 11), seed=7, step=0.25, scale=3.0))
    assert set(s.unique().tolist()) == {0.0, 1.0, 2.0}


def test_theta_power_of_two_fast_path_is_exact_and_only_for_powers_of_two():
    """L = 7 (theta = 2/7): membranes one ulp below fp32(theta * k). The cascade counts k - 1
    there (the levels below), where ``floor(m / theta)`` would count k at k = 3 and 6 and
    ``floor(m * (1/theta))`` k - 1: neither division can stand in for the comparisons. The
    backward divides the surrogate by theta; with L = 2 and 4 (theta = 1, 1/2) the kernels
    multiply by 1/theta instead, with the same bits."""
    from lmh_deploy.kernels import theta_is_pow2

    assert [theta_is_pow2(v) for v in (1.0, 0.5, 2.0, 0.25, 2.0 ** -20)] == [True] * 5
    assert not any(theta_is_pow2(v) for v in (2 / 3, 2 / 7, 0.0, -1.0, float("inf"),
                                              float("nan"), 2.0 ** -130, 3.0))
    T = 4
    mod = LMHTNeuron(T, levels=7, learn_omega=False)  # Omega = I, lambda = 1, v(0) = 0
    th = torch.tensor(2 / 7, dtype=torch.float32)
    k = torch.arange(0, 9, dtype=torch.float32)
    m = torch.nextafter(th * k, torch.tensor(-1.0))
    assert torch.floor(m / th)[3] == 3 and torch.floor(m * (1 / th))[3] == 2  # the trap
    assert torch.floor(m / th)[6] == 6 and torch.floor(m * (1 / th))[6] == 5
    x = torch.zeros(T, 2, 9)
    x[0] = m  # first step: m = x exactly
    x[1:] = m.flip(0) * 0.5
    assert not mod._theta_pow2()
    s = _compare(mod, x.to(DEV))
    assert s[0, 0].tolist() == [0, 0, 1, 2, 3, 4, 5, 6, 7]
    for levels in (2, 4):
        mod = LMHTNeuron(T, levels=levels)
        assert mod._theta_pow2()
        _randomize(mod, seed=levels)
        _compare(mod, _inputs((T, 3, 5, 7), seed=levels, step=0.125))


def test_lmht_windows_hybrid_and_no_omega():
    mod = LMHTNeuron(4, levels=4, theta=0.75, v0_frac=0.5, channels=3)
    mod.gain.fill_(4.0)
    _randomize(mod, seed=11)
    _compare(mod, _inputs((12, 2, 3, 5), seed=12))          # T' = 3 windows of T = 4
    plain = LMHTNeuron(4, levels=2, learn_omega=False)
    _randomize(plain, seed=13)
    _compare(plain, _inputs((6, 2, 9), seed=14))             # Omega = I: any T'
    with pytest.raises(ValueError, match="multiple of T"):
        lmht_counts(torch.zeros(6, 2, 3, device=DEV), mod.lam(), mod.omega().to(DEV),
                    mod.theta.to(DEV), 4, 0.5, mod.gain.to(DEV), 4)


@pytest.mark.parametrize("kind", ["lmh", "lmht"])
def test_bf16_input_uses_fp32_state(kind):
    """bf16 in: spikes of the fp32 reference on x.float(), output and grads in bf16."""
    mod = LMHNeuron(4, channels=3) if kind == "lmh" else LMHTNeuron(4, levels=2, channels=3)
    _randomize(mod, seed=4)
    mod = mod.to(DEV)
    mod.fused = False
    x = _inputs((4, 2, 3, 13), seed=4)  # grid values are exact in bf16
    x16 = x.to(torch.bfloat16).requires_grad_()
    s = _fused(mod, x16)
    assert s.dtype == torch.bfloat16
    assert torch.equal(s.float(), mod.counts(x))
    s.float().sum().backward()
    assert x16.grad.dtype == torch.bfloat16


@pytest.mark.skipif(not CUDA, reason="the automatic hook runs for CUDA tensors only")
@pytest.mark.parametrize("kind", ["lif", "lmh", "lmh-radical", "lmht"])
def test_module_hook_on_cuda(kind):
    from lmh_deploy.models import build_model, default_config

    cfg = default_config("cnn", neuron=kind, timesteps=4, input_shape=(3, 8, 8), per_channel=True)
    model = build_model(cfg).to(DEV)
    x = torch.randn(5, 3, 8, 8, device=DEV)
    _, fused = model.run(x, record=True)
    for m in model.modules():
        if hasattr(m, "fused"):
            m.fused = False
    _, ref = model.run(x, record=True)
    for name in ref:
        assert torch.equal(fused[name], ref[name]), name


@pytest.fixture
def few_programs(monkeypatch):
    """Force the backward grid down to a few programs, each over several blocks (ITERS > 1,
    trailing blocks entirely masked), as on a GPU with large layers."""
    from lmh_deploy.kernels import fused

    lmh_cfg, lmht_cfg = fused._lmh_bwd_cfg, fused._lmht_bwd_cfg
    monkeypatch.setattr(fused, "_lmh_bwd_cfg", lambda *a: lmh_cfg(*a)[:2] + (1,))
    monkeypatch.setattr(fused, "_lmht_bwd_cfg", lambda *a: lmht_cfg(*a)[:2] + (1,) + lmht_cfg(*a)[3:])
    monkeypatch.setattr(fused, "_sm_count", lambda device: 3)
    iters = []
    grid_iters = fused._grid_iters
    monkeypatch.setattr(fused, "_grid_iters", lambda *a: iters.append(grid_iters(*a)) or iters[-1])
    return iters


@pytest.mark.parametrize("kind", ["lmh", "lmh-radical", "lif", "lmht", "lmht-ch"])
def test_multi_block_programs(few_programs, kind):
    """Per-program register accumulation over ITERS blocks gives the reference gradients."""
    T = 4
    if kind == "lif":
        mod = LIFNeuron(T, decay=0.75)
    elif kind.startswith("lmht"):
        mod = LMHTNeuron(T, levels=2, channels=3 if kind == "lmht-ch" else None)
    else:
        mod = LMHNeuron(T, radical=kind == "lmh-radical")
    _randomize(mod, seed=21)
    # n = 2*3*23*29 = 4002 neurons: 8-32 blocks over 3 programs, the last ones partly or all masked
    _compare(mod, _inputs((T, 2, 3, 23, 29), seed=22, step=0.125), seed=3)
    assert few_programs and all(it > 1 for _, it in few_programs)


@pytest.mark.parametrize("T,levels,channels,mode", [(1, 1, None, 1), (2, 2, 5, 1), (4, 3, None, 1),
                                                     (10, 2, None, 1), (17, 2, 3, 1),
                                                     (3, 2, None, 2), (10, 2, 5, 2),
                                                     (4, 2, None, 3), (10, 3, 5, 3)])
def test_lmht_omega_grad_by_dot(monkeypatch, T, levels, channels, mode):
    """The tl.dot variants: dL/dOmega (mode 1; joined [BLOCK, TP] tiles, bit-reversed columns,
    TP = 16 or 32), dL/dx too (mode 2, DX_DOT: the dL/dI tile times an Omega tile), dL/dOmega of
    tiles through an L2 scratch (mode 3) give the reference gradients, over several windows and
    blocks."""
    from lmh_deploy.kernels import fused

    cfg = fused._lmht_bwd_cfg
    used = []
    monkeypatch.setattr(fused, "_lmht_bwd_cfg", lambda *a: used.append(a) or cfg(*a)[:3] + (mode,))
    mod = LMHTNeuron(T, levels=levels, channels=channels)
    _randomize(mod, seed=T + 50)
    _compare(mod, _inputs((2 * T, 3, channels or 4, 7), seed=T, step=0.125), seed=T)
    assert used and all(need_om for _, need_om in used)


def _scaled_vs_counts(mod, x):
    """forward() (theta*s written by the kernel, dL/ds formed in-kernel) equals counts()*theta:
    outputs and all gradients bit for bit."""
    mod = mod.to(DEV)
    params = [p for p in mod.parameters() if p.requires_grad]
    gen = torch.Generator().manual_seed(5)
    g = torch.randn(x.shape, generator=gen).to(DEV).to(x.dtype)
    outs = []
    for scaled in (False, True):
        xr = x.clone().requires_grad_()
        c = mod.fused_counts(xr, scaled=scaled)
        o = c if scaled else c * mod.theta
        assert o.dtype == x.dtype
        outs.append((o,) + torch.autograd.grad(o, [xr] + params, grad_outputs=g))
    for a, b in zip(*outs):
        assert torch.equal(a, b)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("kind", ["lmh", "lmh-radical", "lmht"])
def test_scaled_output_equals_counts_times_theta(kind, dtype):
    T = 4
    if kind == "lmht":
        mod = LMHTNeuron(T, levels=3)  # theta = 2/3: the product rounds
    else:
        mod = LMHNeuron(T, radical=kind == "lmh-radical", theta=0.7)
    _randomize(mod, seed=8)
    _scaled_vs_counts(mod, _inputs((T, 2, 3, 11), seed=9, step=0.125).to(dtype))


@pytest.mark.skipif(not CUDA, reason="the automatic hook runs for CUDA tensors only")
@pytest.mark.parametrize("kind", ["lif", "lmh", "lmht"])
def test_module_forward_fused_equals_reference(kind):
    """SpikingNet.run without recording calls the neuron's forward (theta*s from the kernel)."""
    from lmh_deploy.models import build_model, default_config

    cfg = default_config("cnn", neuron=kind, timesteps=4, input_shape=(3, 8, 8))
    model = build_model(cfg).to(DEV)
    x = torch.randn(5, 3, 8, 8, device=DEV)
    out = model(x)
    for m in model.modules():
        if hasattr(m, "fused"):
            m.fused = False
    assert torch.equal(out, model(x))


def _graph_ops(out):
    """Names of all autograd nodes between ``out`` and the leaves."""
    seen, todo, names = set(), [out.grad_fn], []
    while todo:
        fn = todo.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        names.append(type(fn).__name__)
        todo.extend(f for f, _ in fn.next_functions)
    return names


@pytest.mark.parametrize("kind", ["lmh", "lmh-radical", "lmht"])
def test_module_fused_path_keeps_maps_in_kernel(kind):
    """The module's fused path maps its raw learnables inside the kernels: the autograd graph
    from the output back to the parameters holds the kernel's node (and LM-H's parameter stack)
    but no sigmoid or shift nodes -- the dozen tiny map kernels of a step are gone."""
    mod = LMHTNeuron(4, levels=2) if kind == "lmht" else LMHNeuron(4, radical=kind != "lmh")
    out = mod.to(DEV).fused_counts(_inputs((4, 2, 7), seed=1).requires_grad_(), scaled=True)
    ops = _graph_ops(out)
    assert not any("Sigmoid" in o or o.startswith(("Add", "Sub", "Mul")) for o in ops), ops
    kernel = "LMHTFunctionBackward" if kind == "lmht" else "LMHFunctionBackward"
    assert ops.count(kernel) == 1 and ops.count("AccumulateGrad") == len(list(mod.parameters())) + 1  # and x
    ref = _graph_ops(_fused_evaluated(mod, _inputs((4, 2, 7), seed=1).requires_grad_()))
    assert sum("Sigmoid" in o for o in ref) >= 1  # the evaluated path does carry the maps
