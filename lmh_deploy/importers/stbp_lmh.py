"""Import LM-H networks trained with https://github.com/hzc1208/STBP_LMH (ICLR 2024).

Their code (``main.py``): an ANN whose ReLUs become QCFS, then ``replace_QCFS_by_Lneuron`` puts a
``LearnableNeuron`` (or ``OnlineNeuron``, time-slicing mode; same parameters) in place of each
activation and trains with STBP; ``torch.save(model.state_dict(), ...)`` writes the checkpoint.

What carries over (DESIGN §1, LM-H):

* per layer ``alpha_1, beta_1, alpha_2, beta_2`` (shape [1]) are the raw ``x_mu_D, x_mu_S,
  x_lambda_S, x_lambda_D`` of Eq. 4 -- their update is ``v_d = (σ(alpha_1)-.5) v_d +
  (σ(beta_1)-.5) v_s + x``, ``v_s = (σ(alpha_2)+.5) v_s + (σ(beta_2)+.5) v_d``; shape [T] (the
  per-step variant commented out in their modules.py) imports as radical LM-H (Eq. 7);
* ``v_threshold`` (the QCFS threshold ``up`` it was converted from) is the layer's theta;
* initial state ``v_D = 0, v_S = theta/2``, firing ``v_s - theta >= 0``, soft reset: ours;
* BN: plain ``BatchNorm2d`` applied per step, or ``TEBN`` (``--use_TEBN``: a ``BatchNorm3d``
  over [B, C, T, H, W] under ``.bn``, its ``p`` unused by their forward) -- both are one BN
  shared by all steps at inference, our ``bn="tdbn"``; the layout is detected from the keys and
  recorded;
* max pools were replaced by average pools (``replace_maxpool2d_by_avgpool2d``), as ours;
* pruned networks (``--pruning``, ``PConv``): weights are mapped ``sign(w) relu(|w| - d)`` with
  ``--flat-width d`` (their ``--flat_width``, default 0.2: the width at the end of training and
  the one their ``--direct_inference`` evaluates with); their pruned Linear layers are bias-free
  1x1 convolutions.

T is not stored in their checkpoint: ``--timesteps`` (their ``--time_step``, default 4).
"""
from __future__ import annotations

from ..models import build_model
from .common import (ForeignCheckpointError, ImportResult, collect_layers, finish, load_foreign,
                     map_layers, parse_shape)

#: their --net_arch -> (our arch, channel count of the stem conv at width 1)
ARCHS = {
    "resnet18": ("ref-resnet18", 64),
    "resnet19": ("ref-resnet19", 64),
    "resnet20": ("ref-resnet20", 16),
    "resnet34": ("ref-resnet34", 64),
    "vgg11": ("ref-vgg11", 64),
    "vgg13": ("ref-vgg13", 64),
    "vgg16": ("ref-vgg16", 64),
    "vgg19": ("ref-vgg19", 64),
}
#: their architectures we do not import, and why
UNSUPPORTED = {
    "wideresnet19": "its classifier stacks two Linear layers without a neuron between them",
    "vggdvs": "its classifier ends in an AvgPool1d voting layer",
    "cifarnet": "its classifier ends in a voting layer behind a neuron layer",
    "spiking-resnet18": "SEW/spiking ResNets run their own time-major blocks",
    "sew-resnet34": "SEW ResNets add spikes (connect_f) outside a neuron",
}
HINT = "STBP_LMH neurons have alpha_1, beta_1, alpha_2, beta_2; LMHT_SNN ones alpha and mask: check --from"
NEURON_TYPES = {"lmh": (("v_threshold", "alpha_1", "beta_1", "alpha_2", "beta_2"), ())}


def _is_tebn_p(g) -> bool:
    return set(g.leaves) == {"p"}


