"""Plumbing of benchmarks/bench_cpu_inference.py on a tiny LIF network (no timing asserted).

The peers (snnTorch, SpikingJelly, Norse) run our folded weights with their own LIF neurons; at
decay 0.5 their arithmetic matches ours operation for operation except where documented, so the
spike agreement reported by the benchmark is checked here against an independent count.
"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import bench_cpu_inference as bench  # noqa: E402

from lmh_deploy.graph.fold import fold  # noqa: E402
from lmh_deploy.graph.interpret import run_reference  # noqa: E402

AVAILABLE = tuple(p for p in bench.PEERS if importlib.util.find_spec(p) is not None)


def _graph_and_input():
    model = bench.make_model("cnn", "lif", (1, 8, 8), 3, seed=5)
    return fold(model), bench.make_input((1, 8, 8), 6, seed=2)


@pytest.mark.skipif(not AVAILABLE, reason="no SNN peer installed (scripts/setup.sh installs them)")
@pytest.mark.parametrize("peer", AVAILABLE)
def test_peer_ports_fire_like_the_reference(peer):
    """Each peer, fed the same currents, produces the reference's spikes in every layer of a
    network that actually fires (neither silent nor saturated)."""
    graph, x = _graph_and_input()
    ref = run_reference(graph, x)
    logits, spikes = bench.PeerNet(graph, peer, 3)(x)
    assert set(spikes) == set(ref.spikes)
    for k, s in ref.spikes.items():
        assert 0.02 < s.mean() < 0.9, (k, s.mean())  # a non-degenerate test network
        # ties m == theta exactly are the only place snnTorch / Norse (strict >) may differ
        assert np.mean(spikes[k].numpy() == s) > 0.999, (peer, k)
    assert logits.shape == ref.logits.shape
    if peer == "spikingjelly":  # v - v/2 + x == 0.5 v + x exactly, fires at >=: bit-identical
        for k, s in ref.spikes.items():
            np.testing.assert_array_equal(spikes[k].numpy(), s)
        np.testing.assert_array_equal(logits.numpy(), ref.logits)


def test_bench_row_has_every_runtime_and_consistent_ratios():
    row = bench.bench_network("tiny", "mlp", (1, 8, 8), 2, 4, "lif", repeats=1, peers=AVAILABLE)
    assert row["onnx_logits_bit_exact"] is True
    expected = {"onnx", "onnx-noopt", "deployed-torch", "torch-eager", *AVAILABLE}
    assert set(row["seconds_per_batch"]) == expected
    s = row["seconds_per_batch"]
    for k, v in row["speedup_onnx_vs"].items():
        assert v == pytest.approx(s[k] / s["onnx"])
    assert row["ms_per_sample"]["onnx"] == pytest.approx(1e3 * s["onnx"] / 4)
    assert set(row.get("peer_agreement", {})) == set(AVAILABLE)
    lmh = bench.bench_network("tiny", "mlp", (1, 8, 8), 2, 4, "lmh", repeats=1, peers=AVAILABLE)
    assert "peer_agreement" not in lmh and lmh["onnx_logits_bit_exact"] is True
