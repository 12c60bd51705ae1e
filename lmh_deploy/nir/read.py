"""Read our NIR files (convention ``lmh-nir/2``, :mod:`lmh_deploy.nir.convention`).

* :func:`read_graph` (:mod:`lmh_deploy.nir.file`) -- a path (node types checked first, one-line
  errors) -> ``nir.NIRGraph``.
* :func:`read_deploy_graph` / :func:`read_layers` -- our NIR file -> the DeployGraph its NODES
  describe (:mod:`lmh_deploy.nir.rebuild`; the ``deploy`` metadata is only cross-checked,
  :mod:`lmh_deploy.nir.crosscheck`), or
  its layer chain for runtimes that build their own network (Lava).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lmh_deploy.errors import NirGraphError, UnsupportedModelError
from lmh_deploy.nir.file import SUPPORTED, _plain, check_file_timesteps, read_graph
from lmh_deploy.nir.program import NirProgram, load_program
from lmh_deploy.nir.crosscheck import warn_metadata_differences
from lmh_deploy.nir.rebuild import deploy_graph_from_nodes

__all__ = ["SUPPORTED", "NirLayers", "check_file_timesteps", "read_deploy_graph", "read_graph",
           "read_layers"]


@dataclass
class NirLayers:
    """Our NIR file as a layer chain (``layers``: :class:`~lmh_deploy.graph.schema.Layer`) with
    the file's T, L, input grid and form."""

    layers: list
    timesteps: int
    levels: int
    input_shape: tuple
    input_quantum: float
    input_bound: float
    form: str

    def check_timesteps(self, timesteps: int) -> int:
        return check_file_timesteps(self.form, self.timesteps, timesteps)


def read_deploy_graph(source):
    """Our NIR file (path / ``nir.NIRGraph`` / checked program) -> the
    :class:`~lmh_deploy.graph.schema.DeployGraph` its NODES describe (the graph is the truth):
    what Lava builds from. See :mod:`lmh_deploy.nir.rebuild`: recognised neuron clusters ->
    neuron ops with the nodes' constants (theta recovered exactly, thr_k = nextafter(fl(k
    theta), -inf)); Affine / Conv2d -> synapses; pools, flatten, residual adds, shortcut scales;
    the unrolled form checked by re-export. The ``deploy`` metadata is only cross-checked (one
    warning line; the nodes win). Raises NirGraphError (one line, naming the node) where the
    nodes are no DeployGraph (e.g. a --lossy-lif ``LIF``, a constant varying inside a channel,
    an unrolled file edited at some steps only)."""
    if isinstance(source, NirProgram):
        prog, where = source, "NIR file"
    else:
        prog = load_program(source)
        where = str(source) if isinstance(source, (str, Path)) else "NIR graph"
    graph = deploy_graph_from_nodes(prog)
    warn_metadata_differences(prog, where, graph)
    return graph


def read_layers(source) -> NirLayers:
    """Our NIR file -> :class:`NirLayers`: a chain ``[flatten] synapse neuron ... synapse`` of
    :class:`~lmh_deploy.graph.schema.Layer` (residual / pooling graphs raise NirGraphError naming
    the op)."""

    graph = read_deploy_graph(source)
    meta = _plain(dict(read_graph(source).metadata or {}))
    try:
        chain = graph.layer_chain()
    except UnsupportedModelError as e:
        raise NirGraphError(f"{e}; use read_deploy_graph for other graphs") from None
    return NirLayers(chain, int(meta.get("timesteps", graph.timesteps)), graph.levels,
                     graph.input_shape, graph.input_quantum, graph.input_bound,
                     str(meta.get("form", "temporal")))
