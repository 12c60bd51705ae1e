"""Issue 16 acceptance: a non-editable ``pip install`` into a fresh virtualenv, then every
command from a folder outside the repository: digits (train, export onnx+nir, run, verify,
sweep) and a tiny fabricated CIFAR-10 archive with --data-dir through train, export's
validation, run, verify, sweep and inspect. Each step's exit code and one key figure.

torch==2.13.0 is installed first (the CPU wheel the project's pip configuration finds; an
unpinned torch would resolve to the CUDA build). pip's cache is reused. Skipped, with pip's own
last line, when pip cannot reach a package."""
from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from _fake_cifar import write_fake_cifar10

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parents[1]
IGNORE = shutil.ignore_patterns(".venv", ".git", "runs", "build", "dist", "*.egg-info",
                                "__pycache__", ".pytest_cache", "*.whl", "*.onnx", "*.nir")
UNREACHABLE = ("No matching distribution", "Could not find a version", "connection",
               "Network is unreachable", "Temporary failure in name resolution")


def _pip(venv: Path, *args: str) -> None:
    r = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", *args],
                       capture_output=True, text=True)
    if r.returncode != 0:
        err = (r.stderr.strip().splitlines() or ["?"])
        if any(s.lower() in r.stderr.lower() for s in UNREACHABLE):
            pytest.skip(f"pip cannot reach a package: {err[-1]}")
        raise AssertionError(f"pip install {' '.join(args)} failed:\n{r.stderr[-3000:]}")


def _cmd(venv, cwd, name, *args) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    r = subprocess.run([str(venv / "bin" / name), *map(str, args)], cwd=cwd, capture_output=True,
                       text=True, env=env)
    assert r.returncode == 0, f"{name} {' '.join(map(str, args))} -> {r.returncode}\n{r.stderr[-3000:]}"
    return r.stdout


def test_pip_install_and_every_command_outside_the_repo(tmp_path):
    t0 = time.perf_counter()
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, ignore=IGNORE)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
    py = venv / "bin" / "python"
    cfg = subprocess.run([str(py), "-c", "import sys; print(sys.prefix != sys.base_prefix)"],
                         capture_output=True, text=True, check=True).stdout.strip()
    assert cfg == "True"
    _pip(venv, "torch==2.13.0")
    has_setuptools = subprocess.run([str(py), "-c", "import setuptools, sys; "
                                     "sys.exit(int(setuptools.__version__.split('.')[0]) < 64)"]
                                    ).returncode == 0
    _pip(venv, *(["--no-build-isolation"] if has_setuptools else []), f"{src}[onnx,nir,plot]")
    t_install = time.perf_counter() - t0
    # the package is installed, not the source tree: configs are package data, found by name
    work = tmp_path / "work"
    work.mkdir()
    where = subprocess.run([str(py), "-c", "import lmh_deploy; print(lmh_deploy.__file__)"],
                           cwd=work, capture_output=True, text=True, check=True).stdout.strip()
    assert "site-packages" in where and not where.startswith(str(src)), where
    assert "lmh_c10_resnet19" in _cmd(venv, work, "lmh-train", "--list-configs").split()

    # digits: train -> export onnx and nir -> run -> verify -> sweep
    _cmd(venv, work, "lmh-train", "--epochs", "2", "--out", "d", "--no-progress")
    acc = json.loads((work / "d" / "metrics.json").read_text())["test_accuracy"]
    assert acc > 0.8, acc  # LM-H MLP on digits: ~0.95 after 2 epochs
    for fmt in ("onnx", "nir"):
        out = _cmd(venv, work, "lmh-export", "-f", fmt, "d/model.pt", "--no-progress")
        assert "validated:" in out and "on 32 samples at T=4" in out, out
    for f in ("d/model.onnx", "d/model.nir"):
        _cmd(venv, work, "lmh-run", f, "--json", f + ".json", "--no-progress")
        r = json.loads((work / (f + ".json")).read_text())
        assert r["dataset"] == "digits" and r["samples"] == 360
        assert abs(r["accuracy"] - acc) <= 3 / 360, (r["accuracy"], acc)  # folded vs trained
    assert (json.loads((work / "d/model.onnx.json").read_text())["accuracy"]
            == json.loads((work / "d/model.nir.json").read_text())["accuracy"])
    _cmd(venv, work, "lmh-verify", "d/model.pt", "--format", "onnx", "--json", "v.json",
         "--no-progress")
    v = json.loads((work / "v.json").read_text())
    assert v["ok"] is True and set(v["runtimes"]["onnx"]["spike_agreement"].values()) == {1.0}
    _cmd(venv, work, "lmh-sweep", "d/model.pt", "--runtimes", "reference,onnx", "-T", "1-4",
         "--out", "sw", "--no-progress")
    rows = list(csv.DictReader((work / "sw" / "sweep.csv").open()))
    assert len(rows) == 8 and (work / "sw" / "sweep.png").stat().st_size > 10_000
    assert [r["accuracy"] for r in rows[:4]] == [r["accuracy"] for r in rows[4:]]

    t_digits = time.perf_counter() - t0 - t_install
    # fabricated CIFAR-10 with --data-dir through every command
    data = write_fake_cifar10(tmp_path / "cifar")
    dd = ["--data-dir", str(data)]
    _cmd(venv, work, "lmh-train", "--dataset", "cifar10", "--arch", "cnn", "-T", "2", "--epochs",
         "1", "--batch-size", "8", "--out", "c", "--no-progress", *dd)
    m = json.loads((work / "c" / "metrics.json").read_text())
    assert m["train_samples"] == 20 and m["test_samples"] == 6
    out = _cmd(venv, work, "lmh-export", "-f", "onnx", "c/model.pt", "--with-spikes",
               "--no-progress", *dd)
    assert "on 6 samples at T=2" in out, out  # validated on the archive's test split
    out = _cmd(venv, work, "lmh-export", "-f", "nir", "c/model.pt", "--no-progress", *dd)
    assert "on 6 samples at T=2" in out, out
    for f in ("c/model.pt", "c/model.onnx", "c/model.nir"):
        _cmd(venv, work, "lmh-run", f, "--json", f + ".json", "--no-progress", *dd)
        r = json.loads((work / (f + ".json")).read_text())
        assert r["dataset"] == "cifar10" and r["samples"] == 6  # data set read from the file
        assert r["accuracy"] == pytest.approx(m["test_accuracy"])
    _cmd(venv, work, "lmh-verify", "c/model.pt", "--format", "nir", "--json", "cv.json",
         "--no-progress", *dd)
    cv = json.loads((work / "cv.json").read_text())
    assert cv["ok"] is True and cv["dataset"] == "cifar10" and cv["samples"] == 6
    _cmd(venv, work, "lmh-sweep", "c/model.onnx", "-T", "1-2", "--out", "csw", "--no-progress", *dd)
    crow = list(csv.DictReader((work / "csw" / "sweep.csv").open()))
    assert [int(r["T"]) for r in crow] == [1, 2] and float(crow[1]["sops_per_sample"]) > 0
    _cmd(venv, work, "lmh-inspect", "c/model.pt", "--json", "ci.json", "--no-progress", *dd)
    ci = json.loads((work / "ci.json").read_text())
    assert ci["dataset"] == "cifar10" and ci["samples"] == 6
    assert ci["per_T"][0]["totals"]["sops_per_sample"] == pytest.approx(
        float(crow[1]["sops_per_sample"]))
    total = time.perf_counter() - t0
    print(f"pip install {t_install:.0f} s, digits {t_digits:.0f} s, "
          f"cifar {total - t_install - t_digits:.0f} s; all {total:.0f} s")
