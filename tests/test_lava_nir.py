"""Lava simulation of exported NIR files of trained digits models (issue 4 acceptance).

The NIR file is the only input of the Lava runtime: it builds Dense + our neuron processes from
it. Float simulation must give the reference's spikes at every layer and the same accuracy on
100 test digits; Loihi-2-style fixed point must stay within one accuracy point of float. Each
Lava run is under a hard 120 s limit (a hang or a run slower than the acceptance's two minutes
fails), and no worker outlives it.
"""
import multiprocessing

import numpy as np
import pytest

from lmh_deploy.graph.fold import fold_checkpoint
from lmh_deploy.graph.interpret import run_reference

pytest.importorskip("lava", reason="Lava is installed by scripts/setup.sh")
pytest.importorskip("nir")

from _deploy_models import digits_test, trained_checkpoint  # noqa: E402
from lmh_deploy.nir.write import write_nir  # noqa: E402
from lmh_deploy.lava.nir import run_lava_nir, run_lava_nir_fixed  # noqa: E402

pytestmark = [pytest.mark.lava, pytest.mark.timeout(400, method="signal")]


def _accuracy(logits, y):
    return float(np.mean(logits.mean(0).argmax(-1) == y))


@pytest.mark.parametrize("neuron,levels,form", [("lmh", None, "temporal"),
                                                ("lmht", 2, "unrolled")])
def test_lava_float_is_the_reference_and_fixed_point_within_a_point(tmp_path, neuron, levels, form):
    graph = fold_checkpoint(trained_checkpoint("mlp", neuron, levels, timesteps=4, epochs=2))
    path = tmp_path / "model.nir"
    write_nir(graph, path, form=form)
    x, y = digits_test(100)
    ref = run_reference(graph, x)

    lava = run_lava_nir(path, x, timeout_s=120)
    assert set(lava.spikes) == set(ref.spikes)
    for name in ref.spikes:
        np.testing.assert_array_equal(lava.spikes[name], ref.spikes[name], err_msg=name)
    np.testing.assert_array_equal(lava.logits, ref.logits)
    acc_ref, acc_float = _accuracy(ref.logits, y), _accuracy(lava.logits, y)
    assert acc_float == acc_ref > 0.85

    fixed = run_lava_nir_fixed(path, x, timeout_s=120)
    acc_fixed = _accuracy(fixed.logits, y)
    print(f"\n{neuron}: reference {acc_ref:.3f}  lava float {acc_float:.3f}  lava fixed {acc_fixed:.3f}")
    assert abs(acc_fixed - acc_float) <= 0.01 + 1e-9
    assert not multiprocessing.active_children()


def test_lava_refuses_conv_models_with_a_named_layer(tmp_path):
    from _deploy_models import random_model

    from lmh_deploy.graph.fold import fold
    from lmh_deploy.errors import NirGraphError

    graph = fold(random_model("cnn", "lmh", timesteps=2))
    path = tmp_path / "cnn.nir"
    write_nir(graph, path)
    with pytest.raises(NirGraphError, match="pool0"):
        run_lava_nir(path, np.zeros((1, 1, 8, 8), np.float32), timeout_s=60)


def test_lmh_run_reads_T_from_the_nir_file_for_nir_and_lava(tmp_path, capsys):
    """`lmh-run model.nir --runtime lava|nir` takes T from the file; the same accuracy per step
    as the reference; an unrolled file at another T is a one-line error naming the re-export."""
    import json

    from lmh_deploy.cli import run as cli_run

    graph = fold_checkpoint(trained_checkpoint("mlp", "lmh", None, timesteps=4, epochs=2))
    temporal, unrolled = tmp_path / "t.nir", tmp_path / "u.nir"
    write_nir(graph, temporal, form="temporal")
    write_nir(graph, unrolled, form="unrolled")
    x, y = digits_test(30)
    ref = run_reference(graph, x)
    want = [float(np.mean(ref.logits[: t + 1].mean(0).argmax(-1) == y)) for t in range(4)]
    for path, runtime in ((temporal, "lava"), (temporal, "nir"), (unrolled, "nir")):
        out = tmp_path / f"{path.stem}-{runtime}.json"
        assert cli_run.main([str(path), "--runtime", runtime, "--limit", "30",
                             "--json", str(out)]) == 0
        got = json.loads(out.read_text())
        assert got["timesteps"] == 4
        np.testing.assert_allclose(got["accuracy_per_step"], want)
    capsys.readouterr()
    assert cli_run.main([str(unrolled), "--runtime", "nir", "--timesteps", "8", "--limit", "5"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--timesteps 8" in err[0]
