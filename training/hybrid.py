"""Hybrid training, stage 2: convert a QCFS ANN into an LM-H or LM-HT SNN (DESIGN §1).

Stage 1 is an ordinary training run of the same architecture with the QCFS activation in
place of every neuron (:func:`ann_config`; one step, ``T = 1``). :func:`convert` then builds
the SNN and copies, layer by layer (LM-H paper Alg. 1; LM-HT paper Alg. 1):

* every synapse weight, bias and BN tensor;
* ``theta = vartheta`` (the layer's learned QCFS threshold) as the neuron's fixed threshold;
* the identity initialization: LM-H raw parameters 0 (``mu_D = mu_S = 0``, ``lambda = 1``,
  ``v_D(0) = 0``, ``v_S(0) = theta/2``: the soft-reset IF neuron QCFS models); LM-HT ``a = 0``
  (``lambda = 1``), ``M = 0`` (``Omega = 1/T``), ``v(0) = theta/2`` (``v0_frac = 0.5``);
* LM-HT only: ``gain = L`` on the first neuron layer's input current (``I <- L*I``).

**LM-HT and biases (our addition, stated).** Theorem 4.4 needs every layer's current to be L
times the ANN's pre-activation (``sum_t I(t) / (LT) = W r``). An LM-HT layer emits up to L
spikes of height theta per step, so its output is L times the QCFS activation and the next
layer's *weights* scale by L for free -- but an additive bias or BN shift does not. So
``convert`` also multiplies every hidden synapse's bias by L and rescales each BN so that its
output is exactly L times the ANN's in train and eval mode (``gamma, beta, running_mean <- L *``,
``running_var <- L^2 *``), and divides the readout weights by L so the SNN's logits equal the
ANN's in expectation. For a bias-free, BN-free network this is exactly the paper's map.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from lmh_deploy.models import SpikingNet, Synapse, build_model
from lmh_deploy.neurons import QCFS, LMHNeuron, LMHTNeuron

HYBRID_KINDS = ("lmh", "lmh-radical", "lmht")


from lmh_deploy.errors import HybridError  # noqa: E402,F401


def ann_config(config: dict, tq: int = 8, threshold: float = 8.0) -> dict:
    """The QCFS ANN config of an SNN config: same arch, neuron -> QCFS(T_q), one step."""
    cfg = copy.deepcopy(config)
    cfg["neuron"] = {"kind": "qcfs", "tq": int(tq), "theta": float(threshold)}
    cfg["timesteps"] = 1
    return cfg


def snn_config(ann_cfg: dict, kind: str, timesteps: int, levels: int = 2,
               per_channel: bool = False) -> dict:
    """The SNN config a QCFS ANN converts into (records where it came from under ``hybrid``)."""
    if kind not in HYBRID_KINDS:
        raise HybridError(f"hybrid conversion targets {', '.join(HYBRID_KINDS)}, not {kind!r}")
    cfg = copy.deepcopy(ann_cfg)
    tq = ann_cfg["neuron"].get("tq", 8)
    n = {"kind": kind}
    if per_channel:
        n["per_channel"] = True
    if kind == "lmht":
        n.update({"levels": int(levels), "v0_frac": 0.5})
    cfg["neuron"] = n
    cfg["timesteps"] = int(timesteps)
    cfg["hybrid"] = {"from": "qcfs", "tq": int(tq)}
    return cfg


def _scale_synapse(syn: Synapse, k: float) -> None:
    """Make ``syn(k * x) == k * syn(x)`` for the synapse's affine part (bias / BN shift)."""
    with torch.no_grad():
        if syn.layer.bias is not None:
            syn.layer.bias.mul_(k)
        bn = syn.bn
        if bn is not None:
            if bn.weight is not None:
                bn.weight.mul_(k)
                bn.bias.mul_(k)
            else:  # pragma: no cover - affine=False BN cannot express the shift scaling
                raise HybridError("LM-HT conversion needs affine BatchNorm (affine=False found)")
            if bn.running_mean is not None:
                bn.running_mean.mul_(k)
                bn.running_var.mul_(k * k)  # eps stays (not in the state dict): O(eps/var) off


def convert(ann: SpikingNet, kind: str = "lmh", timesteps: int | None = None, levels: int = 2,
            per_channel: bool = False) -> SpikingNet:
    """QCFS ANN -> LM-H / LM-HT SNN at the identity initialization (see the module docstring).

    ``timesteps`` defaults to the ANN's ``T_q`` (LM-H paper: T = L_q at this stage).
    """
    neurons = [n.name for n in ann.nodes if n.kind == "neuron"]
    if not neurons or not all(isinstance(ann.layers[n], QCFS) for n in neurons):
        raise HybridError("convert() needs a QCFS ANN (every neuron node a QCFS activation); build it "
                          "with hybrid.ann_config(...) and train it first")
    tq = ann.config["neuron"].get("tq", 8)
    cfg = snn_config(ann.config, kind, timesteps or tq, levels, per_channel)
    snn = build_model(cfg)
    # copy every synapse (weights, biases, BN affine and running stats)
    src = {k: v for k, v in ann.state_dict().items() if k.split(".")[1] not in neurons}
    missing, unexpected = snn.load_state_dict(src, strict=False)
    if unexpected or any(k.split(".")[1] not in neurons for k in missing):
        raise HybridError(f"architecture mismatch between ANN and SNN: missing={missing}, "
                          f"unexpected={unexpected}")
    for i, name in enumerate(neurons):
        theta = float(ann.layers[name].threshold.detach())
        if not theta > 0:
            raise HybridError(f"QCFS threshold of {name} is {theta}; a neuron threshold must be > 0")
        snn.layers[name].theta.fill_(theta)
    if kind == "lmht":
        lv = float(levels)
        snn.layers[neurons[0]].gain.fill_(lv)
        first_syn = _synapses_before(snn, neurons[0])
        for node in snn.nodes:
            if node.kind != "synapse" or node.name in first_syn:
                continue
            if node.name == snn.output_name:
                with torch.no_grad():
                    snn.layers[node.name].layer.weight.div_(lv)
            else:
                _scale_synapse(snn.layers[node.name], lv)
    return snn


def _synapses_before(model: SpikingNet, neuron: str) -> set:
    """Synapse nodes on the paths from the input to ``neuron`` (they see the raw image)."""
    by_name = {n.name: n for n in model.nodes}
    out, stack = set(), [neuron]
    while stack:
        n = by_name.get(stack.pop())
        if n is None:
            continue
        if n.kind == "synapse":
            out.add(n.name)
        stack.extend(n.inputs)
    return out


def identity_check(snn: SpikingNet) -> dict:
    """The identity-init facts of a freshly converted SNN, for logs and tests."""
    out = {}
    for name in snn.neuron_names():
        m = snn.layers[name]
        d = {"theta": float(m.theta)}
        if isinstance(m, LMHNeuron):
            d.update({k: float(v.detach().abs().max()) for k, v in
                      zip(("mu_d", "mu_s", "lam_s_minus_1", "lam_d_minus_1"),
                          (lambda e: (e[0], e[1], e[2] - 1, e[3] - 1))(m.evaluated()))})
        elif isinstance(m, LMHTNeuron):
            d.update({"lam_minus_1": float((m.lam() - 1).detach().abs().max()), "gain": float(m.gain),
                      "v0_frac": m.v0_frac})
        out[name] = d
    return out


__all__ = ["HYBRID_KINDS", "HybridError", "ann_config", "snn_config", "convert", "identity_check"]
