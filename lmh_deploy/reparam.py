"""Binary reparameterization of LM-HT: an L-level network over T steps -> a binary (L = 1)
network over L*T sub-steps with the same summed logits (for chips that only take 0/1 spikes).

Sub-step ``(t, k)`` (``t`` = window 0..T-1, ``k`` = 0..L-1) is binary step ``t*L + k``.

Exact construction (``mode="exact"``, the default)
--------------------------------------------------
Each binary neuron receives its window's whole T-GIM input at the window's first sub-step and
then fires its L-level count as a burst::

    Omega'[(t,0), (j,k)] = Omega[t, j]        spike-fed layer (input = previous layer's spikes)
    Omega'[(t,0), (j,k)] = Omega[t, j] / L    layer fed by the static image (repeated every sub-step)
    Omega'[(t,k), .]     = 0                  for k = 1..L-1  (no input inside the window)
    lambda'[(t,0)] = lambda,  lambda'[(t,k)] = 1 for k > 0     (leak only at window starts)

so ``m'(t,0) = lambda v[t-1] + I[t] = m[t]`` and the L sub-steps emit
``s[t] = #{k in 1..L : m[t] >= fl(k theta)}`` binary spikes (up to float32 rounding of the
sub-steps' ``m - theta`` at level edges) leaving ``v = m[t] - theta s[t]``
-- the L-level neuron's step, for **any** input. A spike-fed synapse sees the window's spikes
spread over L sub-steps, so its constant part (synapse bias and the BN shift
``beta - gamma mean / sqrt(var + eps)``) is divided by L: the L sub-step outputs then sum to the
L-level layer's output. The first synapse (input = image, identical at every sub-step) keeps its
bias and BN; the readout is spike-fed, so its bias is divided by L too. With per-step BN (one
BN per step t), sub-step (t, k) uses step t's BN (its shift divided by L likewise). The binary
network's per-step logits therefore sum, over the L*T sub-steps, to the L-level network's logits
summed over T steps, and each layer's binary spikes summed over a window equal its L-level counts.
With theta a power of two, the burst arithmetic (``m - theta`` repeated) is exact in float32;
only the order of the float sums in the T-GIM differs (rounding ~1e-7 relative).

Deviation from DESIGN §1 (``mode="uniform"``)
---------------------------------------------
DESIGN §1 describes a *block-constant* ``Omega' = Omega / L`` (every sub-step of window t gets
``I[t]/L``; ``Omega/L^2`` for the image-fed layer) with the leak at window starts only. That is
Theorem 4.2 (i) of the LM-HT paper, which holds only while ``v in [0, theta)`` and
``I in [0, L theta)``; a trained LM-HT layer leaves that range (learned lambda != 1, negative
currents, clipped levels leave residuals >= theta). Counterexample (L = 2, theta = 1, lambda = 1):
``v = 1.5, I = -1`` gives the M-HT step ``m = 0.5 -> s = 0``, but the uniform IF sub-steps give
``1.5 - 0.5 = 1 >= 1 -> one spike``. The uniform version is kept as ``mode="uniform"`` (it spreads
spikes more evenly, which some chips prefer) but is exact only under the theorem's conditions;
the default exact version above has no such condition.

The converted model is an ordinary :class:`~lmh_deploy.models.SpikingNet` whose neurons are
:class:`~lmh_deploy.neurons.ReparamLMHTNeuron` (fixed Omega', per-step lambda'); it is returned
in eval mode: the equality uses BN running statistics (training-mode BN would recompute batch
statistics over L*T steps). Static inputs ``[B, ...]`` are presented at every sub-step; a frame
sequence ``[T, B, ...]`` must be given with each frame repeated L times
(``frames.repeat_interleave(L, 0)``). Its config records ``reparam`` (source T, L and mode); it is
not rebuilt by :func:`~lmh_deploy.models.build_model` (its neurons have fixed Omega' buffers).
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from .errors import UnsupportedModelError
from .models import SpikingNet, Synapse
from .neurons import LMHTNeuron, ReparamLMHTNeuron

MODES = ("exact", "uniform")


def reparam_omega(omega: torch.Tensor | None, timesteps: int, levels: int, static_input: bool,
                  mode: str = "exact") -> torch.Tensor:
    """Omega' [L*T, L*T] of the binary neuron from the L-level T-GIM ``omega`` [T, T]
    (``None`` = identity, M-HT without T-GIM).

    exact:   ``Omega'[(t,0),(j,k)] = Omega[t,j] / (L if static_input else 1)``, other rows 0.
    uniform: ``Omega'[(t,k),(j,k')] = Omega[t,j] / (L^2 if static_input else L)`` (DESIGN §1).
    """
    _check_mode(mode)
    om = torch.eye(timesteps) if omega is None else omega.detach().to(torch.float32).cpu()
    L = int(levels)
    big = torch.zeros(timesteps * L, timesteps * L)
    if mode == "exact":
        block = om / L if static_input else om
        # row (t, 0) <- Omega[t, j] for every column (j, k)
        big[0::L, :] = block.repeat_interleave(L, dim=1)
    else:
        block = om / (L * L) if static_input else om / L
        big[:, :] = block.repeat_interleave(L, dim=0).repeat_interleave(L, dim=1)
    return big


def reparam_decays(lam: torch.Tensor, timesteps: int, levels: int) -> torch.Tensor:
    """Per-sub-step decays ``lambda'`` [L*T, *lam.shape]: lambda at (t, 0), 1 at (t, k > 0)."""
    lam = lam.detach().to(torch.float32).cpu()
    out = torch.ones((timesteps * levels,) + tuple(lam.shape))
    out[0::levels] = lam
    return out


