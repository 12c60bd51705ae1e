"""NIR export + runtimes (numpy and nirtorch) against the DeployGraph reference, spike for spike.

Trained digits MLPs (a short training fixture), every layer, all 360 test inputs."""
import numpy as np
import pytest
import torch

nir = pytest.importorskip("nir")
pytest.importorskip("nirtorch")

from _deploy_models import quick_train  # noqa: E402
from lmh_deploy.data.digits import digits_arrays  # noqa: E402
from lmh_deploy.errors import ExportFormatError  # noqa: E402
from lmh_deploy.nir.write import (binary_threshold, export_nir,  # noqa: E402
                                          level_threshold, write_nir)
from lmh_deploy.graph.fold import fold  # noqa: E402
from lmh_deploy.graph.interpret import run_reference  # noqa: E402
from lmh_deploy.models import build_model, default_config  # noqa: E402
from lmh_deploy.nir.program import load_program  # noqa: E402
from lmh_deploy.nir.read import read_deploy_graph, read_layers  # noqa: E402
from lmh_deploy.nir.run_numpy import run_nir  # noqa: E402
from lmh_deploy.nir.run_torch import run_nir_torch  # noqa: E402

MODELS = {
    "lif": ("lif", {}),
    "lmh": ("lmh", {}),
    "lmh-radical": ("lmh-radical", {}),
    "lmht2": ("lmht", {"levels": 2}),
    "lmht4": ("lmht", {"levels": 4}),
    "mht2-omega-id": ("lmht", {"levels": 2, "learn_omega": False}),
    "mht4-omega-id": ("lmht", {"levels": 4, "learn_omega": False}),
}


@pytest.fixture(scope="module")
def digits():
    return digits_arrays()


def _train(kind, extra, data, steps=20, seed=0):
    return quick_train("mlp", kind, extra, data, steps, seed)


@pytest.fixture(scope="module")
def trained(digits):
    return {name: fold(_train(kind, extra, digits)) for name, (kind, extra) in MODELS.items()}


def _same(run, ref):
    assert sorted(run.spikes) == sorted(ref.spikes)
    for k in ref.spikes:
        np.testing.assert_array_equal(run.spikes[k], ref.spikes[k], err_msg=k)
    np.testing.assert_array_equal(run.logits, ref.logits)


@pytest.mark.parametrize("name", list(MODELS))
def test_nir_runtimes_match_reference_on_trained_digits(name, trained, digits, tmp_path):
    graph = trained[name]
    x = digits[2]  # 360 test inputs
    ref = run_reference(graph, x)
    acc = float((ref.mean_logits.argmax(1) == digits[3]).mean())
    assert acc > 0.5, f"{name}: training fixture too weak ({acc})"
    assert all(0 < v.mean() < graph.levels for v in ref.spikes.values())
    forms = ["unrolled"] + (["temporal"] if graph.time_invariant else [])
    for form in forms:
        path = write_nir(graph, tmp_path / f"{name}_{form}.nir", form=form)
        prog = load_program(path)
        assert prog.form == form
        if form == "temporal":  # every neuron cluster recognised: bit-exact path
            assert len(prog.fused) == len(graph.neuron_names())
        _same(run_nir(prog, x), ref)
        _same(run_nir_torch(path, x), ref)


def test_temporal_form_refused_for_noncausal_omega_and_radical(trained, tmp_path):
    for name in ("lmht2", "lmh-radical"):
        with pytest.raises(ExportFormatError, match="unrolled"):
            write_nir(trained[name], tmp_path / "x.nir", form="temporal")
    assert not list(tmp_path.iterdir())  # nothing half-written
    # auto picks the unrolled form
    assert load_program(write_nir(trained["lmht2"], tmp_path / "a.nir")).form == "unrolled"


def test_temporal_runs_past_trained_T(trained, digits, tmp_path):
    graph = trained["lmh"]
    path = write_nir(graph, tmp_path / "m.nir", form="temporal")
    x = digits[2][:50]
    _same(run_nir(path, x, timesteps=7), run_reference(graph, x, 7))


def test_round_trip_read_write_preserves_results(trained, digits, tmp_path):
    for name, form in (("lmh", "temporal"), ("lmht4", "unrolled")):
        graph = trained[name]
        p1 = write_nir(graph, tmp_path / f"{name}.nir", form=form)
        g = nir.read(p1)
        p2 = tmp_path / f"{name}_again.nir"
        nir.write(p2, g)
        g2 = nir.read(p2)
        assert sorted(g2.nodes) == sorted(g.nodes) and g2.edges == g.edges
        x = digits[2][:200]
        _same(run_nir(p2, x), run_nir(p1, x))
        _same(run_nir(p2, x), run_reference(graph, x))


