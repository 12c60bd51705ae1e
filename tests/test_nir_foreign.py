"""Foreign NIR files (issue 15): the numpy runtime reproduces the producers' own spikes.

Fixtures (tests/fixtures/nir, written by scripts/make_nir_fixtures.py) carry the producer's spike
output beside each file; every case here must agree on every spike of every layer.
"""
from pathlib import Path

import h5py
import numpy as np
import pytest

nir = pytest.importorskip("nir")

from lmh_deploy.nir import foreign as nf  # noqa: E402

FIX = Path(__file__).parent / "fixtures" / "nir"

# (fixture, producer preset, dt override) -- all documented discretizations: 100 % expected
CASES = [
    ("snntorch_lif_mlp", "snntorch", None), ("snntorch_conv", "snntorch", None),
    ("snntorch_cubalif", "snntorch", None), ("snntorch_rec_lif", "snntorch", None),
    ("snntorch_lif_mlp", "nir", None), ("snntorch_rec_lif", "nir", None),  # dt read from r = tau/dt
    ("norse_lif_mlp", "norse", None), ("norse_conv", "norse", None),
    ("norse_cubalif", "norse", None),
    ("spikingjelly_lif_mlp", "spikingjelly", None), ("spikingjelly_conv", "spikingjelly", None),
    ("spikingjelly_cubalif", "spikingjelly", None), ("spikingjelly_conv", "nir", None),
    ("sinabs_conv", "sinabs", None),
    ("rockpool_lif_mlp", "rockpool", None), ("rockpool_cubalif", "rockpool", None),
    ("paper_lif_norse", "nir", 1e-4),
    ("paper_braille_noDelay_bias_zero", "snntorch-delay", None),
    ("paper_braille_noDelay_noBias_subtract", "snntorch-delay", None),
    ("paper_cnn_sinabs", "sinabs", None),
]


def _fixture(name):
    d = np.load(FIX / f"{name}.npz")
    ref = {k[len("spikes/"):]: d[k] for k in d.files if k.startswith("spikes/")}
    return d, ref


