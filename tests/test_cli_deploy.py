"""lmh-export / lmh-run / lmh-verify: outputs, exit codes, one-line errors, nothing left behind."""
from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("onnxruntime")

from _deploy_models import random_model, save_model, trained_checkpoint  # noqa: E402

from lmh_deploy.cli import run as cli_run, verify as cli_verify  # noqa: E402
from lmh_deploy.cli import export as export_cli  # noqa: E402


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    src = trained_checkpoint("mlp", "lmh")
    d = tmp_path_factory.mktemp("ck")
    p = d / "model.pt"
    p.write_bytes(src.read_bytes())
    return p


def _one_line_error(capsys, code, rc):
    err = capsys.readouterr().err
    assert rc == code, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and "error:" in lines[0], err
    return lines[0]


def test_export_default_output_beside_input_and_runs(ckpt, capsys):
    assert export_cli.main(["--format", "onnx", str(ckpt)]) == 0
    out = ckpt.with_suffix(".onnx")
    assert out.is_file() and "wrote" in capsys.readouterr().out
    res_file = cli_run.run_file(out, limit=120)
    res_ckpt = cli_run.run_file(ckpt, runtime="reference", limit=120)
    assert res_file["accuracy_per_step"] == res_ckpt["accuracy_per_step"]
    assert res_file["accuracy"] > 0.5


def test_export_options_timesteps_and_output(ckpt, tmp_path):
    out = tmp_path / "sub" / "m8.onnx"
    assert export_cli.main(["-f", "onnx", str(ckpt), "-o", str(out), "-T", "8", "--with-spikes"]) == 0
    res = cli_run.run_file(out, limit=50)
    assert res["timesteps"] == 8 and len(res["accuracy_per_step"]) == 8
    assert res["spikes_per_sample"] > 0
    # a prefix of the file's T is allowed, more is a clear error
    assert cli_run.run_file(out, limit=50, timesteps=3)["accuracy_per_step"] == \
        res["accuracy_per_step"][:3]
    assert cli_run.main([str(out), "--timesteps", "9", "--limit", "5"]) == 2


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all", b"PK\x03\x04garbage"])
def test_export_bad_file(tmp_path, capsys, content):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(content)
    rc = export_cli.main(["--format", "onnx", str(bad)])
    line = _one_line_error(capsys, 2, rc)
    assert "bad.pt" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.pt"]


def test_export_truncated_checkpoint(ckpt, tmp_path, capsys):
    bad = tmp_path / "trunc.pt"
    bad.write_bytes(ckpt.read_bytes()[:2000])
    line = _one_line_error(capsys, 2, export_cli.main(["--format", "onnx", str(bad)]))
    assert "corrupt" in line or "not an lmh-deploy" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["trunc.pt"]


def test_export_unknown_format(ckpt, tmp_path, capsys):
    out = tmp_path / "x.tflite"
    line = _one_line_error(capsys, 2, export_cli.main(["--format", "tflite", str(ckpt), "-o", str(out)]))
    assert "unknown format 'tflite'" in line and "onnx" in line
    assert not out.exists()


def test_export_impossible_timesteps(tmp_path, capsys):
    ck = save_model(random_model("mlp", "lmht", 4, levels=2), tmp_path / "lmht.pt")
    out = tmp_path / "lmht.onnx"
    line = _one_line_error(capsys, 2, export_cli.main(["--format", "onnx", str(ck), "-T", "6"]))
    assert "multiple of 4" in line
    assert not out.exists()
    rc = export_cli.main(["--format", "onnx", str(ck), "-T", "0"])
    assert rc == 2 and not out.exists()  # argparse: one line, exit 2
    assert "error:" in capsys.readouterr().err
    # a random-weight model: its fold fidelity is not the point here (thresholds relaxed)
    assert export_cli.main(["--format", "onnx", str(ck), "-T", "8", "--max-accuracy-drop", "100",
                            "--min-spike-agreement", "0"]) == 0 and out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp files


def test_run_prints_each_step_and_json(ckpt, tmp_path, capsys):
    js = tmp_path / "r.json"
    assert cli_run.main([str(ckpt), "--dataset", "digits", "--runtime", "onnx", "--limit", "40",
                         "--timesteps", "5", "--json", str(js)]) == 0
    out = capsys.readouterr().out
    assert out.count("accuracy") >= 6 and "T=5" in out
    res = json.loads(js.read_text())
    assert res["runtime"] == "onnx" and res["samples"] == 40 and len(res["accuracy_per_step"]) == 5
    torch_res = cli_run.run_file(ckpt, runtime="torch", limit=40, timesteps=5)
    assert len(torch_res["accuracy_per_step"]) == 5


def test_run_bad_inputs(ckpt, capsys):
    assert "unknown runtime" in _one_line_error(capsys, 2, cli_run.main([str(ckpt), "--runtime", "tpu"]))
    assert "unknown dataset" in _one_line_error(capsys, 2, cli_run.main([str(ckpt), "--dataset", "nope"]))