def test_node_order_and_names_do_not_matter(trained, digits, tmp_path):
    """Rename every node so that alphabetical order is *reversed* topological order, shuffle the
    node dict and the edge list: delays are structural, so spikes are unchanged."""
    rng = np.random.RandomState(1)
    for name, form in (("lmh", "temporal"), ("mht4-omega-id", "temporal"), ("lmht2", "unrolled")):
        graph = trained[name]
        g = nir.read(write_nir(graph, tmp_path / "a.nir", form=form))
        names = sorted(g.nodes)
        new = {n: f"q{len(names) - i:06d}" for i, n in enumerate(names)}
        perm = rng.permutation(len(names))
        nodes = {new[names[i]]: g.nodes[names[i]] for i in perm}
        edges = [(new[a], new[b]) for a, b in g.edges]
        edges = [edges[i] for i in rng.permutation(len(edges))]
        g2 = nir.NIRGraph(nodes=nodes, edges=edges, metadata=g.metadata, type_check=False)
        p2 = tmp_path / "b.nir"
        nir.write(p2, g2)
        x = digits[2][:200]
        ref = run_reference(graph, x)
        prog = load_program(p2)
        assert len(prog.fused) == (len(graph.neuron_names()) if form == "temporal" else 0)
        _same(run_nir(prog, x), ref)
        _same(run_nir_torch(p2, x), ref)


def test_thresholds_are_strict_versions_of_ge():
    for th in (np.float32(1.0), np.float32(0.3), np.float32(2 / 3), np.float32(1.7)):
        b = binary_threshold(th)
        assert b < th and np.nextafter(b, np.float32(np.inf), dtype=np.float32) == th
        for k in (1, 2, 3, 4):
            t = level_threshold(th, k)  # m > t exactly when m >= fl(k theta) (the cascade)
            up = np.nextafter(t, np.float32(np.inf), dtype=np.float32)
            assert t < np.float32(k) * th and up == np.float32(k) * th


def test_metadata_and_layered_description(trained, tmp_path):
    graph = trained["mht4-omega-id"]
    path = write_nir(graph, tmp_path / "m.nir", form="temporal")
    g = nir.read(path)
    md = g.metadata
    assert md["format"] == "lmh-nir" and md["form"] == "temporal"
    assert int(md["timesteps"]) == 4 and int(md["levels"]) == 4
    assert "nextafter" in md["convention"]
    lay = read_layers(path)
    assert [L.name for L in lay.layers] == ["sn0", "sn1", "fc2"]
    assert lay.layers[0].flatten_before and lay.layers[-1].neuron is None
    assert lay.timesteps == 4 and lay.levels == 4
    for L, (syn, neu) in zip(lay.layers, (("fc0", "sn0"), ("fc1", "sn1"))):
        np.testing.assert_array_equal(L.weight64, graph.synapse_weights(syn)[0])
        spec = graph.neuron(neu)
        assert L.neuron.levels == spec.levels and L.neuron.theta == spec.theta
        assert L.neuron.v0 == spec.v0
        np.testing.assert_array_equal(L.neuron.params["lam"], spec.params["lam"])
    g2 = read_deploy_graph(path)
    x = np.random.RandomState(0).uniform(0, 1, (20, 1, 8, 8)).astype(np.float32)
    _same(run_reference(g2, x), run_reference(graph, x))


def test_lossy_lif_names_what_changes(trained, digits, tmp_path):
    graph = trained["lif"]
    g = export_nir(graph, form="temporal", lossy_lif=True)
    lifs = [n for n in g.nodes.values() if isinstance(n, nir.LIF)]
    assert len(lifs) == 2 and "hard reset" in lifs[0].metadata["lossy"]
    assert "hard reset" in g.metadata["lossy"]
    path = write_nir(graph, tmp_path / "lossy.nir", lossy_lif=True)
    run = run_nir(path, digits[2][:100])  # runs; spikes are those of a hard-reset LIF
    assert run.logits.shape == (4, 100, 10)
    with pytest.raises(ExportFormatError, match="lossy"):
        export_nir(trained["lmh"], lossy_lif=True)
