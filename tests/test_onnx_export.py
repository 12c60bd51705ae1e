"""ONNX export (issue 3): the exported graph computes the reference interpreter's spikes exactly.

Every comparison is of whole spike tensors [T, B, ...] at every neuron layer: torch (run_torch of
the DeployGraph), the numpy reference and onnxruntime must agree bit for bit.
"""
from __future__ import annotations


import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from _deploy_models import (NEURON_FAMILIES, digits_test, grid_inputs,  # noqa: E402
                            random_model, trained_checkpoint)

from lmh_deploy.checkpoint import load_model  # noqa: E402
from lmh_deploy.graph.schema import DeployGraph, DeployOp  # noqa: E402
from lmh_deploy.errors import TimestepsError  # noqa: E402
from lmh_deploy.onnx.write import export_onnx  # noqa: E402
from lmh_deploy.graph.fold import fold  # noqa: E402
from lmh_deploy.graph.interpret import run_reference, run_torch  # noqa: E402
from lmh_deploy.onnx.run import session_options  # noqa: E402


def ort_run(model_proto, x, optimization="disable"):
    sess = ort.InferenceSession(model_proto.SerializeToString(), session_options(None, optimization),
                                providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(None, {"input": np.ascontiguousarray(x)})))


def assert_parity(graph, x, timesteps=None, levels=("disable",), check=True):
    """torch == reference == onnxruntime, spike for spike at every layer; logits within 1e-4."""
    ref = run_reference(graph, x, timesteps)
    tor = run_torch(graph, x, timesteps)
    mp = export_onnx(graph, timesteps=timesteps, with_spikes=True, check=check)
    assert set(tor.spikes) == set(ref.spikes) == set(graph.neuron_names())
    for name, s in ref.spikes.items():
        np.testing.assert_array_equal(tor.spikes[name], s, err_msg=f"torch vs reference at {name}")
    np.testing.assert_allclose(tor.logits, ref.logits, rtol=1e-4, atol=1e-6)
    for lvl in levels:
        out = ort_run(mp, x, lvl)
        for name, s in ref.spikes.items():
            np.testing.assert_array_equal(out["spikes_" + name], s,
                                          err_msg=f"onnxruntime ({lvl}) vs reference at {name}")
        np.testing.assert_allclose(out["logits"], ref.logits, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(out["mean_logits"], ref.logits.mean(0), rtol=1e-4, atol=1e-5)
    return ref, mp


# ---------------------------------------------------------------------------------------------
# digits MLP and CNN, every neuron family, 200 test images
# ---------------------------------------------------------------------------------------------

def _digits_graph(arch, kind, levels):
    # trained: every MLP and the LM-H CNN (1 epoch of the real training loop); random otherwise
    if arch == "mlp" or kind == "lmh":
        return fold(load_model(trained_checkpoint(arch, kind, levels if kind == "lmht" else None)))
    return fold(random_model(arch, kind, 4, levels=levels, seed=3))


@pytest.mark.parametrize("arch", ["mlp", "cnn"])
@pytest.mark.parametrize("label,kind,levels", NEURON_FAMILIES, ids=[f[0] for f in NEURON_FAMILIES])
def test_digits_parity_200_inputs(arch, label, kind, levels):
    graph = _digits_graph(arch, kind, levels)
    x, _ = digits_test(200)
    ref, _ = assert_parity(graph, x, levels=("disable", "all"))
    rates = [float(s.mean()) for s in ref.spikes.values()]
    assert all(r > 0 for r in rates), rates  # the comparison is not vacuous


# ---------------------------------------------------------------------------------------------
# ResNet-19 and VGG-13 at 3x32x32, random weights, T = 2 and 4
# ---------------------------------------------------------------------------------------------

# (arch, family index, T, inputs): every family on both nets at both T, >= 200 inputs in all
_BIG_FAST = [("resnet19", 1, 4, 2), ("resnet19", 4, 2, 2), ("vgg13", 2, 4, 8), ("vgg13", 5, 2, 8)]
_BIG_SLOW = [("resnet19", i, t, 3) for i in range(6) for t in (2, 4)
             if ("resnet19", i, t, 3) not in _BIG_FAST] + \
            [("vgg13", i, t, 18) for i in range(6) for t in (2, 4)
             if not any(c[:3] == ("vgg13", i, t) for c in _BIG_FAST)]
assert sum(c[3] for c in _BIG_FAST + _BIG_SLOW) >= 200


def _big(arch, fam, t, n):
    label, kind, levels = NEURON_FAMILIES[fam]
    model = random_model(arch, kind, t, input_shape=(3, 32, 32), levels=levels, seed=fam)
    graph = fold(model)
    x = grid_inputs(n, (3, 32, 32), seed=fam * 10 + t)
    ref, _ = assert_parity(graph, x, check=False)
    assert sum(float(s.sum()) for s in ref.spikes.values()) > 0


@pytest.mark.parametrize("arch,fam,t,n", _BIG_FAST,
                         ids=[f"{a}-{NEURON_FAMILIES[f][0]}-T{t}" for a, f, t, _ in _BIG_FAST])
def test_big_nets_parity(arch, fam, t, n):
    _big(arch, fam, t, n)


@pytest.mark.slow
@pytest.mark.parametrize("arch,fam,t,n", _BIG_SLOW,
                         ids=[f"{a}-{NEURON_FAMILIES[f][0]}-T{t}" for a, f, t, _ in _BIG_SLOW])
def test_big_nets_parity_all_configs(arch, fam, t, n):
    _big(arch, fam, t, n)


def test_resnet19_T4_exports_and_checks():
    """ResNet-19 at T=4 exports and passes the full checker; its export time (target < 30 s on
    the CPU) is measured by benchmarks/bench_onnx.py, not here."""
    model = random_model("resnet19", "lmh", 4, input_shape=(3, 32, 32), seed=7)
    graph = fold(model)
    mp = export_onnx(graph, with_spikes=True)  # includes onnx.checker full_check
    # weights are shared initializers: the file is the weights plus a little, not T times them
    assert mp.ByteSize() < graph.weight_bytes() * 1.01 + 200_000
    assert mp.opset_import[0].version == 17


# ---------------------------------------------------------------------------------------------
# exactly on the threshold (hand-built one-layer graphs; arithmetic is exact)
# ---------------------------------------------------------------------------------------------

def _one_layer_graph(neuron_attrs, arrays, timesteps=4):
    eye = np.eye(4, dtype=np.float32)
    ops = [DeployOp("fc0", "synapse", ("input",), {"weight": eye, "bias": np.zeros(4, np.float32)},
                    {"op": "linear"}),
           DeployOp("sn0", "neuron", ("fc0",), arrays, {"timesteps": timesteps, **neuron_attrs}),
           DeployOp("fc1", "synapse", ("sn0",), {"weight": np.ones((2, 4), np.float32),
                                                  "bias": np.zeros(2, np.float32)}, {"op": "linear"})]
    return DeployGraph(ops=ops, output="fc1", timesteps=timesteps, input_shape=(4,), num_classes=2,
                       input_quantum=2.0 ** -8, input_bound=8.0)


def test_lmh_input_exactly_on_threshold():
    # IF neuron (mu = 0, lambda = 1), theta = 1, v_S(0) = 1/2: m_S[1] = 1/2 + I
    one = np.ones((1, 1), np.float32)
    graph = _one_layer_graph({"model": "lmh", "source_kind": "lmh", "levels": 1, "theta": 1.0,
                              "v0": 0.5},
                             {"mu_d": 0 * one, "mu_s": 0 * one, "lam_s": one, "lam_d": one})
    e = 2.0 ** -8
    x = np.array([[0.5, 0.5 - e, 0.5 + e, 0.0]], np.float32)
    ref, _ = assert_parity(graph, x, levels=("disable", "all"))
    # I = 1/2 lands exactly on theta at t = 1 (m = 1.0 >= 1 fires); one grid step below does not
    # rows: t = 1..4; columns: the four inputs (hand-computed soft-reset IF traces)
    expected = np.array([[1, 0, 1, 0], [0, 1, 0, 0], [1, 0, 1, 0], [0, 1, 0, 0]], np.float32)
    np.testing.assert_array_equal(ref.spikes["sn0"][:, 0, :], expected)


def test_lmht_input_exactly_on_levels():
    # L = 4, theta = 1/2, v(0) = 0, lambda = 1, Omega = I: m[1] = I, s = clip(floor(m/theta), 0, 4)
    graph = _one_layer_graph({"model": "lmht", "source_kind": "lmht", "levels": 4, "theta": 0.5,
                              "v0": 0.0}, {"lam": np.ones((1, 1), np.float32)})
    e = 2.0 ** -8
    x = np.array([[0.5, 1.0 - e, 1.0, 3.0]], np.float32)
    ref, _ = assert_parity(graph, x, levels=("disable", "all"))
    np.testing.assert_array_equal(ref.spikes["sn0"][0, 0], [1, 1, 2, 4])
    # t = 2: 1 - e carries 1/2 - e, plus 1 - e -> 1.5 - 2e -> 2 levels (not 3)
    np.testing.assert_array_equal(ref.spikes["sn0"][1, 0], [1, 2, 2, 4])


# ---------------------------------------------------------------------------------------------
# other T, frames, independent ONNX backend
# ---------------------------------------------------------------------------------------------

def test_export_at_other_timesteps():
    x, _ = digits_test(32)
    lmh = fold(random_model("mlp", "lmh", 4, seed=1))
    for t in (1, 3, 7):  # time-invariant: any T
        ref, mp = assert_parity(lmh, x, timesteps=t)
        assert ref.logits.shape[0] == t
    rad = fold(random_model("mlp", "lmh-radical", 4, seed=2))
    ref, _ = assert_parity(rad, x, timesteps=7)
    # radical beyond T holds the last step's parameters: same as a graph with row 3 repeated
    held = fold(random_model("mlp", "lmh-radical", 4, seed=2))
    for o in held.ops:
        if o.kind == "neuron":
            o.arrays = {k: np.concatenate([v, np.repeat(v[-1:], 3, 0)]) for k, v in o.arrays.items()}
    np.testing.assert_array_equal(run_reference(held, x, 7).logits, ref.logits)
    lmht = fold(random_model("mlp", "lmht", 4, levels=2, seed=3))
    assert_parity(lmht, x, timesteps=8)
    with pytest.raises(TimestepsError, match="multiple of 4"):
        export_onnx(lmht, timesteps=6)
    with pytest.raises(TimestepsError):
        export_onnx(lmh, timesteps=0)


def test_frames_input():
    graph = fold(random_model("cnn", "lmh", 3, seed=4))
    frames = np.stack([grid_inputs(5, (1, 8, 8), seed=s) for s in range(3)])  # [T, B, C, H, W]
    ref = run_reference(graph, frames)
    mp = export_onnx(graph, frames=True, with_spikes=True)
    assert [d.dim_value or d.dim_param for d in mp.graph.input[0].type.tensor_type.shape.dim] == \
        [3, "batch", 1, 8, 8]
    out = ort_run(mp, frames)
    for name, s in ref.spikes.items():
        np.testing.assert_array_equal(out["spikes_" + name], s)


def test_reference_evaluator_agrees_with_onnxruntime():
    from onnx.reference import ReferenceEvaluator

    graph = fold(random_model("mlp", "lmht", 2, levels=2, seed=5))
    x, _ = digits_test(16)
    mp = export_onnx(graph, with_spikes=True)
    ev = ReferenceEvaluator(mp)
    names = [o.name for o in mp.graph.output]
    got = dict(zip(names, ev.run(None, {"input": x})))
    out = ort_run(mp, x)
    for n in names:
        if n.startswith("spikes_"):
            np.testing.assert_array_equal(got[n], out[n], err_msg=n)
    np.testing.assert_allclose(got["logits"], out["logits"], rtol=1e-6)


def test_constants_shared_and_size_independent_of_T():
    graph = fold(random_model("cnn", "lmh", 4, seed=6))
    m4, m16 = export_onnx(graph, timesteps=4), export_onnx(graph, timesteps=16)
    assert abs(m16.ByteSize() - m4.ByteSize()) < 0.1 * graph.weight_bytes()
    inits = [i.name for i in m16.graph.initializer]
    assert len(inits) == len(set(inits))
    assert sum("weight" in n for n in inits) == sum(o.kind == "synapse" for o in graph.ops)
    # scalars are deduplicated: a value appears in at most one scalar initializer
    scalars = [onnx.numpy_helper.to_array(i) for i in m16.graph.initializer if not i.dims]
    keys = [(a.dtype.str, a.tobytes()) for a in scalars]
    assert len(keys) == len(set(keys))
