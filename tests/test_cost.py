"""The cost model (lmh_deploy.cost): counts against numbers computed by hand, and against an
independent computation (the network's own ops with all-ones weights) on folded graphs."""
from __future__ import annotations

import numpy as np
import pytest

from lmh_deploy import cost
from lmh_deploy.lava import resources
from lmh_deploy.cost import NetDesc, Population, Projection

# ---------------------------------------------------------------------------------------------
# a two-layer MLP: input (4,) -> fc0 [3, 4] -> h (3 neurons) -> fc1 [2, 3] -> readout
# ---------------------------------------------------------------------------------------------


def mlp(levels=1):
    h = Population("h", (3,), levels=levels)
    fc0 = Projection("fc0", "linear", None, (4,), (4,), (3,), weight_shape=(3, 4), target="h")
    fc1 = Projection("fc1", "linear", "h", (3,), (3,), (2,), weight_shape=(2, 3))
    return NetDesc((h,), (fc0, fc1), (4,))


# [T=2, B=2, 3]
MLP_SPIKES = np.array([[[1, 0, 1], [0, 0, 0]],
                       [[1, 1, 0], [0, 1, 0]]], np.float32)


def test_mlp_counts_by_hand():
    d = mlp()
    r = cost.cost_report(d, {"h": MLP_SPIKES})
    fc0, fc1 = r["layers"]
    # synapses: fc0 4*3 = 12, fc1 3*2 = 6; fan-out of an input = 3, of a hidden neuron = 2
    assert (fc0["synapses"], fc1["synapses"]) == (12, 6)
    assert (fc0["fan_out_max"], fc1["fan_out_max"], fc0["fan_in_max"], fc1["fan_in_max"]) == (3, 2, 4, 3)
    # spikes: b0 has 2 + 2 = 4, b1 has 0 + 1 = 1 -> 5 spikes / 2 samples, each reaching 2 synapses
    assert fc1["sops"] == 5.0  # 5 * 2 / 2
    assert fc0["sops"] == 0.0
    # firing rate of h: 5 spikes / (T=2 * B=2 * 3 neurons) = 5/12
    assert fc0["firing_rate"] == pytest.approx(5 / 12)
    assert r["populations"][0]["spikes_per_sample"] == 2.5
    # the analog layer: 12 MACs per step, at T=2 steps -> 24; once -> 12
    assert (fc0["macs"], fc0["macs_once"]) == (24, 12)
    t = r["totals"]
    assert (t["synapses"], t["sops_per_sample"], t["sops_per_step"]) == (18, 5.0, 2.5)
    assert (t["analog_macs_per_sample"], t["ann_macs_per_sample"]) == (24, 18)
    e = r["energy"]
    assert e["snn_pj"] == pytest.approx(0.9 * 5 + 4.6 * 24)       # 114.9 pJ
    assert e["snn_once_pj"] == pytest.approx(0.9 * 5 + 4.6 * 12)  # 59.7 pJ
    assert e["ann_pj"] == pytest.approx(4.6 * 18)                   # 82.8 pJ


def test_mlp_per_timesteps_prefix():
    rows = [cost.cost_report(mlp(), {"h": MLP_SPIKES}, t)["totals"] for t in (1, 2)]
    # T=1: spikes at t0 only: b0 has 2, b1 has 0 -> 2 * 2 / 2 = 2 SOPs; 12 analog MACs
    assert [(r["timesteps"], r["sops_per_sample"], r["analog_macs_per_sample"]) for r in rows] == \
        [(1, 2.0, 12), (2, 5.0, 24)]


def test_graded_lmht_counts():
    d = mlp(levels=2)
    s = np.array([[[2, 0, 1]], [[1, 2, 0]]], np.float32)  # [T=2, B=1, 3], counts 0..2
    r = cost.cost_report(d, {"h": s})
    fc1 = r["layers"][1]
    # SOPs weight each count by its value: (2 + 1 + 1 + 2) * fan-out 2 = 12
    assert fc1["sops"] == 12.0
    # events count a message once: 4 non-zero counts * 2 = 8
    assert fc1["events"] == 8.0
    # firing rate: 6 / (2 steps * 3 neurons) = 1.0 (graded: may exceed one spike per step)
    assert r["populations"][0]["firing_rate"] == 1.0


# ---------------------------------------------------------------------------------------------
# a small conv net with padding and stride and a truncating pool:
#   input (1, 5, 5) -> conv0 [2, 1, 3, 3] stride 2 pad 1 -> a (2, 3, 3)
#   a -> conv1 [3, 2, 3, 3] stride 1 pad 1 -> b (3, 3, 3)
#   b -> sumpool 2 -> (3, 1, 1) -> flatten -> fc [2, 3] -> readout
# ---------------------------------------------------------------------------------------------


