"""Import LM-HT networks trained with https://github.com/hzc1208/LMHT_SNN (NeurIPS 2024).

Two training routes in their code, told apart by the checkpoint's key layout (``--mode auto``):

* **direct** (``main.py``): models/ResNet.py, models/VGG.py; every ReLU becomes
  ``LMHTNeuron(L, T, th=2/L, inital_mem=0)`` (``IFNeuron`` for L = 1); conv + BN share one
  SpikingJelly ``SeqToANNContainer`` (keys ``...module.0.weight``, ``...module.1.running_mean``).
* **hybrid** (``hybrid_train.py``): ann_models/ (ResNet-20, VGG-13/16) trained with QCFS, every
  layer wrapped alone (keys ``...module.running_mean``), QCFS -> IF (T=16) ->
  ``LMHTNeuron(L, T, th=QCFS threshold, inital_mem=0.5)``; for ResNet-20 and VGG-16 (not VGG-13)
  the first neuron layer's input is multiplied by L (``.scale = thre_level``).

What carries over (DESIGN §1, LM-HT):

* ``alpha`` ([1]) is the raw decay ``a`` (``λ = σ(a) + 0.5``); ``mask`` (T, T, 1, 1, 1, 1) is the
  raw T-GIM ``M`` of a conv neuron layer, ``mask_linear`` that of a linear one
  (``Ω[t, j] = (2 σ(M[t, j])) / T``); the unused one of each layer is dropped. Their
  ``mask_linear`` shape (T, T, 1, 1, 1) broadcasts wrongly against [T, B, F] in their forward (a
  hidden Linear neuron layer returns [T, T, B, F] there); we read it as the intended
  ``I[t] = Σ_j Ω[t, j] x[j]``, which is what the (T, T, 1, 1) shape of the commented-out line
  beside it computes; both shapes are accepted;
* ``v_threshold`` is theta (2/L in direct training, checked; the QCFS threshold in hybrid);
* v(0) = 0 (direct) or theta/2 (hybrid); the hybrid first-layer gain; L from ``--levels``
  (their ``--thre_level``; in direct mode it follows from theta = 2/L if not given);
* time-major layout [T, B, ...] with the same input at every step, one BN over T*B (tdBN):
  ours; T is the size of ``mask``.
"""
from __future__ import annotations

import torch

from ..models import build_model
from .common import (ForeignCheckpointError, ImportResult, collect_layers, finish, load_foreign,
                     map_layers, parse_shape)

#: (their --net_arch, mode) -> (our arch, channel count of the stem conv at width 1)
ARCHS = {
    ("resnet18", "direct"): ("ref-resnet18", 64),
    ("resnet19", "direct"): ("ref-resnet19", 64),
    ("resnet34", "direct"): ("ref-resnet34", 64),
    ("vgg13", "direct"): ("ref-vgg13-lmht", 64),
    ("cifarnet", "direct"): ("ref-cifarnet", 128),
    ("resnet20", "hybrid"): ("ref-resnet20", 16),
    ("vgg13", "hybrid"): ("ref-vgg13", 64),
    ("vgg16", "hybrid"): ("ref-vgg16", 64),
}
#: hybrid_train.py multiplies the first neuron layer's input by L for these only
HYBRID_GAIN_ARCHS = ("resnet20", "vgg16")
UNSUPPORTED = {
    "ms_resnet18": "MS-ResNet blocks put the neuron before the conv and add currents",
    "ms_resnet34": "MS-ResNet blocks put the neuron before the conv and add currents",
    "spikformer": "spiking self-attention has no counterpart here",
}
HINT = "LMHT_SNN neurons have alpha and mask; STBP_LMH ones alpha_1 .. beta_2: check --from"
NEURON_TYPES = {
    # ``core``: their forward assigns ``self.core = self.mask`` (or ``mask_linear``), which
    # registers the same tensor once more; present in every checkpoint saved after a forward
    "lmht": (("v_threshold", "alpha", "mask", "mask_linear"), ("core",)),
    "if": (("v_threshold",), ()),
}


