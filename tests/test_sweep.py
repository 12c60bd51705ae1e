"""lmh-sweep (issue 5): identical accuracy across runtimes at every T, CSV == lmh-run, prefix
runs == per-T runs, errors before any work, and the default model's sweep to T=32."""
from __future__ import annotations

import csv
import json

import numpy as np

import pytest

pytest.importorskip("onnxruntime")

from _deploy_models import random_model, save_model, trained_checkpoint  # noqa: E402

from lmh_deploy.cli import run as cli_run, sweep as cli_sweep  # noqa: E402
from lmh_deploy.sweep import parse_timesteps  # noqa: E402
from lmh_deploy.errors import TimestepsError  # noqa: E402
from lmh_deploy.sweep import plan, run_sweep  # noqa: E402

DEPLOYED = ("deployed-torch", "reference", "onnx")


def _by_runtime(rows):
    out = {}
    for r in rows:
        out.setdefault(r["runtime"], {})[r["T"]] = r
    return out


def _sweep(path, runtimes, ts, limit=None, per_t=False):
    dep, rts, tl = plan(path, runtimes, ts)
    with dep:
        return run_sweep(dep, rts, tl, limit=limit, per_t=per_t, progress=False)


def test_parse_timesteps():
    assert parse_timesteps("1-4") == [1, 2, 3, 4]
    assert parse_timesteps("8,1,2,4") == [1, 2, 4, 8]
    assert parse_timesteps("1-3, 8 ,16") == [1, 2, 3, 8, 16]
    for bad in ["", " ", "a", "1-", "-3", "4-2", "0", "1,,2", "1-2-3", "2.5"]:
        with pytest.raises(TimestepsError):
            parse_timesteps(bad)


