"""Fold fidelity: split (hi + lo) exact-sum synapses and raw-pixel deployment of normalized images.

Hand-checkable facts: the two parts of every split synapse lie on their own exact-sum grids; the
deployed weight w_hi + w_lo is within ~2**-20 of the folded weight; the deployed first-layer
current of a normalized-image model equals, in float64, the trained conv on the normalized image
with zero padding, border pixels included; and every runtime computes identical spikes.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _deploy_models import grid_inputs, random_model  # noqa: E402

from lmh_deploy.graph.inputs import raw_input  # noqa: E402
from lmh_deploy.graph.fold import fold  # noqa: E402
from lmh_deploy.graph.interpret import run_reference, run_torch  # noqa: E402


def _conv64(x, w, b, stride, pad):
    return torch.nn.functional.conv2d(torch.from_numpy(np.asarray(x, np.float64)),
                                      torch.from_numpy(np.asarray(w, np.float64)),
                                      torch.from_numpy(np.asarray(b, np.float64)),
                                      stride=stride, padding=pad).numpy()


def test_split_parts_are_exact_and_fine():
    model = random_model("cnn", "lmh", 4, input_shape=(1, 14, 14), input_quantum=2.0 ** -10,
                         input_bound=1.0).eval()
    g_one = fold(model, split=False)
    g = fold(model)
    names = [o.name for o in g.ops]
    assert names[:3] == ["conv0_hi", "conv0_lo", "conv0"]
    assert g.op("conv0").kind == "add" and g.op("conv0").attrs["split"]
    for op in g.ops:
        if op.kind != "synapse":
            continue
        w = op.arrays["weight"].astype(np.float64)
        qw, qo = op.attrs["weight_grid"], op.attrs["out_grid"]
        assert np.log2(qw).is_integer() and np.log2(qo).is_integer()
        assert np.all(np.mod(w / qw, 1) == 0)
        assert op.attrs["out_bound"] / qo < 2.0 ** 24  # every partial sum exact in float32
        b = op.arrays["bias"].astype(np.float64)
        assert np.all(np.mod(b / qo, 1) == 0)  # the bias on the part's output grid
        if op.attrs.get("part") == "lo":  # b_lo: the residual of b_hi, below the high grid
            hi = g.op(op.name[:-3] + "_hi")
            assert np.abs(b).max() <= hi.attrs["out_grid"] / 2 and qo < hi.attrs["out_grid"]
    # first layer: one grid 2**-10 input levels leaves a coarse weight step; the split does not
    e_one, e = g_one.meta["weight_error"]["conv0"], g.meta["weight_error"]["conv0"]
    assert e_one > 1e-4 and e < 1e-6, (e_one, e)
    syn = model.layers["conv0"]
    w_true = (syn.layer.weight.detach().double() * (syn.bn.weight.detach().double() /
              torch.sqrt(syn.bn.running_var.double() + syn.bn.eps)).view(-1, 1, 1, 1)).numpy()
    np.testing.assert_allclose(g.synapse_weights("conv0")[0], w_true, rtol=0, atol=1e-6 * np.abs(w_true).max())
    # the bias too: b_hi + b_lo within the low grid of the folded bias (b_hi alone: q_out / 2)
    bn = syn.bn
    b_true = (bn.bias.detach().double() - bn.running_mean.double() * bn.weight.detach().double()
              / torch.sqrt(bn.running_var.double() + bn.eps)).numpy()
    lo_grid = g.op("conv0_lo").attrs["out_grid"]
    assert np.abs(g.synapse_weights("conv0")[1] - b_true).max() <= lo_grid / 2 * 1.0001
    # spikes: numpy and torch runtimes identical; the trained module closer to the split graph
    x = (np.round(np.random.RandomState(0).rand(64, 1, 14, 14) * 1024) / 1024).astype(np.float32)
    ref, tor = run_reference(g, x), run_torch(g, x)
    for k in ref.spikes:
        np.testing.assert_array_equal(ref.spikes[k], tor.spikes[k])
    np.testing.assert_array_equal(ref.logits, tor.logits)
    with torch.no_grad():
        _, sp = model.run(torch.from_numpy(x), record=True)
    one = run_reference(g_one, x)
    agree = min(float((sp[k].numpy() == ref.spikes[k]).mean()) for k in ref.spikes)
    agree_one = min(float((sp[k].numpy() == one.spikes[k]).mean()) for k in ref.spikes)
    assert agree >= 0.999 and agree >= agree_one, (agree, agree_one)


def test_layer_chain_merges_split_synapses():
    """A split MLP is still a chain: each layer carries w_hi and w_lo, weight64 their exact sum,
    and the layer list survives the one serializer (float32 arrays) unchanged."""
    from lmh_deploy.graph.schema import layers_from_dict, layers_to_dict

    model = random_model("mlp", "lmh", 4, input_quantum=1 / 16, input_bound=1.0).eval()
    g = fold(model)
    chain = g.layer_chain()
    assert [c.name for c in chain] == ["sn0", "sn1", "fc2"]
    arrays = {}
    back = layers_from_dict(json.loads(json.dumps(layers_to_dict(chain, arrays))), arrays)
    for c, c2, syn in zip(chain, back, ("fc0", "fc1", "fc2")):
        assert c.synapse.attrs["split"] and c.weight64.dtype == np.float64
        np.testing.assert_array_equal(c.weight64, g.synapse_weights(syn)[0])
        np.testing.assert_array_equal(c.weight, g.op(f"{syn}_hi").arrays["weight"])
        np.testing.assert_array_equal(c2.weight64, c.weight64)
        # exact in float64: the sum keeps both parts (a float32 sum would drop w_lo)
        assert np.any(c.weight64 != c.weight.astype(np.float32).astype(np.float64))


CIFAR_NORM = {"mean": [125 / 255, 123 / 255, 114 / 255], "std": [0.2470, 0.2435, 0.2616], "scale": 255.0}


def _normalized(p, norm):
    """The training pipeline's float32 normalization (data.transforms.ToFloat)."""
    from lmh_deploy.data.transforms import ToFloat

    return torch.stack([ToFloat(norm["mean"], norm["std"])(torch.from_numpy(im)) for im in p]).numpy()


