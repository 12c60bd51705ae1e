"""Run a NIR graph as a torch module built by ``nirtorch`` with our own node mapping.

nirtorch wires the modules (``nirtorch.nir_to_torch``); every NIR primitive is mapped to one of
the torch modules below, which compute exactly what :mod:`lmh_deploy.nir.run_numpy`
computes (same float32 operations). Before wiring, the graph is rewritten in memory:

* each recognised neuron cluster (:class:`lmh_deploy.nir.match.Fused`) becomes one stateful
  node whose module calls :mod:`lmh_deploy.neuron_math` with :class:`~lmh_deploy.ops.TorchOps`
  (nirtorch's own handling of cycles is heuristic and sums inputs in set order, so cycles are
  never handed to it); a cycle that is not a recognised cluster is refused (run it with the
  numpy ``nir`` runtime);
* the unrolled form's T ``Input`` nodes become one ``Input`` of shape [T, ...] with a step
  selector per step, and its T ``Output`` nodes one ``Output`` of the per-step logits [T, B, K]
  (each step placed in its row, rows summed: exact, the other rows are zeros).

Spike counts are recorded by the modules into a per-run dict (no global state).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lmh_deploy.errors import TimestepsError, require
from lmh_deploy.graph.interpret import GraphRun, TorchBackend
from lmh_deploy.errors import NirGraphError
from lmh_deploy.nir.program import load_program
from lmh_deploy.nir.crosscheck import warn_metadata_differences
from lmh_deploy.nir.read import read_graph
from lmh_deploy.nir.run_numpy import eval_node, fused_init, fused_step


class TorchNirBackend(TorchBackend):
    """torch float32 back-end with what NIR primitives need (no autograd)."""

    def zeros(self, batch, shape):
        return self.torch.zeros((batch,) + tuple(shape), dtype=self.torch.float32,
                                device=self.device)

    def gt(self, u, thr):
        return (u > thr).to(self.torch.float32)

    def where(self, c, a, b):
        return self.torch.where(c > 0, a, b)

    def reshape(self, x, shape):
        return x.reshape((x.shape[0],) + tuple(shape))

    def batch(self, x):
        return x.shape[0]


def _modules(torch, be, rec: dict):
    nn = torch.nn

    class NodeModule(nn.Module):
        """A stateless primitive (Affine, Linear, Scale, Conv2d, SumPool2d, Flatten, Threshold)."""

        def __init__(self, node, key=None):
            super().__init__()
            self.node, self.key = node, key

        def forward(self, x):
            y, _ = eval_node(be, self.node, x, None)
            if self.key is not None:
                rec.setdefault(self.key, []).append(y)
            return y

    class StateModule(nn.Module):
        """A stateful primitive outside any cluster (I, LIF): ``forward(x, state)``."""

        def __init__(self, node, key=None):
            super().__init__()
            self.node, self.key = node, key

        def forward(self, x, state=None):
            if state is None:
                state = be.zeros(x.shape[0], self.node.out_shape) + be.const(self.node.params["v0"])
            y, st = eval_node(be, self.node, x, state)
            if self.key is not None:
                rec.setdefault(self.key, []).append(y)
            return y, st

    class FusedModule(nn.Module):
        """A recognised neuron cluster: neuron_math with TorchOps."""

        def __init__(self, fused, shape, key):
            super().__init__()
            self.fused, self.shape, self.key = fused, shape, key

        def forward(self, x, state=None):
            if state is None:
                state = fused_init(be, self.fused, x.shape[0], self.shape)
            s, st = fused_step(be, self.fused, state, x)
            rec.setdefault(self.key, []).append(s)
            return s, st

    class Select(nn.Module):
        def __init__(self, t):
            super().__init__()
            self.t = t

        def forward(self, x):
            return x[self.t]

    class Place(nn.Module):
        def __init__(self, t, steps):
            super().__init__()
            self.t, self.steps = t, steps

        def forward(self, x):
            onehot = torch.zeros(self.steps, dtype=x.dtype, device=x.device)
            onehot[self.t] = 1.0
            return onehot.reshape((-1,) + (1,) * x.dim()) * x.unsqueeze(0)

    return NodeModule, StateModule, FusedModule, Select, Place, nn.Identity


def build_torch_module(source, device="cpu"):
    """NIR file or graph -> ``(module, prog, recorder, unrolled)`` wired by nirtorch."""
    nir = require("nir", "nir")
    nirtorch = require("nirtorch", "nir")
    torch = require("torch", "nir")
    g = read_graph(source)
    prog = load_program(g)
    warn_metadata_differences(prog, str(source) if isinstance(source, (str, Path)) else "NIR graph",
                              clusters_only=True)
    be = TorchNirBackend(device)
    rec: dict = {}
    NodeModule, StateModule, FusedModule, Select, Place, Identity = _modules(torch, be, rec)

    @dataclass(eq=False)
    class Custom(nir.NIRNode):
        make: object

        def __post_init__(self):
            self.input_type = {"input": None}
            self.output_type = {"output": None}

    in_fused = {n: f for f in prog.fused for n in f.nodes}
    for i in prog.delayed:
        a, b = prog.edges[i]
        if not (a in in_fused and b in in_fused and in_fused[a] is in_fused[b]):
            raise NirGraphError(f"node {b!r}: a cycle that is not a recognised neuron cluster; "
                                f"the nirtorch path runs only our neuron motifs, use --runtime nir")
    spike_key = {}
    for layer, names in prog.spike_nodes().items():
        for t, n in enumerate(names):
            spike_key[n] = (layer, t)
    for f in prog.fused:
        spike_key.setdefault(f.spikes, (f.spikes, 0))

    nodes, edges = {}, []
    unrolled = prog.form == "unrolled" or len(prog.inputs) > 1
    steps = len(prog.inputs)
    rename = {}
    for n in prog.order:
        node = prog.nodes[n]
        f = in_fused.get(n)
        if f is not None:
            if n == f.entry:
                key = spike_key[f.spikes]
                nodes[f.spikes] = Custom(lambda f=f, key=key: FusedModule(
                    f, prog.nodes[f.entry].out_shape, key))
            rename[n] = f.spikes
            continue
        if node.kind == "Input":
            if unrolled:
                nodes[n] = Custom(lambda t=prog.inputs.index(n): Select(t))
                edges.append(("input", n))
            else:
                nodes[n] = nir.Input(input_type={"input": np.array(node.out_shape)})
            continue
        if node.kind == "Output":
            if unrolled:
                nodes[n] = Custom(lambda t=prog.outputs.index(n): Place(t, steps))
                edges.append((n, "zz_gather"))
            else:
                nodes[n] = nir.Output(output_type={"output": np.array(node.out_shape)})
            continue
        key = spike_key.get(n)
        mod = StateModule if node.kind in ("I", "LIF") else NodeModule
        nodes[n] = Custom(lambda node=node, key=key, mod=mod: mod(node, key))
    if unrolled:
        shape = prog.nodes[prog.inputs[0]].out_shape
        nodes["input"] = nir.Input(input_type={"input": np.array((steps,) + tuple(shape))})
        nodes["zz_gather"] = Custom(lambda: Identity())
        nodes["zzz_output"] = nir.Output(output_type={"output": np.array([steps])})
        edges.append(("zz_gather", "zzz_output"))
    for a, b in prog.edges:
        fa, fb = in_fused.get(a), in_fused.get(b)
        if fa is not None and fa is fb:
            continue  # inside a cluster
        if fb is not None and b != fb.entry:
            raise NirGraphError(f"node {b!r}: an edge enters a neuron cluster away from its entry")
        edges.append((rename.get(a, a), rename.get(b, b)))
    graph = nir.NIRGraph(nodes=nodes, edges=edges, metadata={}, type_check=False)
    node_map = {Custom: lambda node: node.make()}
    module = nirtorch.nir_to_torch(graph, node_map=node_map, device=device)
    return module, prog, rec, unrolled


class NirTorchModel:
    """A NIR file built once into its nirtorch module (:func:`load_nir_torch`), so that running
    it batch after batch does not rebuild the module (seconds) per batch."""

    def __init__(self, source, device="cpu"):
        self.device = device
        self.module, self.prog, self.rec, self.unrolled = build_torch_module(source, device)


def load_nir_torch(path, device="cpu") -> NirTorchModel:
    """The registry's loader of the ``nir-torch`` runtime: :class:`NirTorchModel` of ``path``."""
    return NirTorchModel(path, device)


