"""The ``lava`` runtimes: an exported NIR file -> a Lava process graph -> Lava's CPU simulator.

Lava has no NIR importer; this is ours. :func:`lmh_deploy.nir.read.read_deploy_graph` rebuilds the
DeployGraph the file's NODES describe (the graph is the truth; the ``lmh-nir`` metadata is only
cross-checked; an unrolled file is re-rolled into per-layer windows and checked against its
nodes), and :func:`lmh_deploy.lava.run.run_graph_isolated` builds one Lava Process per neuron
cluster (conv / linear synapses, pooling, flatten, residual adds and shortcut scales feeding the
neuron, :mod:`lmh_deploy.lava.cluster`) and runs them in an isolated worker under a hard timeout
(no Lava process or temp folder outlives the caller). Each hop adds one step; residual branches of
different depth are aligned by per-port delays, so logits and spikes line up with the reference
step for step.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lmh_deploy.graph.interpret import GraphRun

#: wall-clock limit of one Lava run (a hang fails instead of stalling)
LAVA_TIMEOUT_S = 600.0


@dataclass
class NirDeploy:
    """Our NIR file as the DeployGraph of its nodes, with the file's form and exported T."""

    graph: object
    form: str
    timesteps: int

    def check_timesteps(self, timesteps: int) -> int:
        from lmh_deploy.nir.file import check_file_timesteps

        check_file_timesteps(self.form, self.timesteps, timesteps)
        return self.graph.check_timesteps(int(timesteps))


def load_nir_graph(path) -> NirDeploy:
    """Registry loader: our NIR file -> :class:`NirDeploy` (NirGraphError, one line, where the
    nodes are no DeployGraph)."""
    from lmh_deploy.nir.file import _plain, read_graph
    from lmh_deploy.nir.read import read_deploy_graph

    graph = read_deploy_graph(path)
    meta = _plain(dict(read_graph(path).metadata or {}))
    return NirDeploy(graph, str(meta.get("form", "temporal")),
                     int(meta.get("timesteps", graph.timesteps)))


load_nir_layers = load_nir_graph   # the registry's name (kept)


def _run(source, x, timesteps, fixed_point: bool, timeout_s: float = LAVA_TIMEOUT_S) -> GraphRun:
    from lmh_deploy.lava.run import run_graph_isolated

    nd = source if isinstance(source, NirDeploy) else load_nir_graph(source)
    graph = nd.graph
    x = np.asarray(x, np.float32)
    if x.ndim == len(graph.input_shape) + 1:
        timesteps = nd.check_timesteps(int(timesteps or nd.timesteps))
    else:
        nd.check_timesteps(int(x.shape[0]))
    run = run_graph_isolated(graph, x, timesteps, timeout_s=timeout_s, fixed_point=fixed_point)
    shapes = graph.shapes()
    spikes = {k: np.asarray(v, np.float32).reshape(v.shape[:2] + tuple(shapes[k]))
              for k, v in run.spikes.items()}
    return GraphRun(np.asarray(run.logits, np.float32), spikes)


def run_lava_nir(source, x, timesteps: int | None = None,
                 timeout_s: float = LAVA_TIMEOUT_S) -> GraphRun:
    """Lava floating-point simulation of an exported NIR file (exact: the reference's spikes at
    every layer). ``x``: [B, *input_shape] or frames [T, B, ...]; returns logits [T, B, K] and
    spikes {neuron: [T, B, ...]}."""
    return _run(source, x, timesteps, fixed_point=False, timeout_s=timeout_s)


def run_lava_nir_fixed(source, x, timesteps: int | None = None,
                       timeout_s: float = LAVA_TIMEOUT_S) -> GraphRun:
    """Lava Loihi-2-style fixed-point simulation (8-bit weights with a shared exponent per op,
    12-bit decays, 24-bit state): approximate; report its accuracy beside the float run."""
    return _run(source, x, timesteps, fixed_point=True, timeout_s=timeout_s)
