"""The ``lava`` runtimes: an exported NIR file -> a Lava process graph -> Lava's CPU simulator.

Lava has no NIR importer; this is ours. :func:`lmh_deploy.nir.read.read_layers` reads the NIR
file into a layer chain (synapse weights from the NIR nodes, exact neuron constants from the
file's ``lmh-nir`` metadata), :mod:`lmh_deploy.lava.run` builds Dense processes and
our LM-H / multi-level neuron processes from it and runs them in a child process group under a
hard timeout (no Lava worker outlives a run). Outputs are aligned by depth (one step per Dense
hop, plus T-1 steps per layer for LM-HT's windowed Omega), so logits and spikes line up with the
reference step for step.
"""
from __future__ import annotations

import numpy as np

from lmh_deploy.graph.interpret import GraphRun

#: wall-clock limit of one Lava run (a hang fails instead of stalling)
LAVA_TIMEOUT_S = 600.0


def load_nir_layers(path):
    """Registry loader: our NIR file -> :class:`lmh_deploy.nir.read.NirLayers`."""
    from lmh_deploy.nir.read import read_layers

    return read_layers(path)


def _lava_layers(nl):
    from lmh_deploy.errors import NirGraphError

    for layer in nl.layers:
        if layer.op != "linear":
            raise NirGraphError(f"layer {layer.name!r} is a {layer.op}: the Lava runtime runs "
                                f"fully connected chains (digits MLP); run conv models with "
                                f"--runtime nir or onnx")
    return list(nl.layers)


def _run(source, x, timesteps, fixed_point: bool, timeout_s: float = LAVA_TIMEOUT_S) -> GraphRun:
    from lmh_deploy.lava.run import run_lava_isolated

    nl = source if hasattr(source, "layers") else load_nir_layers(source)
    if timesteps is None and np.ndim(x) == len(nl.input_shape) + 1:
        timesteps = nl.timesteps
    run = run_lava_isolated(_lava_layers(nl), np.asarray(x, np.float32), timesteps,
                            timeout_s=timeout_s, fixed_point=fixed_point,
                            input_quantum=nl.input_quantum, input_bound=nl.input_bound)
    return GraphRun(np.asarray(run.logits, np.float32),
                    {k: np.asarray(v, np.float32) for k, v in run.spikes.items()})


def run_lava_nir(source, x, timesteps: int | None = None,
                 timeout_s: float = LAVA_TIMEOUT_S) -> GraphRun:
    """Lava floating-point simulation of an exported NIR file (exact: the reference's spikes)."""
    return _run(source, x, timesteps, fixed_point=False, timeout_s=timeout_s)


def run_lava_nir_fixed(source, x, timesteps: int | None = None,
                       timeout_s: float = LAVA_TIMEOUT_S) -> GraphRun:
    """Lava Loihi-2-style fixed-point simulation (8-bit weights, 12-bit decays, 24-bit state):
    approximate; report its accuracy beside the float run."""
    return _run(source, x, timesteps, fixed_point=True, timeout_s=timeout_s)
