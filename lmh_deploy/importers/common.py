"""Shared machinery of the importers: safe loading of a foreign checkpoint, grouping its keys into
layers, and mapping them one by one onto a :class:`~lmh_deploy.models.SpikingNet`.

The reference code's networks are plain ``nn.Module`` trees whose ``state_dict`` lists modules in
registration order, which for every supported architecture is our graph's node order
(conv -> BN -> neuron, a residual block's shortcut after its second conv, the block's neuron
last). So a checkpoint is read as a sequence of layers -- *synapse* (a conv / linear ``weight``
with optional ``bias``, and the BN right after it) or *neuron* -- and paired with our model's
synapse and neuron nodes in order, every tensor shape checked.
"""
from __future__ import annotations

import pickle
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..errors import ForeignCheckpointError, LmhError

BN_LEAVES = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
MAX_LISTED = 6


@dataclass
class Group:
    """The tensors of one module: ``prefix`` (``conv2_x.0.residual_function.0``) and its leaves."""

    prefix: str
    leaves: dict


@dataclass
class Layer:
    """One layer of the foreign network: a synapse (``kind`` conv | linear, with ``bn``) or a
    neuron (``kind`` neuron, ``neuron`` = its type name given by the importer)."""

    kind: str
    prefix: str
    tensors: dict
    bn: Group | None = None
    neuron: str | None = None


@dataclass
class ImportResult:
    """What an importer returns: our model (eval mode), provenance for the checkpoint's
    ``train_config``, and the map from their neuron module names to our neuron node names."""

    model: torch.nn.Module
    info: dict
    neuron_map: dict = field(default_factory=dict)


def _listing(keys) -> str:
    keys = list(keys)
    more = f" (+{len(keys) - MAX_LISTED} more)" if len(keys) > MAX_LISTED else ""
    return ", ".join(keys[:MAX_LISTED]) + more