def binarize_neuron(neuron: LMHTNeuron, static_input: bool = False,
                    mode: str = "exact") -> ReparamLMHTNeuron:
    """The binary neuron over L*T sub-steps equivalent to one L-level LM-HT layer.

    ``static_input``: the layer's input is the image presented at every sub-step (first layer)
    rather than spikes. The hybrid first-layer gain is folded into Omega'.
    """
    if not isinstance(neuron, LMHTNeuron):
        raise UnsupportedModelError(
            f"binarize_neuron needs an LMHTNeuron, got {type(neuron).__name__}; only LM-HT has levels to binarize")
    T, L = neuron.timesteps, neuron.levels
    omega = reparam_omega(neuron.omega(), T, L, static_input, mode) * float(neuron.gain)
    lam = reparam_decays(neuron.lam(), T, L)
    out = ReparamLMHTNeuron(omega, lam, float(neuron.theta), v0_frac=neuron.v0_frac)
    return out.to(neuron.theta.device)


def _expand_per_step_bn(syn: Synapse, levels: int) -> None:
    """Per-step BN (a ``steps`` list with one BN per window t): sub-step (t, k) uses window t's
    BN, so the list becomes ``[bn_0] * L + [bn_1] * L + ...`` (independent copies)."""
    steps = getattr(syn.bn, "steps", None)
    if isinstance(steps, nn.ModuleList):
        syn.bn.steps = nn.ModuleList(copy.deepcopy(bn) for bn in steps for _ in range(levels))


def _scale_constant(syn: Synapse, factor: float) -> None:
    """Multiply a synapse's constant term (layer bias and BN shift) by ``factor``, in place.

    BN (eval) ``y = gamma (x - mean)/sqrt(var + eps) + beta``: scaling ``mean`` and ``beta`` by f
    scales its shift ``beta - gamma mean / sqrt(var + eps)`` by f and keeps its slope.
    """
    with torch.no_grad():
        if getattr(syn.layer, "bias", None) is not None:
            syn.layer.bias.mul_(factor)
        if syn.bn is None:
            return
        steps = getattr(syn.bn, "steps", None)
        for bn in (steps if isinstance(steps, nn.ModuleList) else [syn.bn]):
            if not bn.track_running_stats or bn.running_mean is None:
                raise UnsupportedModelError(
                    "binarize_lmht needs BatchNorm with running statistics (eval-mode BN); "
                    "build the model with track_running_stats=True")
            bn.running_mean.mul_(factor)
            if bn.affine:
                bn.bias.mul_(factor)