def convnet():
    a, b = Population("a", (2, 3, 3)), Population("b", (3, 3, 3))
    conv0 = Projection("conv0", "conv", None, (1, 5, 5), (1, 5, 5), (2, 3, 3),
                       weight_shape=(2, 1, 3, 3), stride=2, padding=1, target="a")
    conv1 = Projection("conv1", "conv", "a", (2, 3, 3), (2, 3, 3), (3, 3, 3),
                       weight_shape=(3, 2, 3, 3), stride=1, padding=1, target="b")
    fc = Projection("fc", "linear", "b", (3, 3, 3), (3, 1, 1), (2,), weight_shape=(2, 3),
                    pool=2)
    return NetDesc((a, b), (conv0, conv1, fc), (1, 5, 5))


def test_axis_counts_stride_padding_by_hand():
    # 5 inputs, k=3, stride 2, pad 1 -> 3 outputs covering rows [-1,1], [1,3], [3,5]
    assert cost.axis_fanout(5, 3, 3, 2, 1).tolist() == [1, 2, 1, 2, 1]
    assert cost.axis_fanin(5, 3, 3, 2, 1).tolist() == [2, 3, 2]  # padding taps excluded
    # 3 inputs, k=3, stride 1, pad 1 -> windows [-1,1], [0,2], [1,3]
    assert cost.axis_fanout(3, 3, 3, 1, 1).tolist() == [2, 3, 2]
    assert cost.axis_fanin(3, 3, 3, 1, 1).tolist() == [2, 3, 2]
    # no padding, stride 2, k=2 on 5 inputs -> 2 outputs over [0,1], [2,3]: row 4 is dropped
    assert cost.axis_fanout(5, 2, 2, 2, 0).tolist() == [1, 1, 1, 1, 0]


def test_conv_fanout_border_cases_by_hand():
    conv0, conv1, fc = convnet().projections
    f0 = cost.fanout(conv0)  # 2 out channels * fy[y] * fx[x], fy = fx = [1, 2, 1, 2, 1]
    assert (f0[0, 0, 0], f0[0, 0, 1], f0[0, 1, 1], f0[0, 2, 2]) == (2, 4, 8, 2)
    f1 = cost.fanout(conv1)  # 3 out channels * fy * fx, fy = fx = [2, 3, 2]
    assert (f1[0, 0, 0], f1[1, 0, 1], f1[0, 1, 1]) == (12, 18, 27)  # corner, edge, centre
    # the pool truncates row 2 and column 2; a pooled cell reaches the 2 readout units
    f2 = cost.fanout(fc)
    assert f2[:, :2, :2].tolist() == np.full((3, 2, 2), 2).tolist()
    assert f2[:, 2, :].sum() == 0 and f2[:, :, 2].sum() == 0
    # fan-in: conv0 corner output sees 2*2 real pixels, centre 3*3; the readout 3 cells * 4
    fi0 = cost.fanin(conv0)
    assert (fi0[0, 0, 0], fi0[0, 1, 1]) == (4, 9)
    assert cost.fanin(fc).tolist() == [12, 12]


