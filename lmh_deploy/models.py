"""Spiking networks as a small named graph of nodes, time-major ``[T, B, ...]``.

A model is a list of :class:`Node` s in topological order. Node kinds:

* ``synapse`` -- ``Conv2d`` or ``Linear`` with an optional BatchNorm after it (tdBN: BN over
  T*B); folded into one affine op at export.
* ``neuron``  -- a spiking neuron layer (or QCFS in an ANN).
* ``add``     -- sum of two currents (residual shortcut), before the neuron.
* ``avgpool`` -- k x k average pooling, stride k.
* ``flatten`` -- ``[.., C, H, W] -> [.., C*H*W]``.

The last node is the readout (a synapse without a neuron); the model returns per-step logits
``[T, B, K]``; the prediction uses their mean over t. Direct encoding: a static input
``[B, *input_shape]`` is presented at every step; an input ``[T, B, *input_shape]`` is a frame
sequence. Architectures are chosen by name (:data:`ARCHS`).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from .neurons import SpikingNeuron, make_neuron


@dataclass
class Node:
    name: str
    kind: str
    inputs: tuple
    attrs: dict = field(default_factory=dict)


class Synapse(nn.Module):
    """Conv2d or Linear, then optional BatchNorm; applied to [T, B, ...] by merging T and B."""

    def __init__(self, layer: nn.Module, bn: nn.Module | None):
        super().__init__()
        self.layer = layer
        self.bn = bn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t, b = x.shape[:2]
        y = self.layer(x.reshape((t * b,) + x.shape[2:]))
        if isinstance(self.bn, PerStepBN):
            y = self.bn.forward_steps(y, t)
        elif self.bn is not None:
            y = self.bn(y)
        return y.reshape((t, b) + y.shape[1:])


BN_MODES = ("tdbn", "per_step")


class PerStepBN(nn.Module):
    """Per-step BatchNorm: one BN per time step t (statistics over B at each step); steps past
    the trained T reuse the last step's BN. Input ``[T*B, ...]`` merged by :class:`Synapse`,
    so it needs T: set by the synapse before the call. Not foldable into a time-invariant
    synapse (the fold refuses it)."""

    def __init__(self, bn_cls, channels: int, timesteps: int):
        super().__init__()
        self.steps = nn.ModuleList(bn_cls(channels) for _ in range(timesteps))

    def forward_steps(self, y: torch.Tensor, t: int) -> torch.Tensor:
        ys = y.reshape((t, -1) + y.shape[1:])
        last = len(self.steps) - 1
        return torch.cat([self.steps[min(i, last)](ys[i]) for i in range(t)])


class NetBuilder:
    """Records nodes and their modules; shapes are tracked to size neurons and linear layers."""

    def __init__(self, input_shape, neuron_cfg: dict, timesteps: int, bn: str = "tdbn"):
        if bn not in BN_MODES:
            raise ValueError(f"unknown bn {bn!r}; choose one of {', '.join(BN_MODES)}")
        self.bn = bn
        self.nodes: list[Node] = []
        self.modules: dict[str, nn.Module] = {}
        self.shapes = {"input": tuple(input_shape)}
        self.neuron_cfg = neuron_cfg
        self.timesteps = timesteps
        self._count: dict[str, int] = {}

    def _name(self, prefix: str) -> str:
        i = self._count.get(prefix, 0)
        self._count[prefix] = i + 1
        return f"{prefix}{i}"

    def _add(self, kind, inputs, shape, module=None, prefix=None, **attrs) -> str:
        name = self._name(prefix or kind)
        self.nodes.append(Node(name, kind, tuple(inputs), attrs))
        if module is not None:
            self.modules[name] = module
        self.shapes[name] = tuple(shape)
        return name

    def conv(self, x, out_ch, k=3, stride=1, padding=None, bn=True, bias=None) -> str:
        """``bias``: default (None) only without BN; True gives conv bias + BN (the reference
        code's VGGs)."""
        c, h, w = self.shapes[x]
        p = k // 2 if padding is None else padding
        layer = nn.Conv2d(c, out_ch, k, stride=stride, padding=p, bias=(not bn) if bias is None else bias)
        ho, wo = (h + 2 * p - k) // stride + 1, (w + 2 * p - k) // stride + 1
        mod = Synapse(layer, self._bn(nn.BatchNorm2d, out_ch) if bn else None)
        return self._add("synapse", [x], (out_ch, ho, wo), mod, prefix="conv", op="conv",
                         stride=stride, padding=p, kernel=k)

    def linear(self, x, out_f, bn=True) -> str:
        (f,) = self.shapes[x]
        mod = Synapse(nn.Linear(f, out_f, bias=not bn), self._bn(nn.BatchNorm1d, out_f) if bn else None)
        return self._add("synapse", [x], (out_f,), mod, prefix="fc", op="linear")

    def _bn(self, bn_cls, channels: int) -> nn.Module:
        """tdBN (one BN over T*B) or per-step BN (one per t), by the model config's ``bn``."""
        return bn_cls(channels) if self.bn == "tdbn" else PerStepBN(bn_cls, channels, self.timesteps)

    def neuron(self, x) -> str:
        shape = self.shapes[x]
        mod = make_neuron(self.neuron_cfg, self.timesteps, shape[0])
        return self._add("neuron", [x], shape, mod, prefix="sn")

    def add(self, a, b) -> str:
        assert self.shapes[a] == self.shapes[b], (self.shapes[a], self.shapes[b])
        return self._add("add", [a, b], self.shapes[a])

    def avgpool(self, x, k) -> str:
        c, h, w = self.shapes[x]
        return self._add("avgpool", [x], (c, h // k, w // k), prefix="pool", kernel=k)

    def flatten(self, x) -> str:
        n = 1
        for d in self.shapes[x]:
            n *= d
        return self._add("flatten", [x], (n,))

    # composite blocks -----------------------------------------------------------------------
    def conv_sn(self, x, out_ch, k=3, stride=1):
        return self.neuron(self.conv(x, out_ch, k, stride))

    def basic_block(self, x, out_ch, stride=1):
        """ResNet basic block: conv-BN-SN-conv-BN (+ shortcut) -SN; neuron after the add."""
        in_ch = self.shapes[x][0]
        y = self.conv_sn(x, out_ch, 3, stride)
        y = self.conv(y, out_ch, 3, 1)
        sc = x if (stride == 1 and in_ch == out_ch) else self.conv(x, out_ch, 1, stride, padding=0)
        return self.neuron(self.add(y, sc))


def _mlp(b: NetBuilder, k, hidden=(256, 256)):
    x = b.flatten("input") if len(b.shapes["input"]) > 1 else "input"
    for h in hidden:
        x = b.neuron(b.linear(x, h))
    return b.linear(x, k, bn=False)


def _cnn(b: NetBuilder, k):
    x = b.conv_sn("input", 16)
    x = b.conv_sn(x, 32)
    x = b.avgpool(x, 2)
    x = b.flatten(x)
    x = b.neuron(b.linear(x, 128))
    return b.linear(x, k, bn=False)


def _resnet(b: NetBuilder, k, stem, stages, hidden_fc=None, imagenet_stem=False):
    if imagenet_stem:  # 7x7/2 conv, then 2x2 average pool (max pool has no exact spiking fold)
        x = b.avgpool(b.neuron(b.conv("input", stem, 7, 2, padding=3)), 2)
    else:
        x = b.conv_sn("input", stem)
    for i, (ch, n) in enumerate(stages):
        for j in range(n):
            x = b.basic_block(x, ch, stride=2 if (i > 0 and j == 0) else 1)
    c, h, w = b.shapes[x]
    x = b.flatten(b.avgpool(x, h))
    if hidden_fc:
        x = b.neuron(b.linear(x, hidden_fc))
    return b.linear(x, k, bn=False)


_VGG = {
    "vgg13": [64, 64, "P", 128, 128, "P", 256, 256, "P", 512, 512, "P", 512, 512, "P"],
    "vgg16": [64, 64, "P", 128, 128, "P", 256, 256, 256, "P", 512, 512, 512, "P", 512, 512, 512, "P"],
}


def _vgg(b: NetBuilder, k, cfg, fc=4096):
    x = "input"
    for v in cfg:
        if v == "P":
            if b.shapes[x][1] >= 2:
                x = b.avgpool(x, 2)
        else:
            x = b.conv_sn(x, v)
    x = b.flatten(x)
    x = b.neuron(b.linear(x, fc))
    x = b.neuron(b.linear(x, fc))
    return b.linear(x, k, bn=False)


def _w(b: NetBuilder, c: int) -> int:
    """Channel count ``c`` times the config's ``width`` multiplier (the ``ref-*`` archs only)."""
    return max(1, int(round(c * getattr(b, "width", 1.0))))


def _ref_resnet(b: NetBuilder, k, stem, stages, hidden_fc=None):
    """The ResNets of the papers' reference code (hzc1208/STBP_LMH, hzc1208/LMHT_SNN): 3x3 stem
    conv-BN-SN, basic blocks with the neuron after the residual add (1x1 conv-BN shortcut when
    the shape changes), global average pool, then (ResNet-19) a hidden ``Linear`` with bias and
    no BN feeding a neuron layer, and the readout ``Linear`` with bias. Widths scale by
    ``config["width"]`` (small test networks)."""
    x = b.conv_sn("input", _w(b, stem))
    for i, (ch, n) in enumerate(stages):
        for j in range(n):
            x = b.basic_block(x, _w(b, ch), stride=2 if (i > 0 and j == 0) else 1)
    c, h, w = b.shapes[x]
    x = b.flatten(b.avgpool(x, h))
    if hidden_fc:
        x = b.neuron(b.linear(x, _w(b, hidden_fc), bn=False))
    return b.linear(x, k, bn=False)


#: reference-code VGG stacks: "P" = 2x2 average pool, "G" = global average pool
_REF_VGG = {
    "vgg11": [64, "P", 128, "P", 256, 256, "P", 512, 512, "P", 512, 512, "P"],
    "vgg13": [64, 64, "P", 128, 128, "P", 256, 256, "P", 512, 512, "P", 512, 512, "P"],
    "vgg16": [64, 64, "P", 128, 128, "P", 256, 256, 256, "P", 512, 512, 512, "P", 512, 512, 512, "P"],
    "vgg19": [64, 64, "P", 128, 128, "P", 256, 256, 256, 256, "P", 512, 512, 512, 512, "P",
              512, 512, 512, 512, "P"],
    # LMHT_SNN models/VGG.py's own VGG-13 and CIFARNet configs
    "vgg13-lmht": [64, 64, "P", 128, 128, "P", 256, 256, "P", 512, 512, 512, "P", 512, "G"],
    "cifarnet": [128, 256, "P", 512, "P", 1024, 512],
}


def _ref_vgg(b: NetBuilder, k, cfg, fc=(4096, 4096)):
    """The VGGs of the reference code: conv (with bias) - BN - SN per entry, 2x2 average pools
    (their max pools become average pools), flatten, hidden ``Linear`` layers with bias and no
    BN feeding neuron layers, readout ``Linear``. Widths scale by ``config["width"]``. As in
    :func:`_vgg`, a 2x2 pool of a map smaller than 2x2 is left out (inputs below 32x32)."""
    x = "input"
    for v in cfg:
        if v == "P":
            if b.shapes[x][1] >= 2:
                x = b.avgpool(x, 2)
        elif v == "G":
            x = b.avgpool(x, b.shapes[x][1])
        else:
            x = b.neuron(b.conv(x, _w(b, v), bias=True))
    x = b.flatten(x)
    for h in fc:
        x = b.neuron(b.linear(x, _w(b, h), bn=False))
    return b.linear(x, k, bn=False)


ARCHS = {
    "mlp": lambda b, k: _mlp(b, k),
    "cnn": lambda b, k: _cnn(b, k),
    "resnet18": lambda b, k: _resnet(b, k, 64, [(64, 2), (128, 2), (256, 2), (512, 2)]),
    "resnet19": lambda b, k: _resnet(b, k, 128, [(128, 3), (256, 3), (512, 2)], hidden_fc=256),
    "resnet20": lambda b, k: _resnet(b, k, 16, [(16, 3), (32, 3), (64, 3)]),
    # a small residual CNN for 8x8 digits (one basic block per stage; trains in seconds)
    "resnet-mini": lambda b, k: _resnet(b, k, 8, [(8, 1), (16, 1)]),
    "resnet34": lambda b, k: _resnet(b, k, 64, [(64, 3), (128, 4), (256, 6), (512, 3)],
                                     imagenet_stem=True),
    "vgg13": lambda b, k: _vgg(b, k, _VGG["vgg13"]),
    "vgg16": lambda b, k: _vgg(b, k, _VGG["vgg16"]),
    # the reference code's architectures (lmh-import; see lmh_deploy/importers)
    "ref-resnet18": lambda b, k: _ref_resnet(b, k, 64, [(64, 2), (128, 2), (256, 2), (512, 2)]),
    "ref-resnet19": lambda b, k: _ref_resnet(b, k, 64, [(128, 3), (256, 3), (512, 2)], hidden_fc=256),
    "ref-resnet20": lambda b, k: _ref_resnet(b, k, 16, [(16, 3), (32, 3), (64, 3)]),
    "ref-resnet34": lambda b, k: _ref_resnet(b, k, 64, [(64, 3), (128, 4), (256, 6), (512, 3)]),
    "ref-vgg11": lambda b, k: _ref_vgg(b, k, _REF_VGG["vgg11"]),
    "ref-vgg13": lambda b, k: _ref_vgg(b, k, _REF_VGG["vgg13"]),
    "ref-vgg16": lambda b, k: _ref_vgg(b, k, _REF_VGG["vgg16"]),
    "ref-vgg19": lambda b, k: _ref_vgg(b, k, _REF_VGG["vgg19"]),
    # LMHT_SNN's direct-training VGG-13: no hidden Linear layers for 200 classes (its code)
    "ref-vgg13-lmht": lambda b, k: _ref_vgg(b, k, _REF_VGG["vgg13-lmht"],
                                            fc=() if k == 200 else (4096, 4096)),
    "ref-cifarnet": lambda b, k: _ref_vgg(b, k, _REF_VGG["cifarnet"], fc=(1024, 512)),
}


class SpikingNet(nn.Module):
    """A spiking network built from a config dict (see :func:`build_model`)."""

    def __init__(self, config: dict):
        super().__init__()
        arch = config["arch"]
        if arch not in ARCHS:
            raise ValueError(f"unknown arch {arch!r}; choose one of {', '.join(ARCHS)}")
        self.config = dict(config)
        self.timesteps = int(config["timesteps"])
        self.input_shape = tuple(config["input_shape"])
        b = NetBuilder(self.input_shape, config["neuron"], self.timesteps, config.get("bn", "tdbn"))
        b.width = float(config.get("width", 1.0))  # channel multiplier of the ref-* archs
        self.output_name = ARCHS[arch](b, int(config["num_classes"]))
        self.nodes = b.nodes
        self.shapes = b.shapes
        self.layers = nn.ModuleDict(b.modules)

    def neuron_names(self) -> list[str]:
        return [n.name for n in self.nodes if n.kind == "neuron"]

    def _time_major(self, x: torch.Tensor, timesteps: int | None) -> torch.Tensor:
        nd = len(self.input_shape)
        if x.dim() == nd + 1:  # static input: direct encoding, same input at every step
            t = timesteps or self.timesteps
            return x.unsqueeze(0).expand((t,) + tuple(x.shape))
        if x.dim() == nd + 2:
            if timesteps is not None and timesteps != x.shape[0]:
                raise ValueError(f"input has {x.shape[0]} frames but timesteps={timesteps}")
            return x
        raise ValueError(f"expected input [B, {self.input_shape}] or [T, B, ...], got {tuple(x.shape)}")

    def run(self, x: torch.Tensor, timesteps: int | None = None, record: bool = False,
            neuron_state: dict | None = None, t0: int = 0):
        """Run the graph; returns ``(logits [T, B, K], spikes)`` where ``spikes`` maps each
        neuron node to its spike counts ``[T, B, ...]`` when ``record`` is set (else empty).

        Time slicing: with a dict ``neuron_state`` the run covers steps ``t0 ..`` and starts
        each neuron from ``neuron_state[name]`` (absent: initial state); the final states are
        written back into the dict (the caller detaches them between slices)."""
        acts = {"input": self._time_major(x, timesteps)}
        spikes: dict[str, torch.Tensor] = {}
        for node in self.nodes:
            ins = [acts[i] for i in node.inputs]
            if node.kind == "synapse":
                y = self.layers[node.name](ins[0])
            elif node.kind == "neuron":
                mod = self.layers[node.name]
                if isinstance(mod, SpikingNeuron) and neuron_state is not None:
                    s, neuron_state[node.name] = mod.counts_from(ins[0], neuron_state.get(node.name), t0)
                    if record:
                        spikes[node.name] = s
                    y = s * mod.theta
                elif isinstance(mod, SpikingNeuron) and record:
                    s = mod.counts(ins[0])
                    spikes[node.name] = s
                    y = s * mod.theta
                elif isinstance(mod, SpikingNeuron):
                    y = mod(ins[0])  # theta * counts (the fused kernels write it in one pass)
                else:
                    y = mod(ins[0])
            elif node.kind == "add":
                y = ins[0] + ins[1]
            elif node.kind == "avgpool":
                k = node.attrs["kernel"]
                t, bsz = ins[0].shape[:2]
                y = nn.functional.avg_pool2d(ins[0].reshape((t * bsz,) + ins[0].shape[2:]), k)
                y = y.reshape((t, bsz) + y.shape[1:])
            elif node.kind == "flatten":
                y = ins[0].reshape(ins[0].shape[:2] + (-1,))
            else:  # pragma: no cover
                raise ValueError(f"unknown node kind {node.kind}")
            acts[node.name] = y
        return acts[self.output_name], spikes

    def forward(self, x: torch.Tensor, timesteps: int | None = None, neuron_state: dict | None = None,
                t0: int = 0) -> torch.Tensor:
        """Per-step logits ``[T, B, K]`` (``neuron_state``, ``t0``: time slicing, see :meth:`run`)."""
        return self.run(x, timesteps, neuron_state=neuron_state, t0=t0)[0]


def default_config(arch="mlp", neuron="lmh", timesteps=4, num_classes=10, input_shape=(1, 8, 8),
                   levels=2, bn="tdbn", input_quantum=None, input_bound=None, input_norm=None,
                   **neuron_extra) -> dict:
    """A complete model config (what the checkpoint stores to rebuild the model).

    ``input_quantum`` / ``input_bound``: the deployed input grid (see the fold), when the data
    set knows it; ``input_norm``: the normalization of 8-bit image data (``DataSplits.input_norm``;
    the fold then deploys raw pixels); ``neuron_extra`` goes to the neuron section (per_channel,
    theta, ...)."""
    ncfg = {"kind": neuron}
    if neuron == "lmht":
        ncfg["levels"] = levels
    ncfg.update(neuron_extra)
    cfg = {"arch": arch, "timesteps": int(timesteps), "num_classes": int(num_classes),
           "input_shape": list(input_shape), "neuron": ncfg, "bn": bn}
    if input_quantum is not None:
        cfg["input_quantum"], cfg["input_bound"] = float(input_quantum), float(input_bound)
    if input_norm:
        cfg["input_norm"] = {"mean": [float(v) for v in input_norm["mean"]],
                             "std": [float(v) for v in input_norm["std"]],
                             "scale": float(input_norm.get("scale", 255.0))}
    return cfg


def build_model(config: dict) -> SpikingNet:
    return SpikingNet(config)
