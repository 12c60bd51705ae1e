"""Third-party NIR target forms (issue 15): what each importer reads, checked in the tool itself.

For every installed tool, the tool's own importer and simulator run the target file and must
produce exactly the spikes and outputs of the foreign-NIR runtime reading the same file under
that tool's preset (which documents the tool's discretization), so the target form is what the
tool runs and the printed losses are the only ones.
"""
import importlib

import numpy as np
import pytest

nir = pytest.importorskip("nir")

from lmh_deploy.graph.fold import fold  # noqa: E402
from lmh_deploy.nir import foreign, targets  # noqa: E402

from _deploy_models import grid_inputs, random_model, save_model  # noqa: E402

TOOLS = {"snntorch": ("snntorch", "snntorch"), "spikingjelly": ("spikingjelly", "spikingjelly"),
         "norse": ("norse", "norse-import"), "sinabs": ("sinabs", "sinabs")}


def _lif_graph(arch="mlp", seed=0):
    return fold(random_model(arch, "lif", 4, seed=seed))


def test_snntorch_lif_constants_and_lossy(tmp_path):
    g = _lif_graph()
    ng, lossy = targets.export_target(g, "snntorch")
    spec = g.neuron("sn0")
    lam = float(np.asarray(spec.params["lam_s"]).flat[0])
    node = ng.nodes["sn0"]
    assert isinstance(node, nir.LIF)
    if lam < 1:
        tau = 1e-4 / (1 - lam)
        assert np.allclose(node.tau, tau) and np.allclose(node.r, tau / 1e-4)
    assert np.all(node.v_reset == 0) and np.allclose(node.v_threshold, float(spec.theta))
    assert "reset to 0 after a spike (model: subtract theta)" in lossy
    assert any(s.startswith("v(0) = 0 (model: v_S(0) = ") for s in lossy)
    assert not any("AvgPool2d" in s for s in lossy)   # no pooling in the MLP
    _, lossy_cnn = targets.export_target(_lif_graph("cnn"), "snntorch")
    assert any("AvgPool2d" in s for s in lossy_cnn)


def test_norse_lif_gain_folded_into_synapse():
    g = _lif_graph()
    ng, lossy = targets.export_target(g, "norse", dt=1e-3)
    spec = g.neuron("sn0")
    lam = float(np.asarray(spec.params["lam_s"]).flat[0])
    w = np.asarray(g.op("fc0_hi").arrays["weight"], np.float64)  # target forms: the hi part
    if lam < 1:
        assert isinstance(ng.nodes["sn0"], nir.LIF) and np.all(ng.nodes["sn0"].r == 1)
        np.testing.assert_allclose(ng.nodes["fc0"].weight, (w / (1 - lam)).astype(np.float32))
        assert any("tau/dt folded" in s for s in lossy)


def test_refusals_one_line():
    from lmh_deploy.errors import ExportFormatError

    with pytest.raises(ExportFormatError, match="unknown NIR target 'loihi'"):
        targets.export_target(_lif_graph(), "loihi")
    lmh = fold(random_model("mlp", "lmh", 4, seed=3))
    mu_d = [float(np.asarray(lmh.neuron(n).params["mu_d"]).flat[0]) for n in lmh.neuron_names()]
    if any(m > 0 for m in mu_d):
        with pytest.raises(ExportFormatError, match="two-compartment LM-H .* no form in sinabs"):
            targets.export_target(lmh, "sinabs")
    radical = fold(random_model("mlp", "lmh-radical", 4))
    with pytest.raises(ExportFormatError, match="no third-party tool streams it"):
        targets.export_target(radical, "snntorch")


@pytest.mark.parametrize("tool", list(TOOLS))
@pytest.mark.parametrize("arch,neuron", [("mlp", "lif"), ("cnn", "lif"), ("mlp", "lmh")])
def test_tool_runs_target_exactly_as_documented(tool, arch, neuron, tmp_path):
    module, preset = TOOLS[tool]
    pytest.importorskip(module)
    g = fold(random_model(arch, neuron, 4, seed=1))
    path = tmp_path / f"m.{tool}.nir"
    try:
        targets.write_target(g, path, tool)
    except Exception as e:  # noqa: BLE001
        from lmh_deploy.errors import ExportFormatError

        assert isinstance(e, ExportFormatError) and tool == "sinabs" and neuron == "lmh", e
        return
    tf = targets.load_target(path)
    x = grid_inputs(6, g.input_shape, seed=2, scale=2.0)
    run = targets.run_target(tf, x, 5)
    prog = foreign.load_foreign(path, producer=preset)
    xq = targets._quantize(targets._frames(x, 5, len(g.input_shape)), tf.input_quantum,
                           tf.input_bound)
    out, spikes = foreign.run_foreign(prog, xq)
    assert set(run.spikes) == set(g.neuron_names())
    agree = foreign.agreement(run.spikes, spikes)
    assert all(v == 1.0 for v in agree.values()), agree
    np.testing.assert_array_equal(out.reshape(run.logits.shape), run.logits)
    assert sum(float(s.sum()) for s in run.spikes.values()) > 0


def test_lmh_export_target_cli(tmp_path, capsys):
    from lmh_deploy.cli.export import main

    ck = save_model(random_model("mlp", "lif", 4), tmp_path / "m.pt")
    rc = main([str(ck), "--format", "nir", "--target", "spikingjelly", "-o", str(tmp_path / "a.nir")])
    out = capsys.readouterr().out
    assert rc == 0 and "spikingjelly form at dt = 0.0001 s; LOSSY" in out
    assert "  - reset to 0 after a spike (model: subtract theta)" in out
    rc = main([str(ck), "--format", "nir", "--target", "bogus"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "unknown NIR target 'bogus'" in err
    rc = main([str(ck), "--format", "nir", "--dt", "1e-3"])
    err = capsys.readouterr().err
    assert rc == 2 and "--dt applies to --target" in err
    assert not (tmp_path / "m.nir").exists()


def test_lmh_verify_with_tool_runtime(tmp_path, capsys):
    pytest.importorskip("spikingjelly")
    from lmh_deploy.cli.verify import main

    ck = save_model(random_model("mlp", "lif", 4), tmp_path / "m.pt")
    rc = main([str(ck), "--format", "nir", "--runtime", "nir,spikingjelly", "--limit", "16"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "spikingjelly" in out.splitlines()[1]
    acc = [ln for ln in out.splitlines() if ln.startswith("accuracy ")]
    assert len(acc) == 1 and len(acc[0].split()) == 5   # reference-exact runtimes + tool + trained


def test_registry_marks_tools_inexact():
    from lmh_deploy.runtimes import RUNTIMES

    for t in TOOLS:
        assert RUNTIMES[t].exact is False and RUNTIMES[t].source == "nir"
        assert RUNTIMES[t].export_options == {"target": t}
    assert importlib.import_module("lmh_deploy.nir.targets").TARGETS.keys() == TOOLS.keys()
