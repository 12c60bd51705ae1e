"""Every deployed (exact) runtime of the registry yields the same SOP counts as the reference
interpreter: they compute the same spikes, and the cost model reads nothing else (issue 19)."""
from __future__ import annotations

import functools

import numpy as np
import pytest

from lmh_deploy import cost
from lmh_deploy.runtimes import RUNTIMES

pytest.importorskip("onnxruntime")
pytest.importorskip("nir")

#: the runtimes that must equal the reference spike for spike (``exact`` in the registry)
EXACT = [n for n, r in RUNTIMES.items() if r.exact]
#: runtimes that run fully connected chains only (the Lava process builder)
LINEAR_ONLY = {"lava"}


def _cases():
    out = []
    for name in EXACT:
        marks = ([pytest.mark.lava, pytest.mark.timeout(240, method="signal")]
                 if name.startswith("lava") else [])
        for arch, neuron in [("mlp", "lmht"), ("cnn", "lmh")]:
            if arch == "mlp" or name not in LINEAR_ONLY:
                out.append(pytest.param(name, arch, neuron, marks=marks, id=f"{name}-{arch}-{neuron}"))
    return out


@functools.cache
def _model(arch: str, neuron: str):
    import tempfile
    from pathlib import Path

    from _deploy_models import grid_inputs, random_model, save_model

    d = Path(tempfile.mkdtemp(prefix="lmh-cost-"))
    shape = (1, 8, 8)
    path = save_model(random_model(arch, neuron, 2, input_shape=shape, levels=2), d / "m.pt")
    return path, grid_inputs(4, shape, seed=3)


def _sops(path, x, runtime):
    from lmh_deploy.deployment import Deployment

    with Deployment(path) as dep:
        run = dep.run(runtime, x, 2)
        r = cost.cost_report(cost.describe(dep.graph), run.spikes)
    return [row["sops"] for row in r["layers"]], r["totals"]["events_per_sample"]


@pytest.mark.parametrize("runtime,arch,neuron", _cases())
def test_every_exact_runtime_gives_the_reference_sops(runtime, arch, neuron):
    path, x = _model(arch, neuron)
    ref = _sops(path, x, "reference")
    got = _sops(path, x, runtime)
    assert sum(ref[0]) > 0
    assert got == ref  # identical spikes -> identical counts, to the last bit
    assert np.isfinite(got[1])