def test_lmh_sweep_1_to_12_identical_across_runtimes(tmp_path):
    ck = trained_checkpoint("mlp", "lmh")
    out = tmp_path / "sw"
    assert cli_sweep.main([str(ck), "--runtimes", "torch,deployed-torch,reference,onnx",
                           "--timesteps", "1-12", "--out", str(out), "--no-progress"]) == 0
    res = json.loads((out / "sweep.json").read_text())
    rows = _by_runtime(res["rows"])
    assert set(rows) == {"torch", *DEPLOYED}
    for t in range(1, 13):
        accs = {rows[n][t]["accuracy"] for n in DEPLOYED}
        sps = {rows[n][t]["spikes_per_sample"] for n in DEPLOYED}
        assert len(accs) == 1 and len(sps) == 1, (t, accs, sps)
        # the trained module (before the fold) is reported beside them, close but not checked
        assert abs(rows["torch"][t]["accuracy"] - rows["reference"][t]["accuracy"]) < 0.05
    assert (out / "sweep.png").stat().st_size > 10_000
    assert (out / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with open(out / "sweep.csv") as f:
        assert len(list(csv.DictReader(f))) == 4 * 12


def test_csv_equals_separate_lmh_run(tmp_path):
    ck = trained_checkpoint("mlp", "lmh")
    out = tmp_path / "sw"
    assert cli_sweep.main([str(ck), "--runtimes", "reference,onnx", "--timesteps", "1,3,6",
                           "--limit", "150", "--out", str(out), "--no-progress"]) == 0
    with open(out / "sweep.csv") as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        sep = cli_run.run_file(ck, runtime=r["runtime"], timesteps=int(r["T"]), limit=150)
        assert float(r["accuracy"]) == sep["accuracy"]
        assert float(r["spikes_per_sample"]) == sep["spikes_per_sample"]
        for k, v in sep["firing_rate"].items():
            assert float(r[f"rate_{k}"]) == v


def test_lmht_sweep_T_and_2T_prefix_equals_per_T_export(tmp_path):
    ck = trained_checkpoint("mlp", "lmht", levels=2)
    prefix = _sweep(ck, ",".join(DEPLOYED), "4,8", limit=200)
    per_t = _sweep(ck, ",".join(DEPLOYED), "4,8", limit=200, per_t=True)
    a, b = _by_runtime(prefix["rows"]), _by_runtime(per_t["rows"])
    for t in (4, 8):
        assert len({a[n][t]["accuracy"] for n in DEPLOYED}) == 1
        for n in DEPLOYED:
            assert a[n][t]["accuracy"] == b[n][t]["accuracy"]
            assert a[n][t]["firing_rate"] == b[n][t]["firing_rate"]
    assert b["onnx"][4]["run_T"] == 4 and a["onnx"][4]["run_T"] == 8


def test_radical_prefix_equals_per_T(tmp_path):
    ck = save_model(random_model("mlp", "lmh-radical", 4, seed=2), tmp_path / "rad.pt")
    prefix = _sweep(ck, "reference,onnx", "2,4,6", limit=64)
    per_t = _sweep(ck, "reference,onnx", "2,4,6", limit=64, per_t=True)
    assert [(r["runtime"], r["T"], r["accuracy"], r["spikes_per_sample"]) for r in prefix["rows"]] == \
        [(r["runtime"], r["T"], r["accuracy"], r["spikes_per_sample"]) for r in per_t["rows"]]
    assert any("held" in n for n in prefix["meta"]["notes"])


@pytest.mark.parametrize("args,needle", [
    (["--runtimes", "torch,tpu"], "unknown runtime 'tpu'"),
    (["--runtimes", "torch,,onnx"], "malformed runtime list"),
    (["--timesteps", ""], "empty --timesteps"),
    (["--timesteps", "1-x"], "malformed --timesteps"),
    (["--timesteps", "8-2"], "reversed range"),
    (["--timesteps", "0,1"], "out of range"),
    (["--timesteps", "4,6"], "T=6 cannot be swept"),
])
def test_bad_input_fails_before_any_work(tmp_path, capsys, monkeypatch, args, needle):
    import lmh_deploy.sweep as sweep_mod

    def no_work(*a, **k):
        raise AssertionError("a run started before the input was validated")

    monkeypatch.setattr(sweep_mod, "run_sweep", no_work)
    ck = save_model(random_model("mlp", "lmht", 4, levels=2), tmp_path / "m.pt")
    out = tmp_path / "out"
    rc = cli_sweep.main([str(ck), "--out", str(out), "--no-progress"] + args)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and needle in err[0], err
    assert not out.exists()


def test_bad_file_fails_before_any_work(tmp_path, capsys):
    bad = tmp_path / "m.pt"
    bad.write_bytes(b"garbage")
    assert cli_sweep.main([str(bad), "--out", str(tmp_path / "o"), "--no-progress"]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_default_model_sweep_to_32_writes_every_T(tmp_path):
    """The README's sweep (torch + onnx to T=32); its speed is measured by
    benchmarks/bench_deploy_speed.py, not here."""
    ck = trained_checkpoint("mlp", "lmh")
    assert cli_sweep.main([str(ck), "--runtimes", "torch,onnx", "--timesteps", "1-32",
                           "--out", str(tmp_path / "s"), "--no-progress"]) == 0
    rows = (tmp_path / "s" / "sweep.csv").read_text().strip().splitlines()
    assert len(rows) == 1 + 2 * 32
    assert (tmp_path / "s" / "sweep.png").stat().st_size > 10_000


def test_cross_entropy_of_running_mean_logits_by_hand():
    from lmh_deploy.evaluate import cross_entropy_per_step

    ln3 = float(np.log(3.0))
    logits = np.array([[[0.0, ln3]], [[0.0, -ln3]]], np.float32)  # [T=2, B=1, K=2]
    ce = cross_entropy_per_step(logits, np.array([0]))
    np.testing.assert_allclose(ce, [np.log(4.0), np.log(2.0)], rtol=1e-6)
    ce1 = cross_entropy_per_step(logits, np.array([1]))
    np.testing.assert_allclose(ce1, [np.log(4.0 / 3.0), np.log(2.0)], rtol=1e-6)


def test_csv_layer_columns_in_natural_order():
    from lmh_deploy.sweep import rows_to_csv

    row = {"runtime": "reference", "T": 1, "accuracy": 0.5, "cross_entropy": 1.0,
           "spikes_per_sample": 1.0, "firing_rate": {k: 0.1 for k in ("sn10", "sn2", "sn0", "sn1")}}
    header = rows_to_csv([row]).splitlines()[0].split(",")
    assert [h for h in header if h.startswith("rate_")] == ["rate_sn0", "rate_sn1", "rate_sn2",
                                                            "rate_sn10"]


def test_unrolled_nir_timesteps_advice_is_valid():
    """An unrolled file runs exactly its T; an LM-HT one (metadata omega_period) names the
    multiple rule before suggesting a re-export at a T the exporter would refuse."""
    import pytest as _pt

    from lmh_deploy.errors import TimestepsError
    from lmh_deploy.nir.file import check_file_timesteps

    assert check_file_timesteps("unrolled", 2, 2, 2) == 2
    with _pt.raises(TimestepsError, match="multiple of 2"):
        check_file_timesteps("unrolled", 2, 1, 2)
    with _pt.raises(TimestepsError, match="runs exactly that many steps; for T=4 re-export"):
        check_file_timesteps("unrolled", 2, 4, 2)
    assert check_file_timesteps("temporal", None, 7) == 7


def test_sweep_beyond_an_onnx_file_names_the_largest_T(tmp_path):
    import pytest as _pt

    from _deploy_models import random_model, save_model
    from lmh_deploy.errors import TimestepsError
    from lmh_deploy.exporting import export_checkpoint
    from lmh_deploy.sweep import plan

    ck = save_model(random_model("mlp", "lmh", 4), tmp_path / "m.pt")
    f = export_checkpoint(ck, "onnx", tmp_path / "m.onnx", validate=False)
    with _pt.raises(TimestepsError, match=r"T=8 cannot be swept.*--timesteps 8"):
        plan(f, None, "1-8")