def test_verify_table_json_and_exit_codes(ckpt, tmp_path, capsys, monkeypatch):
    js = tmp_path / "v.json"
    rc = cli_verify.main([str(ckpt), "--format", "onnx", "--limit", "60", "--json", str(js)])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "sn0" in out and "OK" in out
    rep = json.loads(js.read_text())
    assert rep["ok"] and set(rep["runtimes"]) == {"deployed-torch", "onnx"}
    for r in rep["runtimes"].values():
        assert all(v == 1.0 for v in r["spike_agreement"].values()) and r["max_abs_logit_diff"] == 0
    f = rep["fold_fidelity"]
    assert 0.9 <= min(f["spike_agreement"].values()) <= 1.0
    assert abs(f["accuracy_trained"] - f["accuracy_deployed"]) < 0.1
    # a runtime that computes different spikes makes lmh-verify exit 1
    from lmh_deploy.onnx import run as onnx_runtime

    real = onnx_runtime.run_onnx_model

    def broken(model, x, timesteps=None):
        run = real(model, x, timesteps)
        k = next(iter(run.spikes))
        run.spikes[k] = run.spikes[k].copy()
        run.spikes[k].flat[0] = 1 - run.spikes[k].flat[0]
        return run

    monkeypatch.setattr(onnx_runtime, "run_onnx_model", broken)
    assert cli_verify.main([str(ckpt), "--format", "onnx", "--limit", "20"]) == 1
    assert "MISMATCH: onnx" in capsys.readouterr().out


def test_verify_bad_inputs(ckpt, tmp_path, capsys):
    assert "unknown format" in _one_line_error(
        capsys, 2, cli_verify.main([str(ckpt), "--format", "tflite"]))
    bad = tmp_path / "b.pt"
    bad.write_text("junk")
    _one_line_error(capsys, 2, cli_verify.main([str(bad), "--format", "onnx"]))
    _one_line_error(capsys, 2, cli_verify.main([str(ckpt), "--format", "onnx", "--runtime", "x"]))


def test_check_fidelity_thresholds_by_hand():
    from lmh_deploy.verify import check_fidelity, fidelity_error

    fid = {4: {"accuracy_trained": 0.971, "accuracy_deployed": 0.968,
               "spike_agreement": {"sn0": 0.9995, "sn1": 0.9651}},
           8: {"accuracy_trained": 0.975, "accuracy_deployed": 0.975,
               "spike_agreement": {"sn0": 1.0, "sn1": 0.9990}}}
    bad = check_fidelity(fid, max_accuracy_drop=0.5, min_spike_agreement=0.999)
    assert bad == ["at T=4 layer sn1 keeps 96.510% identical spikes < --min-spike-agreement 99.9%"]
    bad = check_fidelity(fid, max_accuracy_drop=0.2, min_spike_agreement=0.9)
    assert bad == ["at T=4 the deployed accuracy 96.80% differs from the trained 97.10% by 0.30 "
                   "points > --max-accuracy-drop 0.2"]
    assert check_fidelity(fid, 0.3 + 1e-9, 0.965) == []
    msg = str(fidelity_error(check_fidelity(fid, 0.0, 1.0)))
    assert msg.startswith("fold fidelity check failed: at T=4 the deployed accuracy") and "(and 3 more)" in msg
    # layers: the worst first, with the decimals that tell it from the threshold
    assert check_fidelity(fid, 100, 1.0)[0].startswith("at T=4 layer sn1 keeps 96.510%")
    near = {4: {"accuracy_trained": 0.9, "accuracy_deployed": 0.9,
                "spike_agreement": {"sn0": 0.9999996, "sn1": 0.99999, "sn2": 0.9998}}}
    assert check_fidelity(near, 100, 1.0) == [
        "at T=4 layer sn2 keeps 99.980% identical spikes < --min-spike-agreement 100%",
        "at T=4 layer sn1 keeps 99.999% identical spikes < --min-spike-agreement 100%",
        "at T=4 layer sn0 keeps 99.99996% identical spikes < --min-spike-agreement 100%"]


@pytest.fixture(scope="module")
def chaotic(tmp_path_factory):
    """A random-weight ResNet-20 on digits."""
    return save_model(random_model("resnet20", "lmh", 4, input_quantum=1 / 16, input_bound=1.0),
                      tmp_path_factory.mktemp("rn") / "rn.pt")


@pytest.fixture
def coarse_fold(monkeypatch):
    """The fold of before issue 13 (one weight grid per synapse, no low part): its rounding
    flips some of a ResNet-20's spikes (agreement < 1, > 0.9), which the checks must catch."""
    from lmh_deploy.graph import fold as fold_mod

    one_grid = fold_mod._round_synapse
    monkeypatch.setattr(fold_mod, "_round_synapse",
                        lambda w, b, vin, split=True, min_grid=0.0: one_grid(w, b, vin, False, min_grid))


