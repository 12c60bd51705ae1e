"""A user's own module -> a :class:`~lmh_deploy.models.SpikingNet` the fold accepts.

``from_module(net, input_shape, timesteps)`` traces ``net`` with :func:`torch.fx.symbolic_trace`
(an ``nn.Sequential`` or any ``nn.Module`` whose ``forward`` is a plain data flow) and maps it onto
the node graph of :mod:`lmh_deploy.models`:

* ``nn.Conv2d`` (square kernel, symmetric integer padding, no dilation / groups) and ``nn.Linear``
  -> ``synapse``; an ``nn.BatchNorm1d/2d`` right after one (its only reader) joins it (folded);
* our neuron modules (:class:`~lmh_deploy.neurons.SpikingNeuron`: LM-H, LM-HT, LIF) -> ``neuron``;
* ``nn.AvgPool2d(k)`` (stride k, no padding) -> ``avgpool``; ``nn.Flatten()`` / ``torch.flatten(x, 1)``
  -> ``flatten``; ``a + b`` -> ``add``; ``nn.Identity`` / ``nn.Dropout`` are skipped.

Semantics (the module's own forward, as the trained SpikingNet runs): the input is presented at
every step (or is a frame sequence ``[T, B, ...]``); torch layers act on each step (time and batch
merged), neurons on the time-major ``[T, B, ...]`` sequence; the logits are per step, the class is
the argmax of their mean over t. Anything else raises one-line
:class:`~lmh_deploy.errors.UnsupportedModelError` naming the layer.
"""
from __future__ import annotations

import operator

import torch
from torch import nn

from lmh_deploy.errors import UnsupportedModelError
from lmh_deploy.models import Node, SpikingNet, Synapse
from lmh_deploy.neurons import SpikingNeuron

SUPPORTED = ("Conv2d", "Linear", "BatchNorm1d/2d after a conv/linear", "LM-H/LM-HT/LIF neurons",
             "AvgPool2d(k)", "Flatten", "+", "Identity", "Dropout")
_SKIP = (nn.Identity, nn.Dropout)


class _Tracer(torch.fx.Tracer):
    """Our neurons are leaves (their time loops are not traced), like torch's own layers."""

    def is_leaf_module(self, m, qualname) -> bool:
        return isinstance(m, SpikingNeuron) or super().is_leaf_module(m, qualname)


def _refuse(name, what) -> UnsupportedModelError:
    return UnsupportedModelError(f"layer {name!r} ({what}) cannot be folded into a DeployGraph; "
                                 f"supported: {', '.join(SUPPORTED)}")


def _neuron_kind(mod) -> dict:
    return {"kind": str(getattr(mod, "kind", type(mod).__name__))}


