"""Foreign NIR fixtures in Lava with Lava's own LIF process (issue 15): the producer's spikes.

Hard timeout per test; no Lava worker may outlive a test (as tests/test_lava_runtime.py)."""
import multiprocessing

import numpy as np
import pytest

pytest.importorskip("nir")

from lmh_deploy.nir import foreign as nf  # noqa: E402

from test_lava_runtime import _os_children  # noqa: E402

pytestmark = [pytest.mark.lava, pytest.mark.slow, pytest.mark.timeout(300, method="signal")]

from test_nir_foreign import FIX, _fixture  # noqa: E402


@pytest.fixture(autouse=True)
def no_leftover_workers():
    import os

    before = set(_os_children(os.getpid()))
    yield
    assert multiprocessing.active_children() == []
    assert set(_os_children(os.getpid())) - before == set()


# every fixture with its producer's preset (as tests/test_nir_foreign.py); T cut to keep it short
LAVA_CASES = [("snntorch_lif_mlp", "snntorch", None), ("snntorch_rec_lif", "snntorch", None),
              ("snntorch_cubalif", "snntorch", None), ("snntorch_conv", "snntorch", None),
              ("norse_lif_mlp", "norse", None), ("norse_cubalif", "norse", None),
              ("norse_conv", "norse", None), ("spikingjelly_lif_mlp", "spikingjelly", None),
              ("spikingjelly_cubalif", "spikingjelly", None),
              ("spikingjelly_conv", "spikingjelly", None), ("sinabs_conv", "sinabs", None),
              ("rockpool_lif_mlp", "rockpool", None), ("rockpool_cubalif", "rockpool", None),
              ("paper_lif_norse", "nir", 1e-4),
              ("paper_braille_noDelay_bias_zero", "snntorch-delay", None),
              ("paper_braille_noDelay_noBias_subtract", "snntorch-delay", None),
              ("paper_cnn_sinabs", "sinabs", None)]
T_MAX = {"paper_lif_norse": 1000}  # its 4 published spikes come after step 460; others: 24


@pytest.mark.parametrize("name,producer,dt", LAVA_CASES, ids=[c[0] for c in LAVA_CASES])
def test_lava_matches_producer(name, producer, dt):
    """First sample, first T steps: Lava gives the producer's spikes at every layer and the
    numpy runtime's outputs."""
    from lmh_deploy.lava.foreign import run_lava_foreign

    d, ref = _fixture(name)
    prog = nf.load_foreign(FIX / f"{name}.nir", producer=producer, dt=dt)
    T = T_MAX.get(name, 24)
    x = d["input"][:T, :1]
    out, spikes = run_lava_foreign(prog, x)
    ref1 = {k: v[:T, :1] for k, v in ref.items()}
    assert sum(float(v.sum()) for v in ref1.values()) >= 1  # the cut still spikes
    agree = nf.agreement(ref1, spikes)
    assert set(agree) == set(ref) and all(a == 1.0 for a in agree.values()), agree
    out_np, _ = nf.run_foreign(prog, x)
    np.testing.assert_allclose(out, out_np, rtol=0, atol=1e-4)


@pytest.mark.parametrize("name,producer,routes", [
    ("snntorch_rec_lif", "snntorch", ["1.lif: Lava Dense + lava.proc.lif.LIF",
                                      "3: Lava Dense + lava.proc.lif.LIF", "output: = 3"]),
    ("snntorch_conv", "snntorch", ["1: ForeignStageProcess (Conv2d node '0')",
                                   "5: ForeignStageProcess (AvgPool2d node '2')", "output: = 5"]),
    ("spikingjelly_lif_mlp", "spikingjelly", [
        "_1: ForeignStageProcess (producer 'spikingjelly' fires at v >= v_th, Lava's LIF at v > vth)",
        "_3: ForeignStageProcess (producer 'spikingjelly' fires at v >= v_th, Lava's LIF at v > vth)",
        "output: = _3"]),
    ("paper_braille_noDelay_bias_zero", "snntorch-delay", [
        "lif1.lif: ForeignStageProcess (producer 'snntorch-delay' resets otherwise than Lava's "
        "LIF (to 0 at once))",
        "lif2: ForeignStageProcess (producer 'snntorch-delay' resets otherwise than Lava's LIF "
        "(to 0 at once))", "output: = lif2"]),
])
def test_lava_routes_lava_lif_where_it_matches(name, producer, routes):
    from lmh_deploy.lava.foreign import describe

    assert describe(nf.load_foreign(FIX / f"{name}.nir", producer=producer)) == routes


def test_lava_refuses_a_join_of_two_layers_in_one_line():
    import nir

    from lmh_deploy.lava.foreign import stages

    lif = lambda: nir.LIF(tau=np.array([1e-3]), r=np.array([1.0]),  # noqa: E731
                          v_leak=np.array([0.0]), v_threshold=np.array([1.0]),
                          v_reset=np.array([0.0]))
    g = nir.NIRGraph(nodes={"in": nir.Input(np.array([1])), "a": lif(), "b": lif(), "c": lif(),
                            "out": nir.Output(np.array([1]))},
                     edges=[("in", "a"), ("in", "b"), ("a", "c"), ("b", "c"), ("c", "out")],
                     type_check=False)
    with pytest.raises(nf.ForeignNirError, match=r"node 'c': LIF reads from 2 layers \(a, b\); "
                                                  r"Lava runs chains of layers here"):
        stages(nf.load_foreign(g, dt=1e-4))


def test_lmh_run_runtime_lava_foreign_conv(tmp_path, capsys):
    from lmh_deploy.cli.run import main

    d, ref = _fixture("sinabs_conv")
    x = tmp_path / "x.npy"
    np.save(x, d["input"][:12, :1])
    out = tmp_path / "s.npz"
    rc = main([str(FIX / "sinabs_conv.nir"), "--runtime", "lava", "--producer", "sinabs",
               "--input", str(x), "--save-spikes", str(out)])
    text = capsys.readouterr().out
    assert rc == 0 and "runtime lava (foreign NIR, producer sinabs" in text
    got = np.load(out)
    for k, v in ref.items():
        assert np.array_equal(got[f"spikes/{k}"], v[:12, :1]), k