def import_stbp_lmh(path, arch: str, timesteps: int | None = None, input_shape="3,32,32",
                    flat_width: float | None = None) -> ImportResult:
    """Import an STBP_LMH checkpoint of network ``arch`` (their ``--net_arch``).

    ``timesteps``: the T it was trained with (default 4, theirs); ``input_shape``: C,H,W of the
    inputs (their normalized images; default CIFAR's 3,32,32); ``flat_width``: the pruning width
    of a ``--pruning`` checkpoint (default 0.2 when the keys show pruned layers). Returns an
    :class:`ImportResult` (our model in eval mode). Raises ``ForeignCheckpointError``."""
    if arch in UNSUPPORTED:
        raise ForeignCheckpointError(f"--arch {arch} is not supported: {UNSUPPORTED[arch]}; "
                                     f"supported: {', '.join(ARCHS)}")
    if arch not in ARCHS:
        raise ForeignCheckpointError(f"unknown --arch {arch!r} for stbp-lmh; choose one of "
                                     f"{', '.join(ARCHS)}")
    shape = parse_shape(input_shape)
    sd = load_foreign(path)
    layers, notes = collect_layers(sd, NEURON_TYPES, ignore=_is_tebn_p, hint=HINT)
    layout = "tebn" if notes.get("ignored") else "per-step"
    syn = [lay for lay in layers if lay.kind != "neuron"]
    neurons = [lay for lay in layers if lay.kind == "neuron"]
    if not syn or not neurons:
        raise ForeignCheckpointError(f"{path}: no conv/linear or no LM-H neuron layers; is it an "
                                     f"STBP_LMH SNN checkpoint?")
    pruned = syn[-1].kind == "conv" and tuple(syn[-1].tensors["weight"].shape[2:]) == (1, 1) \
        and "bias" not in syn[-1].tensors
    if pruned:
        syn[-1].kind = "linear"
        flat_width = 0.2 if flat_width is None else float(flat_width)
    elif flat_width is not None:
        raise ForeignCheckpointError("--flat-width is for checkpoints of --pruning runs; this "
                                     "one has no pruned (PConv) layers")
    per_step = neurons[0].tensors["alpha_1"].numel()
    if any(lay.tensors[k].numel() != per_step for lay in neurons
           for k in NEURON_TYPES["lmh"][0][1:]):
        raise ForeignCheckpointError("neuron parameters of different sizes across layers; "
                                     "expected one scalar (or one per step) each")
    if per_step > 1:  # the per-step variant (their commented-out lines): radical LM-H
        if timesteps is not None and timesteps != per_step:
            raise ForeignCheckpointError(f"--timesteps {timesteps} but the neuron parameters "
                                         f"have {per_step} steps")
        timesteps = per_step
    t = int(timesteps or 4)
    our_arch, stem = ARCHS[arch]
    width = syn[0].tensors["weight"].shape[0] / stem
    w_last = syn[-1].tensors["weight"]
    cfg = {"arch": our_arch, "timesteps": t, "num_classes": int(w_last.shape[0]),
           "input_shape": list(shape), "bn": "tdbn", "width": width,
           "neuron": {"kind": "lmh-radical" if per_step > 1 else "lmh", "theta": 1.0}}
    try:
        model = build_model(cfg)
    except (ValueError, AssertionError, RuntimeError) as e:
        raise ForeignCheckpointError(f"--arch {arch} cannot be built at input shape {shape} "
                                     f"({e}); check --input-shape") from None

    def neuron_state(lay, name, mod, i):
        shape_ = tuple(mod.x_mu_d.shape)
        raw = {"x_mu_d": "alpha_1", "x_mu_s": "beta_1", "x_lam_s": "alpha_2", "x_lam_d": "beta_2"}
        out = {ours: lay.tensors[theirs].reshape(shape_) for ours, theirs in raw.items()}
        out["theta"] = lay.tensors["v_threshold"].reshape(())
        return out

    neuron_map = finish(model, map_layers(model, layers, neuron_state, arch,
                                          prune_width=flat_width if pruned else None))
    thetas = [float(lay.tensors["v_threshold"].reshape(-1)[0]) for lay in neurons]
    info = {"imported_from": "stbp-lmh", "source_file": str(path), "source_arch": arch,
            "layout": layout, "pruned_flat_width": flat_width if pruned else None,
            "conventions": {"v_d0": 0.0, "v_s0": "theta/2", "spike": "v_s - theta >= 0",
                            "reset": "soft (v_s -= theta*s)", "bn": "one BN shared by all steps",
                            "timesteps_from": "--timesteps" if per_step == 1 else "parameters"},
            "theta_range": [min(thetas), max(thetas)], "neuron_layers": len(neurons)}
    return ImportResult(model, info, neuron_map)