def binarize_lmht(model: SpikingNet, mode: str = "exact") -> SpikingNet:
    """Convert an L-level LM-HT network over T steps into a binary (L = 1) network over L*T
    steps with the same summed logits (see the module docstring for the construction).

    Returns a new model in eval mode; ``model`` is not modified. Its per-step logits are
    ``[L*T, B, K]``; their sum over steps equals the L-level model's per-step logits summed over
    T steps (eval mode), and every neuron layer's binary spikes summed over each window of L
    sub-steps equal the L-level spike counts (``mode="exact"``).
    """
    _check_mode(mode)
    if not isinstance(model, SpikingNet):
        raise UnsupportedModelError(f"binarize_lmht needs a SpikingNet, got {type(model).__name__}")
    neurons = {n.name: model.layers[n.name] for n in model.nodes if n.kind == "neuron"}
    bad = sorted({type(m).__name__ for m in neurons.values() if not isinstance(m, LMHTNeuron)})
    if bad or not neurons:
        raise UnsupportedModelError(
            f"binarize_lmht needs an LM-HT model; this one has neuron layers {bad or 'none'} "
            "(train with --neuron lmht)")
    grid = {(m.timesteps, m.levels) for m in neurons.values()}
    if len(grid) != 1:
        raise UnsupportedModelError(
            f"binarize_lmht needs one (T, L) for all LM-HT layers, got {sorted(grid)}")
    (T, L), = grid

    new = copy.deepcopy(model).eval()
    # "static": constant within a window (the image, or affine maps of it);
    # "spike": its L sub-steps sum to the L-level value.
    kind = {"input": "static"}
    for node in new.nodes:
        ins = [kind[i] for i in node.inputs]
        if node.kind == "add":
            if ins[0] != ins[1]:
                raise UnsupportedModelError(
                    f"binarize_lmht cannot binarize {node.name!r}: it adds an image-fed current to a "
                    "spike-fed one; put a neuron layer before the add")
            kind[node.name] = ins[0]
        elif node.kind == "neuron":
            new.layers[node.name] = binarize_neuron(neurons[node.name], ins[0] == "static", mode)
            kind[node.name] = "spike"
        elif node.kind == "synapse":
            _expand_per_step_bn(new.layers[node.name], L)
            if ins[0] == "spike":
                _scale_constant(new.layers[node.name], 1.0 / L)
            kind[node.name] = ins[0]
        elif node.kind in ("avgpool", "flatten"):
            kind[node.name] = ins[0]
        else:  # pragma: no cover - models.py node kinds are covered above
            raise UnsupportedModelError(f"binarize_lmht: unsupported node kind {node.kind!r}")

    new.timesteps = T * L
    cfg = copy.deepcopy(model.config)
    cfg["timesteps"] = T * L
    cfg["neuron"] = dict(cfg.get("neuron", {}), levels=1)
    cfg["reparam"] = {"source_timesteps": T, "source_levels": L, "mode": mode}
    new.config = cfg
    return new


def window_counts(spikes: torch.Tensor, levels: int) -> torch.Tensor:
    """Binary spikes [L*T, ...] -> per-window counts [T, ...] (sum over each window's L sub-steps)."""
    lt = spikes.shape[0]
    if lt % levels:
        raise ValueError(f"{lt} sub-steps are not a whole number of windows of L={levels}")
    return spikes.reshape((lt // levels, levels) + tuple(spikes.shape[1:])).sum(1)


def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"unknown reparameterization mode {mode!r}; choose one of {', '.join(MODES)}")


__all__ = ["binarize_lmht", "binarize_neuron", "reparam_omega", "reparam_decays", "window_counts",
           "MODES"]

