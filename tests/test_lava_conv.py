"""Lava runs every architecture the package trains (issue 14): conv, pooling, flatten, residual
adds, per-channel constants, LM-H / radical LM-H / LM-HT with Omega windows, graded payloads;
fixed point on conv nets; no Lava process or temp folder outlives its caller.

The cluster step is checked against the reference without Lava first (fast), then through
``lmh-verify --format nir --runtime lava`` (the NIR file's nodes -> DeployGraph -> Lava).
"""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from _deploy_models import grid_inputs, random_model, save_model
from lmh_deploy.graph.fold import fold
from lmh_deploy.graph.interpret import NumpyBackend, run_reference
from lmh_deploy.lava.cluster import partition, simulate

BIN = Path(sys.executable).parent


def _simulate(graph, x, fixed=False):
    B, T = x.shape[0], graph.timesteps
    plans = partition(graph)
    xq = NumpyBackend.quantize_input(x, graph.input_quantum, graph.input_bound).reshape(B, -1)
    payload = np.zeros((B * T + plans[-1].in_offset + 1, xq.shape[1]))
    payload[: B * T] = np.repeat(xq, T, axis=0)
    if fixed:
        payload = np.rint(payload / graph.input_quantum)
    runners = simulate(graph, payload, plans, (B, T), fixed=fixed,
                       input_quantum=graph.input_quantum)
    return {r.plan.name: r.record.reshape(B, T, -1).transpose(1, 0, 2) for r in runners}, plans


@pytest.mark.parametrize("arch,neuron,extra", [
    ("cnn", "lmh", {"per_channel": True}),
    ("resnet20", "lmht", {}),                 # learned Omega: windows, residual delays
    ("resnet20", "lmh-radical", {}),
    ("vgg13", "lif", {}),
])
def test_cluster_steps_are_the_reference_without_lava(arch, neuron, extra):
    graph = fold(random_model(arch, neuron, 4, input_shape=(1, 8, 8), **extra))
    x = grid_inputs(2, (1, 8, 8))
    ref = run_reference(graph, x)
    got, plans = _simulate(graph, x)
    for name, s in ref.spikes.items():
        np.testing.assert_array_equal(got[name], s.reshape(s.shape[:2] + (-1,)), err_msg=name)
    np.testing.assert_array_equal(got[graph.output].astype(np.float32), ref.logits)
    if arch == "resnet20":   # residual branches of different depth are delayed to align
        assert any(max(p.delays) > 0 for p in plans)
        if neuron == "lmht":
            assert any(max(p.delays) == 4 for p in plans)   # a windowed layer costs Tw steps


def test_partition_offsets_hand_checked():
    """cnn: conv-sn, conv-sn, pool, flatten, fc-sn, fc: one step per hop."""
    graph = fold(random_model("cnn", "lmh", 2))
    plans = partition(graph)
    assert [p.in_offset for p in plans] == [0, 1, 2, 3]
    assert [p.out_offset for p in plans[:-1]] == [1, 2, 3]
    assert [len(p.sources) for p in plans] == [1, 1, 1, 1]
    assert {o.kind for o in plans[2].ops} >= {"sumpool", "flatten", "synapse"}




def _verify(ckpt, runtimes="lava", limit=4, extra=()):
    out = subprocess.run([str(BIN / "lmh-verify"), str(ckpt), "--format", "nir", "--runtime",
                          runtimes, "--limit", str(limit), *extra],
                         capture_output=True, text=True, timeout=280)
    return out.returncode, out.stdout + out.stderr


@pytest.mark.lava
@pytest.mark.timeout(300, method="signal")
@pytest.mark.parametrize("arch,neuron", [("resnet20", "lmht"), ("vgg13", "lmh")])
def test_lmh_verify_lava_random_resnet20_and_vgg(tmp_path, arch, neuron):
    pytest.importorskip("lava")
    ckpt = save_model(random_model(arch, neuron, 2, input_shape=(1, 8, 8)), tmp_path / "m.pt")
    rc, out = _verify(ckpt, limit=2)
    assert rc == 0 and "OK: every runtime computes the reference's spikes exactly" in out, out


@pytest.mark.lava
@pytest.mark.timeout(600, method="signal")
@pytest.mark.parametrize("neuron,levels", [("lif", None), ("lmh", None), ("lmht", 2)])
def test_lmh_verify_lava_trained_digits_cnn_float_and_fixed(neuron, levels):
    """Float Lava: every spike of every layer; fixed point within 1 point of the reference
    (the accuracy row of lmh-verify)."""
    pytest.importorskip("lava")
    from _deploy_models import trained_checkpoint

    ckpt = trained_checkpoint("cnn", neuron, levels, timesteps=4, epochs=1)
    rc, out = _verify(ckpt, "lava,lava-fixed", limit=100)
    assert rc == 0 and "OK: every runtime computes the reference's spikes exactly" in out, out
    acc = [ln for ln in out.splitlines() if ln.startswith("accuracy ")][0].split()
    ref, lava, fixed = float(acc[1]), float(acc[2]), float(acc[3])
    print(f"\ncnn {neuron}: reference {ref:.3f} lava {lava:.3f} lava-fixed {fixed:.3f}")
    assert lava == ref > 0.8
    assert abs(fixed - ref) <= 0.01 + 1e-9