def run_nir_torch(source, x, timesteps: int | None = None, device="cpu") -> GraphRun:
    """The nirtorch path: same contract as :func:`lmh_deploy.nir.run_numpy.run_nir`.
    ``source``: a NIR file or graph (built here), or a :class:`NirTorchModel` (built once)."""
    torch = require("torch", "nir")
    if not isinstance(source, NirTorchModel):
        source = NirTorchModel(source, device)
    module, prog, rec, unrolled = source.module, source.prog, source.rec, source.unrolled
    device = source.device
    rec.clear()  # the recorder of the previous batch
    be = TorchNirBackend(device)
    shape = prog.nodes[prog.inputs[0]].out_shape
    x = torch.as_tensor(np.asarray(x, np.float32), device=be.device)
    frames = x.dim() == len(shape) + 2
    q, b = prog.metadata.get("input_quantum"), prog.metadata.get("input_bound")

    def quant(a):
        return a if q is None else be.quantize_input(a, float(q), float(b))

    with torch.no_grad():
        if unrolled:
            T = len(prog.inputs)
            if (timesteps is not None and timesteps != T) or (frames and x.shape[0] != T):
                raise TimestepsError(f"this unrolled NIR graph has T={T} steps built in; export "
                                     f"again with --timesteps or use the temporal form")
            xs = torch.stack([quant(x[t] if frames else x) for t in range(T)])
            out, _ = module(xs)
            logits = out
            spikes = {}
            for (layer, t), v in sorted(rec.items()):
                spikes.setdefault(layer, []).append(v[0])
        else:
            T = x.shape[0] if frames else int(timesteps or prog.metadata.get("timesteps") or 1)
            static = None if frames else quant(x)
            state, outs = None, []
            for t in range(T):
                y, state = module(static if static is not None else quant(x[t]), state)
                outs.append(y)
            logits = torch.stack(outs)
            spikes = {}
            for (layer, _), v in rec.items():
                spikes[layer] = v
        return GraphRun(logits.cpu().numpy(),
                        {k: torch.stack(v).cpu().numpy() for k, v in spikes.items()})