def from_module(module: nn.Module, input_shape, timesteps: int | None = None, num_classes: int | None = None,
                input_quantum: float | None = None, input_bound: float | None = None) -> SpikingNet:
    """A :class:`SpikingNet` (eval mode) sharing ``module``'s layers (no copy): input
    ``[B, *input_shape]`` (one sample per step, e.g. ``(1, 8, 8)``), ``timesteps`` T.
    ``input_quantum`` / ``input_bound``: the deployed input grid (default: the fold's, 2**-8 and 8).
    Raises :class:`UnsupportedModelError` naming the first layer it cannot fold."""
    try:
        gm = torch.fx.GraphModule(module, _Tracer().trace(module))
    except Exception as e:  # noqa: BLE001 - fx raises many types for dynamic control flow
        raise UnsupportedModelError(f"cannot trace {type(module).__name__} with torch.fx "
                                    f"({type(e).__name__}: {str(e).splitlines()[0]}); write its "
                                    f"forward as a plain data flow, or use nn.Sequential") from None
    mods = dict(gm.named_modules())
    nodes: list[Node] = []
    layers: dict[str, nn.Module] = {}
    alias: dict[str, str] = {}  # fx node name -> our node name
    readers: dict[str, int] = {}
    for n in gm.graph.nodes:
        for a in n.all_input_nodes:
            readers[a.name] = readers.get(a.name, 0) + 1
    output = None
    kinds = set()

    def add(name, kind, ins, module=None, **attrs):
        nodes.append(Node(name, kind, tuple(ins), attrs))
        if module is not None:
            layers[name] = module
        return name

    for n in gm.graph.nodes:
        ins = [alias[a.name] for a in n.all_input_nodes]
        label = str(n.target)
        if n.op == "placeholder":
            if "input" in alias.values():
                raise UnsupportedModelError("the module must take one input tensor")
            alias[n.name] = "input"
            continue
        if n.op == "output":
            output = ins[0]
            continue
        if n.op == "call_module":
            m = mods[n.target]
            safe = n.target.replace(".", "_")
            safe = f"layer{safe}" if safe[0].isdigit() else safe
            if isinstance(m, _SKIP):
                alias[n.name] = ins[0]
            elif isinstance(m, nn.Conv2d):
                k, s, p = m.kernel_size, m.stride, m.padding
                if (k[0] != k[1] or s[0] != s[1] or isinstance(p, str) or p[0] != p[1] or m.groups != 1
                        or m.dilation != (1, 1) or m.padding_mode != "zeros"):
                    raise _refuse(n.target, "Conv2d with non-square kernel/stride/padding, groups "
                                            "or dilation")
                alias[n.name] = add(safe, "synapse", ins, Synapse(m, None), op="conv",
                                    stride=int(s[0]), padding=int(p[0]), kernel=int(k[0]))
            elif isinstance(m, nn.Linear):
                alias[n.name] = add(safe, "synapse", ins, Synapse(m, None), op="linear")
            elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                src = ins[0]
                syn = layers.get(src)
                if not isinstance(syn, Synapse) or syn.bn is not None or \
                        readers.get(n.all_input_nodes[0].name, 0) != 1:
                    raise _refuse(n.target, "BatchNorm not right after a conv/linear it alone reads")
                syn.bn = m
                alias[n.name] = src
            elif isinstance(m, SpikingNeuron):
                kinds.add(_neuron_kind(m)["kind"])
                alias[n.name] = add(safe, "neuron", ins, m)
            elif isinstance(m, nn.AvgPool2d):
                k = m.kernel_size if isinstance(m.kernel_size, int) else m.kernel_size[0]
                st = m.stride if isinstance(m.stride, int) else (m.stride or (k,))[0]
                pd = m.padding if isinstance(m.padding, int) else m.padding[0]
                if st != k or pd != 0:
                    raise _refuse(n.target, "AvgPool2d with stride != kernel or padding")
                alias[n.name] = add(safe, "avgpool", ins, kernel=int(k))
            elif isinstance(m, nn.Flatten):
                if m.start_dim != 1 or m.end_dim != -1:
                    raise _refuse(n.target, "Flatten other than Flatten(1, -1)")
                alias[n.name] = add(safe, "flatten", ins)
            else:
                raise _refuse(n.target, type(m).__name__)
        elif n.op == "call_function" and n.target in (operator.add, torch.add) and len(ins) == 2:
            alias[n.name] = add(n.name, "add", ins)
        elif n.op == "call_function" and n.target is torch.flatten and \
                tuple(n.args[1:]) in ((1,), (1, -1)):
            alias[n.name] = add(n.name, "flatten", ins)
        else:
            raise _refuse(label, f"{n.op} {getattr(n.target, '__name__', label)}")
    if not nodes or output is None or layers.get(output) is None or \
            not isinstance(layers[output], Synapse):
        raise UnsupportedModelError("the module must end in a Linear (or Conv2d) readout")
    if timesteps is None:
        ts = {int(m.timesteps) for m in layers.values() if isinstance(m, SpikingNeuron)}
        if len(ts) != 1:
            raise UnsupportedModelError(f"pass timesteps=T (the neurons say {sorted(ts) or 'nothing'})")
        timesteps = ts.pop()
    with torch.no_grad():
        t = int(timesteps)
        probe = SpikingNet.__new__(SpikingNet)
        nn.Module.__init__(probe)
        probe.nodes, probe.output_name, probe.timesteps = nodes, output, t
        probe.input_shape = tuple(int(d) for d in input_shape)
        probe.layers = nn.ModuleDict(layers)
        probe.shapes = {}
        probe.eval()
        k = int(probe(torch.zeros((1,) + probe.input_shape), t).shape[-1])
    if num_classes is not None and int(num_classes) != k:
        raise UnsupportedModelError(f"the module has {k} outputs, not num_classes={num_classes}")
    cfg = {"arch": "user:" + type(module).__name__, "timesteps": t, "num_classes": k,
           "input_shape": list(probe.input_shape), "bn": "tdbn",
           "neuron": {"kind": ",".join(sorted(kinds))} if kinds else {}}
    if input_quantum is not None:
        cfg["input_quantum"] = float(input_quantum)
    if input_bound is not None:
        cfg["input_bound"] = float(input_bound)
    probe.config = cfg
    return probe