def test_convnet_counts_by_hand():
    d = convnet()
    conv0, conv1, fc = d.projections
    # synapses = sum of fan-outs: conv0 2 * (1+2+1+2+1)^2 = 98, conv1 2 in * 3 out * 7^2 = 294,
    # fc: 12 pooled-in neurons * 2 = 24 (the 15 truncated neurons have none)
    assert [cost.synapses(p) for p in d.projections] == [98, 294, 24]
    assert [int(cost.fanin(p).sum()) for p in d.projections] == [98, 294, 24]
    assert [cost.n_weights(p) for p in d.projections] == [18, 54, 6]
    a = np.zeros((2, 1, 2, 3, 3), np.float32)  # [T=2, B=1, 2, 3, 3]
    a[0, 0, 0, 1, 1] = 1  # centre: fan-out 27
    a[0, 0, 1, 0, 0] = 1  # corner: 12
    a[1, 0, 0, 1, 1] = 1  # centre: 27
    a[1, 0, 1, 0, 1] = 1  # edge: 18
    b = np.zeros((2, 1, 3, 3, 3), np.float32)
    b[0, 0, 0, 0, 0] = 1  # pooled: 2
    b[0, 0, 2, 2, 2] = 1  # truncated row/column: 0
    b[1, 0, 1, 1, 0] = 1  # pooled: 2
    b[1, 0, 1, 0, 2] = 1  # truncated column: 0
    r = cost.cost_report(d, {"a": a, "b": b})
    rows = {x["name"]: x for x in r["layers"]}
    assert rows["conv1"]["sops"] == 84.0  # 27 + 12 + 27 + 18
    assert rows["fc"]["sops"] == 4.0      # 2 + 0 + 2 + 0
    assert rows["conv0"]["macs"] == 196   # 98 per step * T=2
    # firing rates: a: 4 / (2 * 18) = 1/9; b: 4 / (2 * 27) = 2/27
    assert rows["conv0"]["firing_rate"] == pytest.approx(1 / 9)
    assert rows["conv1"]["firing_rate"] == pytest.approx(2 / 27)
    t = r["totals"]
    # ANN: MACs once = 98 + 294 + (3 pooled cells * 2) = 398; pool adds: 3 cells * 3 = 9
    assert (t["sops_per_sample"], t["ann_macs_per_sample"], t["ann_adds_per_sample"]) == (88.0, 398, 9)
    assert r["energy"]["snn_pj"] == pytest.approx(0.9 * 88 + 4.6 * 196)  # 980.8
    assert r["energy"]["ann_pj"] == pytest.approx(4.6 * 398 + 0.9 * 9)   # 1838.9
    # runtimes that record flat layers ([T, B, N], e.g. Lava) give the same counts
    flat = cost.cost_report(d, {"a": a.reshape(2, 1, -1), "b": b.reshape(2, 1, -1)})
    assert flat["totals"] == t
    # T=1: conv1 27 + 12 = 39, fc 2 + 0 = 2; analog MACs 98
    t1 = cost.cost_report(d, {"a": a, "b": b}, timesteps=1)["totals"]
    assert (t1["sops_per_sample"], t1["analog_macs_per_sample"]) == (41.0, 98)
    with pytest.raises(ValueError, match="spikes hold 2"):
        cost.cost_report(d, {"a": a, "b": b}, timesteps=3)


def test_grouped_conv_fanout():
    # 2 groups: each input channel reaches only its group's 4/2 = 2 output channels
    p = Projection("g", "conv", "x", (2, 1, 1), (2, 1, 1), (4, 1, 1), weight_shape=(4, 1, 1, 1),
                   groups=2)
    assert cost.fanout(p).tolist() == [[[2]], [[2]]]
    assert cost.fanin(p).tolist() == [[[1]]] * 4


# ---------------------------------------------------------------------------------------------
# Loihi 2 estimate and the fixed-point check
# ---------------------------------------------------------------------------------------------


def test_loihi_cores_by_hand():
    big = Population("big", (10000,))
    p0 = Projection("p0", "linear", None, (1000,), (1000,), (10000,), weight_shape=(10000, 1000),
                    target="big", weight=np.ones((2, 2)))
    p1 = Projection("p1", "linear", "big", (10000,), (10000,), (10,), weight_shape=(10, 10000),
                    weight=np.ones((2, 2)))
    est = resources.loihi_estimate(NetDesc((big,), (p0, p1), (1000,)))
    # big: 10,000 neurons / 8,192 -> 2 cores; 10,000,000 synapses / 937,500 -> 11 cores
    # readout: 10 units, 100,000 synapses -> 1 core
    assert [t["cores"] for t in est["layers"]] == [11, 1]
    assert (est["cores"], est["chips"]) == (12, 1)
    small = resources.LoihiLimits(neurons_per_core=100, synapses_per_core=10 ** 9, cores_per_chip=4)
    est = resources.loihi_estimate(NetDesc((big,), (p0, p1), (1000,)), small)
    assert (est["cores"], est["chips"]) == (101, 26)  # 10,000 / 100 + 1 core; 101 / 4 -> 26


def test_fixed_point_fit_by_hand():
    h = Population("h", (1,), theta=1.0)
    p = Projection("p", "linear", "x", (2,), (2,), (1,), weight_shape=(1, 2), target="h",
                   weight=np.array([[1.0, -0.5]]), current_bound=1.5)
    f = resources.fixed_point_fit(NetDesc((h,), (p,), (2,)), p, weight_exp=6)
    # max|W| = 1: e = ceil(log2(1/127)) - 1 = -7; mantissas round(W / 2**-6) = 64, -32 (exact)
    # one state unit q = 2**(e - 6) = 2**-13: theta = 8192 units, bound 1.5 -> 12288 units
    assert (f["weight_exponent"], f["state_unit"]) == (-7, 2.0 ** -13)
    assert (f["theta_units"], f["current_bound_units"]) == (8192.0, 12288.0)
    assert (f["weight_max_rel_err"], f["weights_zeroed"]) == (0.0, 0.0)
    assert f["fits"] and f["bound_fits"]
    # theta = 2**10 -> 2**23 units: (L+1) * theta exceeds the 24-bit state
    h2 = Population("h", (1,), theta=2.0 ** 10)
    f2 = resources.fixed_point_fit(NetDesc((h2,), (p,), (2,)), p, weight_exp=6)
    assert f2["theta_units"] == 2.0 ** 23 and not f2["fits"]
    # a weight below half the mantissa step (2**-6 / 2) is zeroed
    p3 = Projection("p", "linear", "x", (2,), (2,), (1,), weight_shape=(1, 2), target="h",
                    weight=np.array([[1.0, 2.0 ** -8]]))
    assert resources.fixed_point_fit(NetDesc((h,), (p3,), (2,)), p3)["weights_zeroed"] == 0.5