def load_foreign(path) -> dict:
    """Load a foreign checkpoint with ``torch.load(weights_only=True)`` (tensors and plain
    containers only: pickled code is never executed) and return its state dict.

    Accepted layouts: a bare ``state_dict`` (STBP_LMH saves ``model.state_dict()``), or a dict with
    the state dict under ``"model"`` (LMHT_SNN's ``{'model', 'optimizer', 'scheduler', 'epoch',
    'max_acc1'}``) or ``"state_dict"``. A ``module.`` prefix (DistributedDataParallel) is removed.
    Raises :class:`ForeignCheckpointError` naming the file and the problem."""
    path = Path(path)
    if not path.is_file():
        raise ForeignCheckpointError(f"{path}: no such file")
    with open(path, "rb") as f:
        head = f.read(2)
    if not zipfile.is_zipfile(path) and head[:1] != b"\x80":  # neither torch.save format
        raise ForeignCheckpointError(f"{path}: not a readable torch checkpoint (neither a torch zip "
                                     f"archive nor a pickle); give the .pth file the original "
                                     f"code saved")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "unsupported global" not in str(e).lower():  # garbage, not a refused object
            raise ForeignCheckpointError(f"{path}: not a readable torch checkpoint (UnpicklingError); "
                                         f"give the .pth file the original code saved") from None
        raise ForeignCheckpointError(
            f"{path}: holds pickled Python objects beyond tensors and plain containers, which "
            f"lmh-import does not execute; re-save it with torch.save(model.state_dict(), ...)") from None
    except Exception as e:  # noqa: BLE001 - torch.load raises many types on garbage input
        raise ForeignCheckpointError(f"{path}: not a readable torch checkpoint ({type(e).__name__}); "
                                     f"give the .pth file the original code saved") from None
    if isinstance(obj, dict) and obj.get("format") == "lmh-deploy/checkpoint":
        raise ForeignCheckpointError(f"{path}: already an lmh-deploy checkpoint; use it directly "
                                     f"(lmh-export / lmh-run), no import needed")
    sd = obj
    if isinstance(obj, dict):
        for k in ("model", "state_dict"):
            if isinstance(obj.get(k), dict):
                sd = obj[k]
                break
    if not isinstance(sd, dict) or not sd or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in sd.items()):
        raise ForeignCheckpointError(
            f"{path}: not a state dict (expected a dict of tensors, or one under 'model'); "
            f"give the .pth file the original code saved")
    if all(k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    return sd


def group_keys(sd: dict) -> list[Group]:
    """Group ``prefix.leaf`` keys by prefix, in the order of first appearance."""
    groups: dict[str, Group] = {}
    for key, value in sd.items():
        prefix, _, leaf = key.rpartition(".")
        groups.setdefault(prefix, Group(prefix, {})).leaves[leaf] = value
    return list(groups.values())


def _neuron_type(leaves: set, neuron_types: dict):
    """The neuron type of a group: the first whose leaves it has exactly (required ones, plus
    optional ones); else the type sharing the most of its required leaves (so that the error
    names the missing ones); None if it shares none."""
    for n, (req, opt) in neuron_types.items():
        if set(req) <= leaves <= set(req) | set(opt):
            return n
    best, score = None, 0
    for n, (req, opt) in neuron_types.items():
        k = len(leaves & set(req))
        if k > score:
            best, score = n, k
    return best


def collect_layers(sd: dict, neuron_types: dict, ignore=None, hint: str = "") -> tuple[list[Layer], dict]:
    """Read the state dict as a sequence of :class:`Layer` s.

    ``neuron_types``: type name -> (required leaves, optional leaves) (see :func:`_neuron_type`).
    ``ignore(group) -> bool`` marks groups that are read but carry nothing (TEBN's unused ``p``);
    ``hint`` ends the error message when neuron keys are wrong (which --from fits). Returns ``(layers, notes)``; raises one :class:`ForeignCheckpointError` listing every
    unknown and missing key."""
    unknown, missing, layers = [], [], []
    notes: dict = {}
    for g in group_keys(sd):
        leaves = set(g.leaves)
        if ignore is not None and ignore(g):
            notes.setdefault("ignored", []).append(g.prefix)
            continue
        ntype = _neuron_type(leaves, neuron_types)
        if ntype is not None:
            req, opt = neuron_types[ntype]
            unknown += [f"{g.prefix}.{k}" for k in sorted(leaves - set(req) - set(opt))]
            missing += [f"{g.prefix}.{k}" for k in req if k not in leaves]
            layers.append(Layer("neuron", g.prefix, dict(g.leaves), neuron=ntype))
        elif "running_mean" in leaves or "running_var" in leaves:
            unknown += [f"{g.prefix}.{k}" for k in sorted(leaves - set(BN_LEAVES))]
            missing += [f"{g.prefix}.{k}" for k in BN_LEAVES[:4] if k not in leaves]
            prev = layers[-1] if layers else None
            if prev is None or prev.kind == "neuron" or prev.bn is not None:
                unknown += [f"{g.prefix}.{k}" for k in sorted(leaves)]  # a BN after no conv
            else:
                prev.bn = g
        elif "weight" in leaves and leaves <= {"weight", "bias"}:
            w = g.leaves["weight"]
            kind = {4: "conv", 2: "linear"}.get(w.dim())
            if kind is None:
                unknown += [f"{g.prefix}.{k}" for k in sorted(leaves)]
            else:
                layers.append(Layer(kind, g.prefix, dict(g.leaves)))
        elif leaves & {"up", "thresh"} and len(leaves) == 1:
            raise ForeignCheckpointError(
                f"{g.prefix}.{next(iter(leaves))} is a QCFS threshold: this is the ANN stage of "
                f"hybrid training, not a spiking network; import the SNN checkpoint saved after "
                f"conversion")
        else:
            unknown += [f"{g.prefix}.{k}" for k in sorted(leaves)]
    if unknown or missing:
        parts = []
        if unknown:
            parts.append(f"unknown keys: {_listing(unknown)}")
        if missing:
            parts.append(f"missing keys: {_listing(missing)}")
        bad_neuron = any(k.rpartition(".")[2] in {"v_threshold", "alpha", "alpha_1", "mask", "beta_1"}
                         for k in unknown + missing)
        raise ForeignCheckpointError("; ".join(parts) + (f" ({hint})" if hint and bad_neuron else ""))
    return layers, notes


def soft_threshold(w: torch.Tensor, d: float) -> torch.Tensor:
    """STBP_LMH's STDS pruning map ``sign(w) * relu(|w| - d)`` (their ``softThresholdmod``,
    same torch float32 operations)."""
    return torch.sign(w) * torch.relu(torch.abs(w) - d)


def map_layers(model, layers: list[Layer], neuron_state, arch_label: str,
               prune_width=None) -> tuple[dict, dict]:
    """Pair ``layers`` with ``model``'s synapse and neuron nodes in order and build our state dict.

    ``neuron_state(layer, node_name, module, index) -> {our leaf: tensor}`` maps one neuron.
    ``prune_width``: apply :func:`soft_threshold` to every conv / linear weight (STBP_LMH's
    pruned ``PConv`` layers, whose bias-free Linear is a 1x1 conv). Returns ``(state dict,
    neuron map)``: the complete state dict for ``model.load_state_dict(strict=True)`` and the map
    from their neuron module names to our neuron node names."""
    ours = [n for n in model.nodes if n.kind in ("synapse", "neuron")]
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    neuron_map = {}

    def mismatch(i, what):
        raise ForeignCheckpointError(
            f"layer {i} does not match --arch {arch_label}: {what}; check --arch, --input-shape "
            f"and the width of the network")

    n_neuron = 0
    for i, node in enumerate(ours):
        if i >= len(layers):
            mismatch(i, f"the checkpoint ends after {len(layers)} layers, the architecture has "
                        f"{len(ours)} (missing from '{node.name}' on)")
        lay = layers[i]
        mod = model.layers[node.name]
        if node.kind == "neuron":
            if lay.kind != "neuron":
                mismatch(i, f"'{lay.prefix}' is a {lay.kind}, the architecture has a neuron layer here")
            for leaf, value in neuron_state(lay, node.name, mod, n_neuron).items():
                key = f"layers.{node.name}.{leaf}"
                if tuple(sd[key].shape) != tuple(value.shape):
                    mismatch(i, f"'{lay.prefix}' gives {leaf} of shape {tuple(value.shape)}, "
                                f"expected {tuple(sd[key].shape)}")
                sd[key] = value.detach().to(sd[key].dtype).clone()
            neuron_map[lay.prefix] = node.name
            n_neuron += 1
            continue
        op = node.attrs["op"]
        w = lay.tensors.get("weight") if lay.kind != "neuron" else None
        if w is None:
            mismatch(i, f"'{lay.prefix}' is a neuron layer, the architecture has a {op} here")
        if prune_width is not None:
            w = soft_threshold(w, prune_width)
        if op == "linear" and w.dim() == 4 and w.shape[2:] == (1, 1) and prune_width is not None:
            w = w.reshape(w.shape[:2])  # their pruned Linear: a 1x1 PConv
        want = tuple(sd[f"layers.{node.name}.layer.weight"].shape)
        if tuple(w.shape) != want:
            mismatch(i, f"'{lay.prefix}.weight' has shape {tuple(w.shape)}, the architecture's "
                        f"{op} '{node.name}' has {want}")
        sd[f"layers.{node.name}.layer.weight"] = w.detach().float().clone()
        bkey = f"layers.{node.name}.layer.bias"
        if ("bias" in lay.tensors) != (bkey in sd) and not (prune_width is not None and bkey in sd):
            mismatch(i, f"'{lay.prefix}' {'has' if 'bias' in lay.tensors else 'lacks'} a bias, the "
                        f"architecture's {op} '{node.name}' {'does not' if 'bias' in lay.tensors else 'does'}")
        if bkey in sd:
            b = lay.tensors.get("bias")
            sd[bkey] = torch.zeros_like(sd[bkey]) if b is None else b.detach().float().clone()
        has_bn = mod.bn is not None
        if has_bn != (lay.bn is not None):
            mismatch(i, f"'{lay.prefix}' is {'' if lay.bn is not None else 'not '}followed by a "
                        f"BatchNorm, the architecture's {op} '{node.name}' is "
                        f"{'' if has_bn else 'not '}followed by one")
        if has_bn:
            for leaf in BN_LEAVES:
                key = f"layers.{node.name}.bn.{leaf}"
                if leaf in lay.bn.leaves:
                    v = lay.bn.leaves[leaf]
                    if tuple(v.shape) != tuple(sd[key].shape):
                        mismatch(i, f"'{lay.bn.prefix}.{leaf}' has shape {tuple(v.shape)}, "
                                    f"expected {tuple(sd[key].shape)}")
                    sd[key] = v.detach().to(sd[key].dtype).clone()
    if len(layers) > len(ours):
        extra = layers[len(ours)]
        raise ForeignCheckpointError(
            f"unknown keys: the checkpoint has {len(layers) - len(ours)} more layer(s) than --arch "
            f"{arch_label}, from '{extra.prefix}' on; check --arch")
    return sd, neuron_map


def finish(model, mapped: tuple[dict, dict]) -> dict:
    """Load the state dict of :func:`map_layers` into ``model`` (strict, eval mode); return the
    neuron map."""
    sd, neuron_map = mapped
    model.load_state_dict(sd, strict=True)
    model.eval()
    return neuron_map


def parse_shape(text) -> tuple:
    """``"3,32,32"`` -> (3, 32, 32)."""
    if isinstance(text, (tuple, list)):
        return tuple(int(v) for v in text)
    try:
        shape = tuple(int(v) for v in str(text).replace("x", ",").split(","))
    except ValueError:
        raise LmhError(f"malformed --input-shape {text!r}; write C,H,W (e.g. 3,32,32)") from None
    if len(shape) != 3 or min(shape) < 1:
        raise LmhError(f"malformed --input-shape {text!r}; write C,H,W (e.g. 3,32,32)")
    return shape