def _detect_mode(sd: dict) -> str:
    return "hybrid" if any(k.endswith(".module.running_mean") for k in sd) else "direct"


def _omega_raw(t: torch.Tensor, timesteps: int, key: str) -> torch.Tensor:
    if t.shape[:2] != (timesteps, timesteps) or t.numel() != timesteps * timesteps:
        raise ForeignCheckpointError(f"{key} has shape {tuple(t.shape)}; expected ({timesteps}, "
                                     f"{timesteps}, 1, ...)")
    return t.reshape(timesteps, timesteps)


def import_lmht_snn(path, arch: str, timesteps: int | None = None, levels: int | None = None,
                    mode: str = "auto", input_shape="3,32,32", first_gain: float | None = None) -> ImportResult:
    """Import an LMHT_SNN checkpoint of network ``arch`` (their ``--net_arch``).

    ``levels``: L (their ``--thre_level``; required for hybrid checkpoints); ``timesteps``:
    checked against the T-GIM size (required for L = 1, whose IF neurons store no T);
    ``mode``: auto | direct | hybrid; ``first_gain``: override of the hybrid first-layer gain.
    Returns an :class:`ImportResult`. Raises ``ForeignCheckpointError``."""
    if arch in UNSUPPORTED:
        raise ForeignCheckpointError(f"--arch {arch} is not supported: {UNSUPPORTED[arch]}")
    shape = parse_shape(input_shape)
    sd = load_foreign(path)
    detected = _detect_mode(sd)
    if mode == "auto":
        mode = detected
    elif mode not in ("direct", "hybrid"):
        raise ForeignCheckpointError(f"unknown --mode {mode!r}; choose auto, direct or hybrid")
    elif mode != detected:
        raise ForeignCheckpointError(f"--mode {mode} but the keys are laid out as in "
                                     f"{'hybrid_train.py' if detected == 'hybrid' else 'main.py'} "
                                     f"({detected}); drop --mode")
    if (arch, mode) not in ARCHS:
        ok = ", ".join(a for a, m in ARCHS if m == mode)
        raise ForeignCheckpointError(f"unknown --arch {arch!r} for a {mode} lmht-snn checkpoint; "
                                     f"choose one of {ok}")
    layers, _ = collect_layers(sd, NEURON_TYPES, hint=HINT)
    neurons = [lay for lay in layers if lay.kind == "neuron"]
    syn = [lay for lay in layers if lay.kind != "neuron"]
    if not syn or not neurons:
        raise ForeignCheckpointError(f"{path}: no conv/linear or no neuron layers; is it an "
                                     f"LMHT_SNN SNN checkpoint?")
    kinds = {lay.neuron for lay in neurons}
    if len(kinds) > 1:
        raise ForeignCheckpointError("the checkpoint mixes LMHTNeuron and IFNeuron layers")
    is_if = kinds == {"if"}
    if syn[0].tensors["weight"].shape[-1] == 7:
        raise ForeignCheckpointError("this is their ImageNet variant (7x7 stem + 3x3 max pool), "
                                     "which has no exact spiking fold here; not supported")
    thetas = [lay.tensors["v_threshold"].reshape(-1) for lay in neurons]
    if any(th.numel() != 1 for th in thetas):
        raise ForeignCheckpointError("v_threshold must be one value per layer")
    if is_if:
        if levels not in (None, 1):
            raise ForeignCheckpointError(f"--levels {levels} but the layers are IFNeurons (L = 1)")
        levels = 1
        if timesteps is None:
            raise ForeignCheckpointError("IF neurons (L = 1) do not store T; pass --timesteps "
                                         "(their --time_step)")
        t = int(timesteps)
    else:
        alpha = [lay.tensors["alpha"] for lay in neurons]
        if any(a.numel() != 1 for a in alpha):
            raise ForeignCheckpointError("alpha has more than one value: this is their "
                                         "LMHT_Inference_Neuron (binarized at run time), not a "
                                         "training checkpoint")
        t = int(neurons[0].tensors["mask"].shape[0])
        if timesteps is not None and int(timesteps) != t:
            raise ForeignCheckpointError(f"--timesteps {timesteps} but the T-GIM (mask) is {t}x{t}")
        if levels is None:
            if mode == "hybrid":
                raise ForeignCheckpointError("hybrid checkpoints do not store L; pass --levels "
                                             "(their --thre_level)")
            levels = round(2.0 / float(thetas[0]))
    levels = int(levels)
    if mode == "direct":
        want = torch.tensor([1.0 if is_if else 2.0 / levels], dtype=torch.float32)
        bad = [lay.prefix for lay, th in zip(neurons, thetas) if not torch.equal(th.float(), want)]
        if bad:
            raise ForeignCheckpointError(
                f"v_threshold of {bad[0]} is {float(thetas[0]):g}, not 2/L = {float(want):g} of "
                f"direct training with --levels {levels}; check --levels")
    our_arch, stem = ARCHS[(arch, mode)]
    gain = 1.0
    if mode == "hybrid":
        gain = float(levels) if first_gain is None and arch in HYBRID_GAIN_ARCHS else \
            float(first_gain if first_gain is not None else 1.0)
    elif first_gain is not None:
        gain = float(first_gain)
    width = syn[0].tensors["weight"].shape[0] / stem
    ncfg = {"kind": "lmht", "levels": levels, "v0_frac": 0.5 if mode == "hybrid" else 0.0,
            "learn_omega": not is_if}
    if mode == "direct":
        ncfg["theta"] = 1.0 if is_if else 2.0 / levels
    cfg = {"arch": our_arch, "timesteps": t, "num_classes": int(syn[-1].tensors["weight"].shape[0]),
           "input_shape": list(shape), "bn": "tdbn", "width": width, "neuron": ncfg}
    try:
        model = build_model(cfg)
    except (ValueError, AssertionError, RuntimeError) as e:
        raise ForeignCheckpointError(f"--arch {arch} cannot be built at input shape {shape} "
                                     f"({e}); check --input-shape") from None
    linear_in = {n.name: model.nodes[[m.name for m in model.nodes].index(n.inputs[0])].attrs.get("op")
                 for n in model.nodes if n.kind == "neuron"}

    def neuron_state(lay, name, mod, i):
        out = {"theta": lay.tensors["v_threshold"].reshape(()),
               "gain": torch.tensor(gain if i == 0 else 1.0)}
        if not is_if:
            key = "mask_linear" if linear_in[name] == "linear" else "mask"
            out["a"] = lay.tensors["alpha"].reshape(())
            out["M"] = _omega_raw(lay.tensors[key], t, f"{lay.prefix}.{key}")
            core = lay.tensors.get("core")
            if core is not None and not torch.equal(core.reshape(-1), lay.tensors[key].reshape(-1)):
                raise ForeignCheckpointError(
                    f"{lay.prefix}.core differs from {lay.prefix}.{key}, the T-GIM a "
                    f"{linear_in[name] or 'conv'} layer uses; check --arch")
        return out

    neuron_map = finish(model, map_layers(model, layers, neuron_state, arch))
    info = {"imported_from": "lmht-snn", "source_file": str(path), "source_arch": arch,
            "mode": mode, "levels": levels, "first_layer_gain": gain,
            "conventions": {"v0": "theta/2" if mode == "hybrid" else 0.0,
                            "theta": "QCFS threshold per layer" if mode == "hybrid" else "2/L",
                            "omega": "(2*sigmoid(M))/T", "spike": "cascade m >= k*theta, k=1..L",
                            "layout": "time-major [T, B, ...], one BN over T*B",
                            "mask_linear": "read as the intended per-step T-GIM"},
            "neuron_layers": len(neurons)}
    return ImportResult(model, info, neuron_map)