# ---------------------------------------------------------------------------------------------
# folded graphs: describe() and SOPs against the network's own ops with all-ones weights
# ---------------------------------------------------------------------------------------------


def _sops_by_ones(graph, spikes):
    """SOPs per projection computed independently: push each source's summed counts through the
    projection's own ops (sum pool, flatten, conv/linear) with all-ones weights and no bias; the
    sum of the outputs is sum_i s_i * fanout(i)."""
    from lmh_deploy.graph.interpret import NumpyBackend as be

    by_name = {o.name: o for o in graph.ops}
    # a split synapse (<s>_hi + <s>_lo into the split add <s>) is one projection named <s>
    split = {o.inputs[0]: o.name for o in graph.ops if o.kind == "add" and o.attrs.get("split")}
    lo = {o.inputs[1] for o in graph.ops if o.kind == "add" and o.attrs.get("split")}
    out = {}
    for op in graph.ops:
        if op.kind not in ("synapse", "scale") or op.name in lo:
            continue
        chain, v = [], op.inputs[0]
        while v != "input" and by_name[v].kind in ("flatten", "sumpool"):
            chain.append(by_name[v])
            v = by_name[v].inputs[0]
        if v == "input":
            continue
        s = spikes[v].sum(0)  # [B, ...]
        for o in reversed(chain):
            s = be.flatten(s) if o.kind == "flatten" else be.sumpool(s, o.attrs["kernel"])
        if op.kind == "scale":
            y = s
        else:
            w = np.ones_like(op.arrays["weight"])
            b = np.zeros(w.shape[0], np.float32)
            y = (be.conv(s, w, b, op.attrs["stride"], op.attrs["padding"])
                 if op.attrs["op"] == "conv" else be.linear(s, w, b))
        out[split.get(op.name, op.name)] = float(np.asarray(y, np.float64).sum()) / s.shape[0]
    return out


@pytest.mark.parametrize("arch,neuron,shape", [("mlp", "lmht", (1, 8, 8)),
                                               ("cnn", "lmh", (1, 8, 8)),
                                               ("resnet20", "lif", (3, 8, 8))])
def test_folded_graph_sops_match_ones_weights(arch, neuron, shape):
    from _deploy_models import grid_inputs, random_model

    from lmh_deploy.graph.fold import fold
    from lmh_deploy.graph.interpret import run_reference

    g = fold(random_model(arch, neuron, 3, input_shape=shape))
    d = cost.describe(g)
    assert {p.name for p in d.populations} == set(g.neuron_names())
    assert [p for p in d.projections if p.target is None][0].name == g.output
    run = run_reference(g, grid_inputs(2, shape))
    r = cost.cost_report(d, run.spikes)
    ones = _sops_by_ones(g, run.spikes)
    got = {row["name"]: row["sops"] for row in r["layers"] if row["source"] != "input (analog)"}
    assert set(got) == set(ones)
    for k in ones:
        assert got[k] == pytest.approx(ones[k], rel=1e-12), k
    assert r["totals"]["sops_per_sample"] > 0
    for p in d.projections:
        assert cost.fanout(p).sum() == cost.fanin(p).sum(), p.name


def test_describe_cnn_structure():
    from _deploy_models import random_model

    from lmh_deploy.graph.fold import fold

    d = cost.describe(fold(random_model("cnn", "lmh", 2)))
    got = [(p.name, p.kind, p.source, p.target, p.pool, p.in_shape) for p in d.projections]
    assert got == [("conv0", "conv", None, "sn0", 1, (1, 8, 8)),
                   ("conv1", "conv", "sn0", "sn1", 1, (16, 8, 8)),
                   ("fc0", "linear", "sn1", "sn2", 2, (32, 4, 4)),
                   ("fc1", "linear", "sn2", None, 1, (128,))]