@pytest.mark.parametrize("name,producer,dt", CASES, ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_fixture_matches_producer(name, producer, dt):
    d, ref = _fixture(name)
    assert ref, f"{name}.npz has no reference spikes"
    prog = nf.load_foreign(FIX / f"{name}.nir", producer=producer, dt=dt)
    _, spikes = nf.run_foreign(prog, d["input"])
    agree = nf.agreement(ref, spikes)
    assert set(agree) == set(ref)
    assert all(a == 1.0 for a in agree.values()), agree
    assert sum(float(v.sum()) for v in ref.values()) >= 4  # the fixture does spike


def test_paper_lif_voltage_trace():
    """The NIR paper's single Norse LIF neuron: published voltage trace (lif_norse.csv)."""
    d, ref = _fixture("paper_lif_norse")
    prog = nf.load_foreign(FIX / "paper_lif_norse.nir", dt=1e-4)
    st = nf.ForeignStepper(prog, 1)
    vs, zs = [], []
    for t in range(d["input"].shape[0]):
        cur = st.step(d["input"][t])
        vs.append(st.state["1"][0, 0])
        zs.append(cur["1"][0, 0])
    np.testing.assert_allclose(vs, d["voltage/1"][:, 0, 0], rtol=0, atol=1e-6)
    assert np.array_equal(np.asarray(zs), ref["1"][:, 0, 0])
    assert int(np.sum(zs)) == int(ref["1"].sum()) > 0


def test_producer_dt_matters():
    """Reading τ in steps (the old behaviour) breaks the dynamics; dt from the file fixes it."""
    d, ref = _fixture("snntorch_lif_mlp")
    with pytest.warns(RuntimeWarning, match="forward Euler diverges"):
        prog = nf.load_foreign(FIX / "snntorch_lif_mlp.nir", dt=1.0)
    with np.errstate(all="ignore"):
        _, spikes = nf.run_foreign(prog, d["input"])
    assert min(nf.agreement(ref, spikes).values()) < 0.9


def test_rockpool_preset_matters():
    """Rockpool's files read literally (forward Euler at its dt, one spike, reset to v_reset)
    lose a quarter of its spikes; its preset (gain 1 from r = tau e^(-dt/tau)/dt, i = a_s (i + x),
    multi-spike, subtract) gives all of them (test_fixture_matches_producer)."""
    for name in ("rockpool_lif_mlp", "rockpool_cubalif"):
        d, ref = _fixture(name)
        assert max(float(v.max()) for v in ref.values()) >= 2  # multi-spike steps occur
        prog = nf.load_foreign(FIX / f"{name}.nir", producer="nir", dt=1e-3)
        _, spikes = nf.run_foreign(prog, d["input"])
        agree = nf.agreement(ref, spikes)
        assert all(0.6 < a < 0.9 for a in agree.values()), agree
    p = nf.load_foreign(FIX / "rockpool_cubalif.nir", producer="rockpool").nodes["1_LIFTorch"].params
    assert np.all(p["b"] == 1.0) and np.allclose(p["a"], np.exp(-1e-3 / 0.02))
    assert np.allclose(p["syn"]["a"], np.exp(-1e-3 / 0.01))


def _graph(nodes, edges):
    return nir.NIRGraph(nodes=nodes, edges=edges, type_check=False)


def test_lif_hand_trace_euler_and_exact():
    """One LIF neuron, τ = 2 ms, dt = 1 ms, r = 2, v_leak = 0, θ = 1: v += 0.5(2u − v)."""
    g = _graph({"in": nir.Input(np.array([1])),
                "lif": nir.LIF(tau=np.array([2e-3]), r=np.array([2.0]), v_leak=np.array([0.0]),
                               v_threshold=np.array([1.0]), v_reset=np.array([-0.25])),
                "out": nir.Output(np.array([1]))}, [("in", "lif"), ("lif", "out")])
    prog = nf.load_foreign(g, dt=1e-3)
    u = np.array([0.5, 0.5, 0.5, 0.0, 1.0], np.float32).reshape(5, 1, 1)
    st = nf.ForeignStepper(prog, 1)
    vs, zs = [], []
    for t in range(5):
        cur = st.step(u[t])
        vs.append(float(st.state["lif"][0, 0]))
        zs.append(float(cur["lif"][0, 0]))
    # v: 0.5, 0.75, 0.875, 0.4375, 1.21875 -> spike -> v_reset
    assert vs == [0.5, 0.75, 0.875, 0.4375, -0.25]
    assert zs == [0, 0, 0, 0, 1]
    prog = nf.load_foreign(g, dt=1e-3, exact=True)
    st = nf.ForeignStepper(prog, 1)
    st.step(u[0])
    a = np.exp(-0.5)
    assert st.state["lif"][0, 0] == pytest.approx(2 * 0.5 * (1 - a), rel=1e-6)


def test_cubalif_hand_trace_orders():
    """CubaLIF τ_s = τ_m = 2 ms, dt = 1 ms, w_in = r = 1: new-current order (snnTorch, SJ,
    Norse importer) vs the NIR paper's explicit Euler (old current)."""
    p = dict(tau_syn=np.array([2e-3]), tau_mem=np.array([2e-3]), r=np.array([1.0]),
             v_leak=np.array([0.0]), v_threshold=np.array([10.0]), w_in=np.array([1.0]))
    g = _graph({"in": nir.Input(np.array([1])), "n": nir.CubaLIF(**p),
                "out": nir.Output(np.array([1]))}, [("in", "n"), ("n", "out")])
    u = np.array([1.0, 0.0], np.float32).reshape(2, 1, 1)
    for producer, want in (("nir", [(0.5, 0.25), (0.25, 0.25)]),
                           ("nir-paper", [(0.5, 0.0), (0.25, 0.25)])):
        st = nf.ForeignStepper(nf.load_foreign(g, producer=producer, dt=1e-3), 1)
        got = []
        for t in range(2):
            st.step(u[t])
            i, v = st.state["n"]
            got.append((float(i[0, 0]), float(v[0, 0])))
        assert got == want, producer


def test_if_multispike_subtract_sinabs():
    g = _graph({"in": nir.Input(np.array([2])),
                "n": nir.IF(r=np.array([1.0, 1.0]), v_threshold=np.array([1.0, 1.0])),
                "out": nir.Output(np.array([2]))}, [("in", "n"), ("n", "out")])
    prog = nf.load_foreign(g, producer="sinabs")
    out, sp = nf.run_foreign(prog, np.array([[[2.5, -3.0]], [[0.6, 0.0]]], np.float32))
    assert sp["n"][:, 0].tolist() == [[2.0, 0.0], [1.0, 0.0]]   # 2.5 -> 2 spikes, 0.5 + 0.6 -> 1
    st = nf.ForeignStepper(prog, 1)
    st.step(np.array([[2.5, -3.0]], np.float32))
    assert st.state["n"].tolist() == [[0.5, -1.0]]              # subtract; clamped at -theta


def test_recurrent_bias_enters_at_t0_and_delay_placement():
    """Affine in a loop reads the neuron's spikes of t-1 and adds its bias at t = 0."""
    w = np.array([[0.0]]), np.array([0.25])
    g = _graph({"in": nir.Input(np.array([1])),
                "lif": nir.LIF(tau=np.array([1.0]), r=np.array([1.0]), v_leak=np.array([0.0]),
                               v_threshold=np.array([10.0]), v_reset=np.array([0.0])),
                "rec": nir.Affine(weight=w[0], bias=w[1]), "out": nir.Output(np.array([1]))},
               [("in", "lif"), ("lif", "rec"), ("rec", "lif"), ("lif", "out")])
    prog = nf.load_foreign(g, dt=1.0)   # dt = tau: v = r u (no memory)
    assert [prog.edges[i] for i in prog.delayed] == [("lif", "rec")]
    st = nf.ForeignStepper(prog, 1)
    st.step(np.zeros((1, 1), np.float32))
    assert st.state["lif"][0, 0] == 0.25


def test_nested_subgraph_equals_flat():
    flat = nir.read(FIX / "snntorch_rec_lif.nir", type_check=False)
    inner = {"input": nir.Input(np.array([10])), "lif": flat.nodes["1.lif"],
             "w_rec": flat.nodes["1.w_rec"], "output": nir.Output(np.array([10]))}
    sub = _graph(inner, [("input", "lif"), ("lif", "w_rec"), ("w_rec", "lif"), ("lif", "output")])
    nodes = {k: v for k, v in flat.nodes.items() if not k.startswith("1.")}
    nodes["1"] = sub
    edges = [(a if not a.startswith("1.") else "1", b if not b.startswith("1.") else "1")
             for a, b in flat.edges if not (a.startswith("1.") and b.startswith("1."))]
    nested = _graph(nodes, edges)
    d, ref = _fixture("snntorch_rec_lif")
    _, sp = nf.run_foreign(nf.load_foreign(nested, producer="snntorch"), d["input"])
    assert np.array_equal(sp["1.lif"], ref["1.lif"]) and np.array_equal(sp["3"], ref["3"])


def test_avgpool_conv1d_delay_threshold_scale():
    g = _graph({"in": nir.Input(np.array([1, 4])),
                "c": nir.Conv1d(input_shape=4, weight=np.ones((1, 1, 2)), stride=1, padding=0,
                                dilation=1, groups=1, bias=np.array([0.0])),
                "s": nir.Scale(scale=np.array([0.5])),
                "d": nir.Delay(delay=np.array([2e-3])),
                "th": nir.Threshold(threshold=np.array([0.6])),
                "out": nir.Output(np.array([1, 3]))},
               [("in", "c"), ("c", "s"), ("s", "d"), ("d", "th"), ("th", "out")])
    prog = nf.load_foreign(g, dt=1e-3)
    x = np.array([1, 0, 1, 1], np.float32).reshape(1, 1, 1, 4).repeat(4, axis=0)
    out, sp = nf.run_foreign(prog, x)
    # conv [1, 1, 2] * 0.5 = [0.5, 0.5, 1.0] > 0.6 -> [0, 0, 1], delayed by two steps
    assert out[:, 0, 0].tolist() == [[0, 0, 0], [0, 0, 0], [0, 0, 1], [0, 0, 1]]
    g2 = _graph({"in": nir.Input(np.array([1, 4, 4])),
                 "p": nir.AvgPool2d(kernel_size=np.array([2, 2]), stride=np.array([2, 2]),
                                    padding=np.array([0, 0])),
                 "out": nir.Output(np.array([1, 2, 2]))}, [("in", "p"), ("p", "out")])
    x2 = np.arange(16, dtype=np.float32).reshape(1, 1, 1, 4, 4)
    out2, _ = nf.run_foreign(nf.load_foreign(g2, dt=1.0), x2)
    assert out2[0, 0, 0].tolist() == [[2.5, 4.5], [10.5, 12.5]]


# ----------------------------------------------------------------------------- bad files


def _copy_with(tmp_path, name, edit):
    src = FIX / f"{name}.nir"
    dst = tmp_path / f"{name}.nir"
    dst.write_bytes(src.read_bytes())
    with h5py.File(dst, "r+") as f:
        edit(f["node"])
    return dst


def test_unsupported_primitive_one_line(tmp_path):
    def edit(n):
        del n["nodes/1/type"]
        n["nodes/1"].create_dataset("type", data=b"Conv3d")
    path = _copy_with(tmp_path, "snntorch_lif_mlp", edit)
    with pytest.raises(nf.ForeignNirError, match=r"node '1': unsupported NIR primitive 'Conv3d'"):
        nf.load_foreign(path)


def test_shape_mismatch_one_line(tmp_path):
    def edit(n):
        w = n["nodes/2/weight"][()]
        del n["nodes/2/weight"]
        n["nodes/2"].create_dataset("weight", data=w[:, :5])
    path = _copy_with(tmp_path, "snntorch_lif_mlp", edit)
    with pytest.raises(nf.ForeignNirError, match=r"node '2': Affine expects input \[\.\.\., 5\], "
                                                  r"got \[16\] \(shape mismatch\)"):
        nf.load_foreign(path, producer="snntorch")


def test_missing_t_and_wrong_rank():
    prog = nf.load_foreign(FIX / "snntorch_lif_mlp.nir", producer="snntorch")
    with pytest.raises(nf.ForeignNirError, match="does not say its T; give -T"):
        nf.run_foreign(prog, np.zeros((2, 8), np.float32))
    out, _ = nf.run_foreign(prog, np.zeros((2, 8), np.float32), timesteps=3)
    assert out.shape == (3, 2, 4)
    with pytest.raises(nf.ForeignNirError, match="wrong input rank 4"):
        nf.run_foreign(prog, np.zeros((2, 2, 2, 8), np.float32))
    with pytest.raises(nf.ForeignNirError, match=r"Input expects \[B, 8\], got \[2, 3\]"):
        nf.run_foreign(prog, np.zeros((2, 3), np.float32), timesteps=2)
    with pytest.raises(nf.ForeignNirError, match=r"Input expects frames \[T, B, 8\]"):
        nf.run_foreign(prog, np.zeros((4, 2, 9), np.float32))


def test_missing_dt_and_bad_names():
    with pytest.raises(nf.ForeignNirError, match="does not say its time step; give --dt"):
        nf.load_foreign(FIX / "paper_lif_norse.nir")
    with pytest.raises(nf.ForeignNirError, match="unknown producer 'torch2'"):
        nf.load_foreign(FIX / "paper_lif_norse.nir", producer="torch2")
    with pytest.raises(nf.ForeignNirError, match="--dt must be a positive"):
        nf.load_foreign(FIX / "paper_lif_norse.nir", dt=-1.0)


def test_paper_nested_file_with_dangling_edge():
    with pytest.raises(nf.ForeignNirError, match=r"node 'lif1': edge \('input', 'lif'\) names "
                                                  r"node 'lif' that the graph does not have"):
        nf.load_foreign(FIX / "paper_braille_noDelay_bias_zero_subgraph.nir", producer="snntorch")


def test_algebraic_loop_and_not_hdf5(tmp_path):
    g = _graph({"in": nir.Input(np.array([2])), "a": nir.Scale(scale=np.array([0.5, 0.5])),
                "b": nir.Scale(scale=np.array([0.5, 0.5])), "out": nir.Output(np.array([2]))},
               [("in", "a"), ("a", "b"), ("b", "a"), ("b", "out")])
    with pytest.raises(nf.ForeignNirError, match="loop without a neuron"):
        nf.load_foreign(g, dt=1.0)
    bad = tmp_path / "x.nir"
    bad.write_text("not hdf5")
    with pytest.raises(nf.ForeignNirError, match="not a NIR \\(HDF5\\) file"):
        nf.load_foreign(bad)


# ----------------------------------------------------------------------------- lmh-run


def _cli(argv, capsys):
    from lmh_deploy.cli.run import main

    rc = main([str(a) for a in argv])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def test_lmh_run_foreign_file_and_spikes(tmp_path, capsys):
    out = tmp_path / "s.npz"
    rc, text, err = _cli([FIX / "snntorch_rec_lif.nir", "--input", FIX / "snntorch_rec_lif.npz",
                          "--producer", "snntorch", "--save-spikes", out], capsys)
    assert rc == 0, err
    assert "producer snntorch, dt 0.0001 s" in text and "2 samples x 24 steps" in text
    d, ref = _fixture("snntorch_rec_lif")
    got = np.load(out)
    assert np.array_equal(got["spikes/1.lif"], ref["1.lif"])
    assert got["outputs"].shape == (24, 2, 3)


@pytest.mark.parametrize("argv,msg", [
    (["paper_lif_norse.nir", "--input", "paper_lif_norse.npz"], "give --dt SECONDS"),
    (["paper_braille_noDelay_bias_zero_subgraph.nir", "--producer", "snntorch",
      "--input", "paper_braille_noDelay_bias_zero.npz"], "names node 'lif'"),
    (["snntorch_lif_mlp.nir", "--runtime", "onnx", "--input", "snntorch_lif_mlp.npz"],
     "runs in nir, nir-literal, lava"),
    (["snntorch_lif_mlp.nir", "--runtime", "nir-torch", "--input", "snntorch_lif_mlp.npz"],
     "written by another tool; nir-torch runs only files written by lmh-export (it maps our "
     "neuron clusters to torch modules); use --runtime nir (numpy, the same discretization) or "
     "lava"),
    (["snntorch_lif_mlp.nir", "--input", "snntorch_conv.npz"], "wrong input rank 5"),
    (["snntorch_lif_mlp.nir", "--input", "paper_braille_noDelay_bias_zero.npz"],
     "Input expects frames [T, B, 8], got [256, 2, 12]"),
    (["snntorch_lif_mlp.nir", "--producer", "bogus", "--input", "snntorch_lif_mlp.npz"],
     "unknown producer 'bogus'"),
])
def test_lmh_run_bad_foreign_one_line_exit_2(argv, msg, capsys):
    argv = [FIX / a if a.endswith((".nir", ".npz")) else a for a in argv]
    rc, text, err = _cli(argv, capsys)
    assert rc == 2
    assert err.count("\n") == 1 and err.startswith("lmh-run: error: ") and msg in err, err


def test_lmh_run_static_input_needs_t(tmp_path, capsys):
    x = tmp_path / "x.npy"
    np.save(x, np.zeros((3, 8), np.float32))
    rc, _, err = _cli([FIX / "snntorch_lif_mlp.nir", "--input", x, "--producer", "snntorch"], capsys)
    assert rc == 2 and "give -T" in err
    rc, text, err = _cli([FIX / "snntorch_lif_mlp.nir", "--input", x, "--producer", "snntorch",
                          "-T", "5"], capsys)
    assert rc == 0 and "3 samples x 5 steps" in text
