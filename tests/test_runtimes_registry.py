"""Every runtime of the registry (:data:`lmh_deploy.runtimes.RUNTIMES`) on one small random model.

The list of cases is the registry itself: a runtime added there is run here with no other edit.
Exact runtimes must give the reference interpreter's spike counts bit for bit and its logits;
approximate ones (the trained module before the fold, Lava fixed point) must agree on most
spikes. Lava runtimes run under a hard timeout (and are marked slow).
"""
from __future__ import annotations

import numpy as np
import pytest

from _deploy_models import grid_inputs, random_model, save_model
from lmh_deploy.deployment import Deployment
from lmh_deploy.errors import LavaUnavailableError, MissingDependencyError
from lmh_deploy.runtimes import FORMATS, RUNTIMES

T = 4
SHAPE = (1, 8, 8)


def _marks(rt) -> list:
    if rt.run.startswith("lmh_deploy.lava."):
        return [pytest.mark.lava, pytest.mark.slow, pytest.mark.timeout(400, method="signal")]
    return []


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    """A random LM-H MLP (fully connected: every runtime, Lava included, runs it), its
    checkpoint, inputs on the input grid and the reference run."""
    model = random_model("mlp", "lmh", timesteps=T, input_shape=SHAPE, seed=5)
    path = save_model(model, tmp_path_factory.mktemp("registry") / "model.pt")
    x = grid_inputs(6, SHAPE, seed=3)
    with Deployment(path) as dep:
        yield dep, x, dep.run("reference", x, T)


def test_every_runtime_source_is_a_model_the_graph_or_a_format():
    for rt in RUNTIMES.values():
        assert rt.source in ("model", "graph") or rt.source in FORMATS, rt.name


@pytest.mark.parametrize("name", [pytest.param(n, marks=_marks(rt)) for n, rt in RUNTIMES.items()])
def test_registered_runtime_against_the_reference(case, name):
    dep, x, ref = case
    rt = RUNTIMES[name]
    try:
        run = dep.run(name, x, T)
    except (MissingDependencyError, LavaUnavailableError) as e:
        pytest.skip(f"{name}: {e}")
    assert run.logits.shape == ref.logits.shape == (T, len(x), 10)
    assert set(run.spikes) == set(ref.spikes) and ref.spikes
    if rt.exact:
        for k, s in ref.spikes.items():
            np.testing.assert_array_equal(run.spikes[k], s, err_msg=f"{name}: layer {k}")
        np.testing.assert_allclose(run.logits, ref.logits, rtol=0, atol=1e-5)
    else:
        for k, s in ref.spikes.items():
            agree = float(np.mean(run.spikes[k] == s))
            assert agree >= 0.8, f"{name}: layer {k} agrees on only {agree:.3f} of the spikes"
