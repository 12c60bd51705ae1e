"""``python training/fit.py``: bad options give one line on stderr and exit 2; a short run, a
config file and --resume work from the command line."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FIT = ROOT / "training" / "fit.py"


def fit(*args, cwd=ROOT):
    return subprocess.run([sys.executable, str(FIT), *args], cwd=cwd, capture_output=True,
                          text=True, timeout=300)


@pytest.mark.parametrize("args,expect", [
    (["--neuron", "izh"], ["'lif'", "'lmh'", "'lmh-radical'", "'lmht'"]),
    (["--arch", "alexnet"], ["'mlp'", "'cnn'", "'resnet19'", "'vgg16'"]),
    (["--dataset", "imagenet-x"], ["'digits'"]),
    (["--levels", "4"], ["levels is only valid with neuron lmht", "'lmh'"]),
    (["--neuron", "lif", "--levels", "2"], ["levels is only valid with neuron lmht"]),
    (["--timesteps", "0"], ["timesteps must be an integer >= 1"]),
    (["--epochs", "two"], ["--epochs", "invalid int value"]),
])
def test_bad_options_one_line_exit_2(tmp_path, args, expect):
    r = fit(*args, "--out", str(tmp_path / "out"))
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("fit.py: error:") and "Traceback" not in r.stderr
    for e in expect:
        assert e in lines[0], lines[0]
    assert not (tmp_path / "out").exists()


def test_bad_config_file_and_bad_resume_file(tmp_path):
    cfg = tmp_path / "bad.toml"
    cfg.write_text('neuron = "lmh"\nlearning_rate = 0.1\n')
    r = fit("--config", str(cfg))
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    assert "unknown option(s) learning_rate" in r.stderr
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"\x00" * 100)
    r = fit("--resume", str(junk), "--out", str(tmp_path / "o"))
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert str(junk) in r.stderr and "truncated or corrupt" in r.stderr


def test_cli_config_file_run_and_resume(tmp_path):
    cfg = tmp_path / "run.toml"
    cfg.write_text('neuron = "lif"\nepochs = 1\nbatch-size = 256\nseed = 5\n')
    out = tmp_path / "run"
    r = fit("--config", str(cfg), "--seed", "7", "--out", str(out), "--progress", "false")
    assert r.returncode == 0, r.stderr
    assert "test accuracy" in r.stdout and "epoch   1/1" in r.stdout
    m = json.loads((out / "metrics.json").read_text())
    assert m["config"]["neuron"] == "lif" and m["config"]["batch_size"] == 256
    assert m["config"]["seed"] == 7  # the flag overrides the file
    # continue the same run to 2 epochs: --resume without a path reads <out>/model.pt
    r = fit("--config", str(cfg), "--seed", "7", "--epochs", "2", "--out", str(out), "--resume",
            "--progress", "false")
    assert r.returncode == 0, r.stderr
    assert "after epoch 1" in r.stdout and "epoch   2/2" in r.stdout and "epoch   1/" not in r.stdout
    m = json.loads((out / "metrics.json").read_text())
    assert m["epochs_completed"] == 2 and [h["epoch"] for h in m["history"]] == [1, 2]


def test_help_lists_flags():
    r = fit("--help")
    assert r.returncode == 0
    for flag in ("--neuron", "--levels", "--arch", "--dataset", "--timesteps", "--epochs",
                 "--batch-size", "--lr", "--optimizer", "--loss", "--device", "--seed", "--out",
                 "--resume", "--config"):
        assert flag in r.stdout
