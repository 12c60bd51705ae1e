"""Hand-built NIR graphs (not via the exporter) checked against hand-computed values, and bad
input: unknown primitive, mismatched shape, ambiguous cycle -> one-line errors naming the node."""
import subprocess
import sys

import numpy as np
import pytest

nir = pytest.importorskip("nir")

from lmh_deploy.errors import NirGraphError  # noqa: E402
from lmh_deploy.nir.program import load_program  # noqa: E402
from lmh_deploy.nir.run_numpy import run_nir  # noqa: E402
from lmh_deploy.nir.run_torch import run_nir_torch  # noqa: E402

F32 = np.float32


def _soft_reset_graph(lam=0.5, theta=1.0, levels=1, v0=0.0):
    """x -> M (I, v0) ; M -> Scale(lam-1) -> M ; M -> L Thresholds at k*theta (strict, nextafter)
    -> [sum] -> Scale(-lam*theta) -> M ; spikes -> Output.  Names chosen NOT in topological
    order, to show the delays are structural."""
    one = np.ones(1, F32)
    nodes = {"in": nir.Input(input_type={"input": np.array([1])}),
             "a_mem": nir.I(r=one, metadata={"v0": np.full(1, v0, F32)}),
             "b_leak": nir.Scale(scale=np.full(1, lam - 1.0)),
             "c_reset": nir.Scale(scale=np.full(1, -lam * theta)),
             "out": nir.Output(output_type={"output": np.array([1])})}
    edges = [("in", "a_mem"), ("a_mem", "b_leak"), ("b_leak", "a_mem"), ("c_reset", "a_mem")]
    thr = [np.nextafter(F32(k * theta), F32(-np.inf), dtype=F32) for k in range(1, levels + 1)]
    if levels == 1:
        nodes["z_spk"] = nir.Threshold(threshold=np.full(1, thr[0], F32))
        edges += [("a_mem", "z_spk")]
    else:
        nodes["z_spk"] = nir.Scale(scale=one)
        for k, t in enumerate(thr, 1):
            nodes[f"t{k}"] = nir.Threshold(threshold=np.full(1, t, F32))
            edges += [("a_mem", f"t{k}"), (f"t{k}", "z_spk")]
    edges += [("z_spk", "c_reset"), ("z_spk", "out")]
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata={}, type_check=False)


def _run_all(g, x, tmp_path):
    p = tmp_path / "g.nir"
    nir.write(p, g)
    runs = [run_nir(p, x), run_nir(p, x, fuse=False), run_nir_torch(p, x)]
    return runs


def test_hand_built_soft_reset_neuron(tmp_path):
    # lambda = 0.5, theta = 1:  m = 0.5 v + x ; s = [m >= 1] ; v = m - s
    x = np.array([1.0, 0.25, 0.5, 1.5, 0.75, 0.0], F32).reshape(6, 1, 1)
    # m: 1.0 (exactly theta: fires), .25, .625, 1.8125, 1.15625, .078125
    want = np.array([1, 0, 0, 1, 1, 0], F32)
    g = _soft_reset_graph()
    prog = load_program(g)
    assert len(prog.fused) == 1 and prog.fused[0].model == "lmht"
    assert float(prog.fused[0].theta) == 1.0 and float(prog.fused[0].params["lam"][0]) == 0.5
    for run in _run_all(g, x, tmp_path):
        np.testing.assert_array_equal(run.logits[:, 0, 0], want)


def test_hand_built_two_level_neuron(tmp_path):
    # lambda = 1, theta = 1, L = 2: m = v + x ; s = clip(floor(m), 0, 2) ; v = m - s
    x = np.array([2.0, 0.5, 1.5, 3.75, 0.0, 1.0], F32).reshape(6, 1, 1)
    # m: 2 -> s2 v0 ; .5 -> 0 ; 2.0 -> 2 v0 ; 3.75 -> 2 v1.75 ; 1.75 -> 1 v.75 ; 1.75 -> 1
    want = np.array([2, 0, 2, 2, 1, 1], F32)
    g = _soft_reset_graph(lam=1.0, levels=2)
    prog = load_program(g)
    assert prog.fused and prog.fused[0].levels == 2
    for run in _run_all(g, x, tmp_path):
        np.testing.assert_array_equal(run.logits[:, 0, 0], want)


