"""Issue 16: a model trained on (a tiny fabricated) CIFAR-10 goes through every command with
--data-dir, in-process (each CLI's main()); the data set default is read from the files."""
from __future__ import annotations

import csv
import json

import pytest

from _fake_cifar import write_fake_cifar10

pytest.importorskip("onnxruntime")
pytest.importorskip("nir")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from lmh_deploy.cli.train import main as train

    root = tmp_path_factory.mktemp("cifar")
    data = write_fake_cifar10(root / "data")
    out = root / "run"
    assert train(["--dataset", "cifar10", "--data-dir", str(data), "--arch", "cnn", "-T", "2",
                  "--epochs", "1", "--batch-size", "8", "--no-autoaugment", "--cutout", "0",
                  "--device", "cpu", "--out", str(out), "--no-progress"]) == 0
    return data, out


def test_cifar_data_dir_through_every_command(trained, tmp_path, capsys):
    from lmh_deploy.cli import export, inspect, run, sweep, verify

    data, out = trained
    ck = out / "model.pt"
    m = json.loads((out / "metrics.json").read_text())
    assert m["train_samples"] == 20 and m["test_samples"] == 6
    dd = ["--data-dir", str(data)]
    capsys.readouterr()
    # export validates on the data set's test split (6 images), not on random inputs (32)
    for fmt in ("onnx", "nir"):
        assert export.main(["-f", fmt, str(ck), "--with-spikes" if fmt == "onnx" else "--no-frames",
                            "-o", str(tmp_path / f"m.{fmt}"), "--no-progress"] + dd) == 0
        line = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("validated:")]
        assert len(line) == 1 and "on 6 samples at T=2" in line[0], line
    # a data set that cannot be read, named explicitly, is a one-line error and no file
    assert export.main(["-f", "onnx", str(ck), "-o", str(tmp_path / "bad.onnx"),
                        "--data-dir", str(tmp_path / "missing")]) == 2
    assert not (tmp_path / "bad.onnx").exists() and len(capsys.readouterr().err.splitlines()) == 1
    # run: the checkpoint (torch) and both files, dataset read from each file; same accuracy
    res = {}
    for name, f in [("torch", ck), ("onnx", tmp_path / "m.onnx"), ("nir", tmp_path / "m.nir")]:
        js = tmp_path / f"run_{name}.json"
        assert run.main([str(f), "--json", str(js), "--no-progress"] + dd) == 0
        res[name] = json.loads(js.read_text())
        assert res[name]["dataset"] == "cifar10" and res[name]["samples"] == 6
    assert res["onnx"]["accuracy"] == res["nir"]["accuracy"] == res["torch"]["accuracy"]
    assert res["torch"]["accuracy"] == pytest.approx(m["test_accuracy"])  # the trainer's figure
    assert res["onnx"]["spikes_per_sample"] == res["nir"]["spikes_per_sample"] > 0
    # verify: spikes identical layer by layer on the 6 test images
    vj = tmp_path / "verify.json"
    assert verify.main([str(ck), "--format", "onnx", "--json", str(vj), "--no-progress"] + dd) == 0
    rep = json.loads(vj.read_text())
    assert rep["dataset"] == "cifar10" and rep["samples"] == 6 and rep["ok"] is True
    assert set(rep["runtimes"]["onnx"]["spike_agreement"].values()) == {1.0}
    assert rep["runtimes"]["onnx"]["accuracy"] == pytest.approx(res["onnx"]["accuracy"])
    # sweep: CSV rows per runtime and T, reference and onnx identical
    sw = tmp_path / "sw"
    assert sweep.main([str(ck), "--runtimes", "reference,onnx", "-T", "1-3", "--out", str(sw),
                       "--no-progress"] + dd) == 0
    rows = list(csv.DictReader((sw / "sweep.csv").open()))
    assert [(r["runtime"], int(r["T"])) for r in rows] == [(rt, t) for rt in ("reference", "onnx")
                                                          for t in (1, 2, 3)]
    assert json.loads((sw / "sweep.json").read_text())["meta"]["dataset"] == "cifar10"
    for a, b in zip(rows[:3], rows[3:]):
        assert a["accuracy"] == b["accuracy"] and a["sops_per_sample"] == b["sops_per_sample"]
    ref_t2 = next(r for r in rows if r["runtime"] == "reference" and r["T"] == "2")
    assert float(ref_t2["accuracy"]) == pytest.approx(res["torch"]["accuracy"])
    # sweep of an exported file: by default in the file's own runtime (not torch)
    sw2 = tmp_path / "sw2"
    assert sweep.main([str(tmp_path / "m.onnx"), "-T", "1-2", "--out", str(sw2), "--no-progress"]
                      + dd) == 0
    rows2 = list(csv.DictReader((sw2 / "sweep.csv").open()))
    assert [r["runtime"] for r in rows2] == ["onnx"] * 2  # the file was exported for T=2
    assert [r["sops_per_sample"] for r in rows2] == [r["sops_per_sample"] for r in rows[3:5]]
    # inspect: SOPs of the checkpoint at T=2 equal the sweep's; the ONNX file (with spikes) agrees
    ij = tmp_path / "inspect.json"
    assert inspect.main([str(ck), "--json", str(ij), "--no-progress"] + dd) == 0
    ins = json.loads(ij.read_text())
    assert ins["dataset"] == "cifar10" and ins["samples"] == 6
    assert ins["per_T"][0]["totals"]["sops_per_sample"] == pytest.approx(float(ref_t2["sops_per_sample"]))
    ij2 = tmp_path / "inspect_onnx.json"
    assert inspect.main([str(tmp_path / "m.onnx"), "--json", str(ij2), "--no-progress"] + dd) == 0
    assert json.loads(ij2.read_text())["per_T"][0]["totals"]["sops_per_sample"] == pytest.approx(
        ins["per_T"][0]["totals"]["sops_per_sample"])


def test_dataset_default_read_from_onnx_and_nir_metadata(trained, tmp_path):
    """Exported files record the training data set (ONNX metadata ``lmh.dataset``, NIR graph
    metadata ``dataset``); the commands default to it, an explicit --dataset overrides it."""
    import onnx

    from lmh_deploy.cli import export
    from lmh_deploy.cli.options import resolve_dataset, trained_dataset
    from lmh_deploy.nir.file import read_graph

    data, out = trained
    ck = out / "model.pt"
    for fmt in ("onnx", "nir"):
        assert export.main(["-f", fmt, str(ck), "-o", str(tmp_path / f"m.{fmt}"), "--no-validate",
                            "--no-progress"]) == 0
    props = {p.key: p.value for p in onnx.load(str(tmp_path / "m.onnx")).metadata_props}
    assert props["lmh.dataset"] == "cifar10"
    assert read_graph(tmp_path / "m.nir").metadata["dataset"] == "cifar10"
    for f in (ck, tmp_path / "m.onnx", tmp_path / "m.nir"):
        assert trained_dataset(f) == "cifar10"
        assert resolve_dataset(f, None) == "cifar10" and resolve_dataset(f, "digits") == "digits"
    # a file without the record falls back to digits
    m = onnx.load(str(tmp_path / "m.onnx"))
    del m.metadata_props[:]
    onnx.save(m, str(tmp_path / "plain.onnx"))
    assert trained_dataset(tmp_path / "plain.onnx") is None
    assert resolve_dataset(tmp_path / "plain.onnx", None) == "digits"