def test_normalized_input_deploys_raw_pixels_with_exact_padding():
    model = random_model("cnn", "lmh", 4, input_shape=(3, 12, 12), input_norm=CIFAR_NORM).eval()
    g = fold(model)
    assert g.input_quantum == 2.0 ** -8 and g.input_bound == 1.0
    norm = g.meta["input_norm"]
    assert norm["pixel_mean"] == [125, 123, 114] and norm["border_error"] == 0.0
    p = np.random.RandomState(1).randint(0, 256, (16, 3, 12, 12)).astype(np.uint8)
    xn = _normalized(p, CIFAR_NORM)
    u = raw_input(xn, norm)
    np.testing.assert_array_equal(u, (p.astype(np.float32) - np.array([125, 123, 114], np.float32)
                                      .reshape(3, 1, 1)) / 256)
    # first-layer current in float64: deployed (raw pixels, folded normalization) vs the trained
    # conv on the exact normalized image with zero padding -- the border rows/columns included
    syn = model.layers["conv0"]
    inv = (syn.bn.weight.detach().double() / torch.sqrt(syn.bn.running_var.double() + syn.bn.eps))
    w = (syn.layer.weight.detach().double() * inv.view(-1, 1, 1, 1)).numpy()
    b = ((-syn.bn.running_mean.double()) * inv + syn.bn.bias.detach().double()).numpy()
    if syn.layer.bias is not None:
        b = b + syn.layer.bias.detach().double().numpy() * inv.numpy()
    mean = np.array(CIFAR_NORM["mean"]).reshape(3, 1, 1)
    std = np.array(CIFAR_NORM["std"]).reshape(3, 1, 1)
    x_exact = (p / 255.0 - mean) / std
    want = _conv64(x_exact, w, b, 1, 1)
    wd, bd = g.synapse_weights("conv0")
    got = _conv64(u, wd, bd, 1, 1)
    scale = np.abs(want).max()
    assert np.abs(got - want).max() <= 1e-6 * scale
    border = np.abs(got - want)[..., [0, -1], :].max()
    assert border <= 1e-6 * scale
    # padding the raw image with 0 is padding the normalized image with 0; a wrong pad (the raw
    # pixel 0) would be off by ~|w| mean/std at the border: a large error
    assert np.abs(_conv64(np.pad(u, ((0, 0), (0, 0), (1, 1), (1, 1)), constant_values=-0.45), wd, bd, 1, 0)
                  - want)[..., 0, :].max() > 1e-2 * scale
    # spikes: the trained module on normalized images vs the deployed graph on raw pixels
    ref = run_reference(g, u)
    with torch.no_grad():
        _, sp = model.run(torch.from_numpy(xn), record=True)
    agree = min(float((sp[k].numpy() == ref.spikes[k]).mean()) for k in ref.spikes)
    assert agree >= 0.999, agree


def test_resnet19_cifar_first_layer_error_below_1e5():
    """The acceptance figure: random ResNet-19 at 3x32x32 with the CIFAR normalization grid."""
    from lmh_deploy.data.transforms import input_norm

    model = random_model("resnet19", "lmh", 4, input_shape=(3, 32, 32),
                         input_norm=input_norm("cifar10")).eval()
    g = fold(model)
    g_one = fold(model, split=False)
    first = g.meta["weight_error"]["conv0"]
    assert first <= 1e-5, first
    assert g_one.meta["weight_error"]["conv0"] > 1e-4  # what one grid gives (3e-4)
    assert max(g.meta["weight_error"].values()) <= 1e-5


@pytest.mark.slow
def test_lmh_verify_reports_the_resnet19_cifar_first_layer_error(tmp_path, capsys):
    """lmh-verify on a random ResNet-19 at 3x32x32 with the CIFAR-10 normalization (raw pixels
    deployed), on two images of a fabricated CIFAR-10 test batch: first-layer error <= 1e-5."""
    import os
    import pickle

    from _deploy_models import save_model

    from lmh_deploy.cli import verify as cli_verify
    from lmh_deploy.data.transforms import input_norm

    d = tmp_path / "cifar-10-batches-py"
    os.makedirs(d)
    rng = np.random.default_rng(0)
    for f in [f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]:
        with open(d / f, "wb") as fh:
            pickle.dump({b"labels": [int(v) for v in rng.integers(0, 10, 2)],
                         b"data": rng.integers(0, 256, (2, 3072), dtype=np.uint8)}, fh, protocol=2)
    ck = save_model(random_model("resnet19", "lmh", 2, input_shape=(3, 32, 32),
                                 input_norm=input_norm("cifar10")), tmp_path / "r19.pt")
    js = tmp_path / "v.json"
    rc = cli_verify.main([str(ck), "--format", "onnx", "--runtime", "deployed-torch", "--dataset",
                          "cifar10", "--data-dir", str(tmp_path), "--limit", "2",
                          "--fidelity-timesteps", "2", "--min-spike-agreement", "0.9",
                          "--max-accuracy-drop", "100", "--json", str(js)])
    out = capsys.readouterr().out
    rep = json.loads(js.read_text())
    name, err = rep["weight_error"]["first_layer"]
    assert name == "conv0" and err <= 1e-5, err
    assert f"first layer conv0 {err:.3g}" in out
    assert rep["runtimes_exact"] and rc == 0, out
