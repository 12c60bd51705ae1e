"""Evaluations stream batch by batch: lmh-run (run_file), lmh-verify and the fold-fidelity check
keep one batch's spikes, so their memory does not grow with the number of test samples."""
from __future__ import annotations

import numpy as np
import pytest

from _deploy_models import random_model, save_model

from lmh_deploy.deployment import Deployment, run_file
from lmh_deploy.errors import ResourceError
from lmh_deploy.evaluate import SpikeTally, load_eval_data, spike_stats
from lmh_deploy.guards import run_memory_estimate


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return save_model(random_model("cnn", "lmh", 4), tmp_path_factory.mktemp("st") / "m.pt")


def test_spike_tally_over_batches_equals_whole_set():
    rng = np.random.default_rng(0)
    spikes = {"a": rng.integers(0, 2, (4, 10, 3, 5)).astype(np.float32),
              "b": rng.integers(0, 3, (4, 10, 7)).astype(np.float32)}
    tally = SpikeTally()
    for i in range(0, 10, 3):
        tally.add({k: v[:, i:i + 3] for k, v in spikes.items()})
    whole = spike_stats(spikes)
    got = tally.stats()
    assert got["spikes_per_sample"] == float(sum(v.sum() for v in spikes.values())) / 10
    assert got["spikes_per_sample"] == pytest.approx(whole["spikes_per_sample"], rel=1e-12)
    assert got["firing_rate"] == pytest.approx(whole["firing_rate"], rel=1e-6)
    assert SpikeTally().stats() == {"firing_rate": {}, "spikes_per_sample": None}


@pytest.mark.parametrize("runtime", ["reference", "onnx"])
def test_run_file_any_batch_size_same_result(ckpt, runtime):
    a = run_file(ckpt, "digits", runtime, limit=90, batch_size=7)
    b = run_file(ckpt, "digits", runtime, limit=90, batch_size=256)
    assert a["accuracy_per_step"] == b["accuracy_per_step"] and a["samples"] == 90
    assert a["spikes_per_sample"] == pytest.approx(b["spikes_per_sample"], rel=1e-12)


def test_streamed_run_needs_one_batch_of_memory(ckpt, monkeypatch):
    """A limit between the streamed and the whole-set estimate: Deployment.run (keeps every
    sample's spikes) is refused with a one-line ResourceError, run_file (streams) runs."""
    x, _ = load_eval_data("digits", 360)
    with Deployment(ckpt) as dep:
        shapes = dep.graph.shapes()
        neurons = sum(int(np.prod(s)) for k, s in shapes.items() if k != "input")
        size, k = int(np.prod(dep.input_shape)), int(dep.graph.num_classes)
        whole = run_memory_estimate(4, 360, 8, size, neurons, k)
        streamed = run_memory_estimate(4, 8, 8, size, neurons, k)
        assert streamed < whole / 5
        monkeypatch.setenv("LMH_MEMORY_LIMIT", str((streamed + whole) // 2))
        with pytest.raises(ResourceError, match="lower --timesteps, --batch-size or --limit"):
            dep.run("reference", x, 4, 8)
        runs = list(dep.batches("reference", x, 4, 8))
        assert sum(r.logits.shape[1] for r in runs) == 360
    res = run_file(ckpt, "digits", "reference", batch_size=8)
    assert res["samples"] == 360


def test_sweep_streams_with_the_same_rows(ckpt):
    """lmh-sweep's rows (accuracy, cross-entropy, spikes, SOPs and energy per sample at every
    prefix T) do not depend on the batch size it streams with."""
    from lmh_deploy.sweep import plan, run_sweep

    rows = {}
    for bs in (11, 256):
        dep, rts, ts = plan(ckpt, "reference", "1-6")
        with dep:
            rows[bs] = run_sweep(dep, rts, ts, "digits", limit=60, batch_size=bs,
                                 progress=False)["rows"]
    assert [r["T"] for r in rows[11]] == [1, 2, 3, 4, 5, 6]
    for a, b in zip(rows[11], rows[256]):
        assert a["accuracy"] == b["accuracy"]
        assert a["cross_entropy"] == pytest.approx(b["cross_entropy"], rel=1e-6)
        for k in ("spikes_per_sample", "sops_per_sample", "snn_energy_pj", "ann_energy_pj"):
            assert a[k] == pytest.approx(b[k], rel=1e-9), k
        assert a["sops_per_sample"] > 0