def test_verify_fails_on_fold_fidelity_with_one_line(chaotic, coarse_fold, tmp_path, capsys):
    js = tmp_path / "v.json"
    args = [str(chaotic), "--format", "onnx", "--dataset", "digits", "--limit", "40"]
    rc = cli_verify.main(args + ["--json", str(js)])
    out = capsys.readouterr().out
    rep = json.loads(js.read_text())
    worst = min(min(v for v in f["spike_agreement"].values())
                for f in rep["fold_fidelity_sweep"].values())
    assert set(rep["fold_fidelity_sweep"]) == {"4", "8"}  # the trained T and 2T
    assert 0.9 < worst < 1.0 and rep["runtimes_exact"]
    assert "weight rounding error" in out and rep["weight_error"]["first_layer"][0] == "conv0"
    assert rep["weight_error"]["first_layer"][1] > 1e-6  # the coarse fold's rounding, reported
    assert rc == (1 if rep["fidelity_failures"] else 0)
    rc = cli_verify.main(args + ["--min-spike-agreement", "1.0", "--fidelity-timesteps", "6"])
    out = capsys.readouterr().out
    assert rc == 1
    last = out.strip().splitlines()[-1]
    assert last.startswith("fold fidelity check failed: at T=") and " layer " in last
    assert "< --min-spike-agreement 100%" in last


def test_export_validate_leaves_no_file_on_failure(chaotic, coarse_fold, ckpt, tmp_path, capsys):
    out = tmp_path / "m.onnx"
    rc = export_cli.main(["-f", "onnx", str(chaotic), "-o", str(out), "--validate", "--dataset",
                          "digits", "--limit", "30", "--min-spike-agreement", "1.0"])
    line = _one_line_error(capsys, 2, rc)
    assert "fold fidelity check failed" in line and "--min-spike-agreement" in line
    assert not out.exists() and not list(tmp_path.glob(".m.onnx*"))
    ok = tmp_path / "ok.onnx"
    assert export_cli.main(["-f", "onnx", str(ckpt), "-o", str(ok), "--validate", "--limit", "60"]) == 0
    assert ok.exists()


def test_fold_fidelity_streams_batches_with_the_same_figures(chaotic):
    """fold_fidelity compares batch by batch (memory: one batch): any batch size gives the
    figures of one whole-set comparison."""
    from lmh_deploy.deployment import Deployment
    from lmh_deploy.evaluate import load_eval_data
    from lmh_deploy.verify import compare_runs, fold_fidelity

    x, y = load_eval_data("digits", 50)
    with Deployment(chaotic) as dep:
        whole = compare_runs(dep.run("reference", x, 4, 50), dep.run("torch", x, 4, 50))
        for bs in (7, 50):
            f = fold_fidelity(dep, x, y, [4], batch_size=bs)[4]
            assert f["spike_agreement"] == pytest.approx(whole["spike_agreement"], abs=0)
            assert f["max_abs_logit_diff"] == whole["max_abs_logit_diff"]


def test_export_fidelity_needs_the_model_s_own_data(tmp_path, capsys):
    """The fold-fidelity part of export validation runs on the data the checkpoint was trained
    on. A checkpoint that records none (built by the API), or whose data is not on this machine
    (CIFAR without --data-dir), is still exported and checked against the reference, with a
    one-line note; data named on the command line that cannot be read, or that does not fit the
    model, is an error and leaves no file."""
    from lmh_deploy.checkpoint import load_checkpoint

    small = save_model(random_model("mlp", "lmh", 4, input_shape=(1, 4, 4)), tmp_path / "s.pt")
    out = tmp_path / "s.onnx"
    assert export_cli.main(["-f", "onnx", str(small), "-o", str(out)]) == 0
    err = capsys.readouterr().err
    assert out.exists() and "records no training data set" in err and "--dataset" in err
    # explicit data set of another input shape: one-line error, no file
    bad = tmp_path / "bad.onnx"
    line = _one_line_error(capsys, 2, export_cli.main(["-f", "onnx", str(small), "-o", str(bad),
                                                       "--dataset", "digits"]))
    assert "[1, 8, 8]" in line and "[1, 4, 4]" in line and not bad.exists()
    assert cli_verify.main([str(small), "--format", "onnx", "--dataset", "digits"]) == 2
    assert "the model takes [1, 4, 4]" in capsys.readouterr().err
    # trained on CIFAR-10, whose files are not here
    ck = load_checkpoint(save_model(random_model("cnn", "lmh", 4, input_shape=(3, 32, 32)),
                                    tmp_path / "c.pt"))
    ck["train_config"] = {"dataset": "cifar10"}
    import torch

    torch.save(ck, tmp_path / "c.pt")
    out = tmp_path / "c.onnx"
    assert export_cli.main(["-f", "onnx", str(tmp_path / "c.pt"), "-o", str(out)]) == 0
    err = capsys.readouterr().err
    assert out.exists() and "cifar10 needs --data-dir" in err and "fold fidelity not checked" in err
    gone = tmp_path / "c2.onnx"
    rc = export_cli.main(["-f", "onnx", str(tmp_path / "c.pt"), "-o", str(gone),
                          "--data-dir", str(tmp_path / "nowhere")])
    assert rc == 2 and not gone.exists()
