"""lmh-inspect and the sweep's cost columns (issue 19) on a trained digits MLP: the reported SOPs
equal spike counts x fan-out summed by hand from the reference run, at every T."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest

pytest.importorskip("onnxruntime")

from _deploy_models import trained_checkpoint  # noqa: E402

from lmh_deploy.cli import inspect as cli_inspect  # noqa: E402
from lmh_deploy.cli import sweep as cli_sweep  # noqa: E402


def _hand_sops(path, limit, t):
    """MLP 64-256-256-10: a spike of sn0 reaches 256 synapses, of sn1 the 10 readout units."""
    from lmh_deploy.deployment import Deployment
    from lmh_deploy.evaluate import load_eval_data

    x, _ = load_eval_data("digits", limit)
    with Deployment(path) as dep:
        run = dep.run("reference", x, t)
    s0, s1 = (run.spikes[k][:t].sum(dtype=np.float64) for k in ("sn0", "sn1"))
    return (256 * s0 + 10 * s1) / len(x)


def test_inspect_prints_writes_and_counts(tmp_path, capsys):
    ck = trained_checkpoint("mlp", "lmh")
    js, cs = tmp_path / "c.json", tmp_path / "c.csv"
    assert cli_inspect.main([str(ck), "-T", "1-4", "--limit", "60", "--json", str(js),
                             "--csv", str(cs)]) == 0
    out = capsys.readouterr().out
    assert "Loihi 2 estimate: 3 cores" in out and "energy estimate" in out
    rep = json.loads(js.read_text())
    assert [r["T"] for r in rep["per_T"]] == [1, 2, 3, 4]
    for r in rep["per_T"]:
        t = r["totals"]
        assert t["sops_per_sample"] == pytest.approx(_hand_sops(ck, 60, r["T"]), rel=1e-12)
        # the first layer: 64 * 256 MACs at every step
        assert t["analog_macs_per_sample"] == 64 * 256 * r["T"]
        assert (t["synapses"], t["neurons"]) == (64 * 256 + 256 * 256 + 256 * 10, 512)
    with open(cs) as f:
        total = [row for row in csv.DictReader(f) if row["layer"] == "TOTAL"]
    assert [float(row["sops"]) for row in total] == \
        [r["totals"]["sops_per_sample"] for r in rep["per_T"]]
    assert rep["loihi"]["fixed_point_ok"] is True


def test_inspect_exported_files_give_the_checkpoints_counts(tmp_path):
    from lmh_deploy.cli import export as cli_export

    ck = trained_checkpoint("mlp", "lmh")
    ref = cli_inspect.inspect_file(ck, limit=40)
    for fmt, extra in [("onnx", ["--with-spikes"]), ("nir", [])]:
        f = tmp_path / f"m.{fmt}"
        assert cli_export.main(["--format", fmt, str(ck), "-o", str(f), *extra]) == 0
        rep = cli_inspect.inspect_file(f, limit=40)
        assert rep["per_T"][0]["totals"] == ref["per_T"][0]["totals"], fmt
    # the ONNX file carries no thresholds: the fixed-point fit is not claimed
    assert rep["loihi"]["fixed_point_ok"] is True
    onnx_rep = cli_inspect.inspect_file(tmp_path / "m.onnx", limit=40)
    assert onnx_rep["loihi"]["fixed_point_ok"] is None


def test_inspect_bad_input_is_one_line(tmp_path, capsys):
    from lmh_deploy.cli import export as cli_export

    ck = trained_checkpoint("mlp", "lmh")
    f = tmp_path / "nospikes.onnx"
    assert cli_export.main(["--format", "onnx", str(ck), "-o", str(f)]) == 0
    capsys.readouterr()
    assert cli_inspect.main([str(f), "--limit", "5"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--with-spikes" in err
    assert cli_inspect.main([str(ck), "--runtime", "nope"]) == 2
    assert cli_inspect.main([str(ck), "-T", "0"]) == 2
    assert "error:" in capsys.readouterr().err


def test_sweep_csv_has_the_sops_of_inspect(tmp_path):
    ck = trained_checkpoint("mlp", "lmh")
    out = tmp_path / "sw"
    assert cli_sweep.main([str(ck), "--runtimes", "torch,reference,onnx", "--timesteps", "1-4",
                           "--limit", "60", "--out", str(out), "--no-progress"]) == 0
    with open(out / "sweep.csv") as f:
        rows = list(csv.DictReader(f))
    insp = cli_inspect.inspect_file(ck, limit=60, timesteps="1-4")
    for r in insp["per_T"]:
        got = {row["runtime"]: float(row["sops_per_sample"]) for row in rows
               if int(row["T"]) == r["T"]}
        assert got["reference"] == got["onnx"] == r["totals"]["sops_per_sample"]
        assert float([row for row in rows if row["runtime"] == "reference"
                      and int(row["T"]) == r["T"]][0]["snn_energy_pj"]) == \
            pytest.approx(r["energy"]["snn_pj"])