def test_initial_state_from_metadata(tmp_path):
    # v0 = 0.5 (theta/2): m0 = 0.5*0.5 + 0.75 = 1.0 -> fires exactly at threshold
    x = np.array([0.75, 0.0], F32).reshape(2, 1, 1)
    for run in _run_all(_soft_reset_graph(v0=0.5), x, tmp_path):
        np.testing.assert_array_equal(run.logits[:, 0, 0], [1, 0])


def _write(tmp_path, nodes, edges):
    p = tmp_path / "bad.nir"
    nir.write(p, nir.NIRGraph(nodes=nodes, edges=edges, metadata={}, type_check=False))
    return p


def test_unknown_primitive_names_the_node(tmp_path):
    p = _write(tmp_path, {"in": nir.Input(input_type={"input": np.array([2])}),
                          "weird": nir.CubaLI(tau_syn=np.ones(2), tau_mem=np.ones(2),
                                              r=np.ones(2), v_leak=np.zeros(2)),
                          "out": nir.Output(output_type={"output": np.array([2])})},
               [("in", "weird"), ("weird", "out")])
    with pytest.raises(NirGraphError, match="'weird'.*CubaLI"):
        load_program(p)


def test_mismatched_shape_names_the_node(tmp_path):
    p = _write(tmp_path, {"in": nir.Input(input_type={"input": np.array([5])}),
                          "fc": nir.Affine(weight=np.ones((3, 4), F32), bias=np.zeros(3, F32)),
                          "out": nir.Output(output_type={"output": np.array([3])})},
               [("in", "fc"), ("fc", "out")])
    with pytest.raises(NirGraphError, match="'fc'.*mismatched shape"):
        load_program(p)


def test_ambiguous_cycle_names_the_node(tmp_path):
    one = np.ones(2, F32)
    p = _write(tmp_path, {"in": nir.Input(input_type={"input": np.array([2])}),
                          "a": nir.I(r=one), "b": nir.I(r=one),
                          "out": nir.Output(output_type={"output": np.array([2])})},
               [("in", "a"), ("in", "b"), ("a", "b"), ("b", "a"), ("b", "out")])
    with pytest.raises(NirGraphError, match="'a'.*ambiguous cycle.*2 entries"):
        load_program(p)


def test_corrupt_file(tmp_path):
    p = tmp_path / "x.nir"
    p.write_bytes(b"not hdf5")
    with pytest.raises(NirGraphError, match="not a NIR"):
        load_program(p)


def test_cli_errors_exit_nonzero_and_write_nothing(tmp_path):
    """lmh-export --format nir --form temporal on a model with a non-causal Omega: one-line error
    naming the unrolled form, exit 2, no output or temp file left behind."""
    torch = pytest.importorskip("torch")
    from lmh_deploy.checkpoint import save_checkpoint
    from lmh_deploy.models import build_model, default_config

    torch.manual_seed(0)
    ck = save_checkpoint(tmp_path / "m.pt", build_model(default_config("mlp", "lmht", 4)).eval())
    before = set(tmp_path.iterdir())
    r = subprocess.run([sys.executable, "-m", "lmh_deploy.cli.export", str(ck), "--format", "nir",
                        "--form", "temporal"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    err = r.stderr.strip().splitlines()
    assert len(err) == 1 and "unrolled" in err[0]
    assert set(tmp_path.iterdir()) == before
    r = subprocess.run([sys.executable, "-m", "lmh_deploy.cli.export", str(ck), "--format", "nir",
                        "-o", str(tmp_path / "m.nir")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert load_program(tmp_path / "m.nir").form == "unrolled"
