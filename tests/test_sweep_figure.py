"""Sweep figure and outputs (issue 16 item 6): Wilson interval, identical runtimes drawn once,
CSV/JSON and one line without matplotlib, --figure-format."""
from __future__ import annotations

import json
import sys

import pytest

from lmh_deploy.sweep import _curves, _label, wilson_interval


def test_wilson_interval_hand_computed():
    lo, hi = wilson_interval(9, 10)  # p=0.9, z=1.96: (0.9+0.19207)/1.38415 -/+ 0.19314
    assert lo == pytest.approx(0.59585, abs=1e-4) and hi == pytest.approx(0.98212, abs=1e-4)
    lo, hi = wilson_interval(360, 360)
    assert hi == 1.0 and lo == pytest.approx(360 / (360 + 1.959964 ** 2), abs=1e-9)
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_identical_runtimes_grouped():
    rows = [{"runtime": r, "T": t, "accuracy": a} for r, t, a in
            [("torch", 1, 0.9), ("torch", 2, 0.95), ("reference", 1, 0.9), ("reference", 2, 0.96),
             ("onnx", 1, 0.9), ("onnx", 2, 0.96), ("nir", 1, 0.9), ("nir", 2, 0.96)]]
    groups = _curves(rows, "accuracy")
    assert [g[0] for g in groups] == [["torch"], ["reference", "onnx", "nir"]]
    assert _label(groups[1][0]) == "identical in 3 runtimes (reference, onnx, nir)"


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    from lmh_deploy.training import train

    out = tmp_path_factory.mktemp("m")
    train({"epochs": 1, "out": str(out), "progress": False})
    return out / "model.pt"


def test_sweep_without_matplotlib_writes_csv_json_and_one_line(ckpt, tmp_path, monkeypatch, capsys):
    from lmh_deploy.cli import sweep as cli_sweep

    for m in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, m)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    out = tmp_path / "s"
    assert cli_sweep.main([str(ckpt), "--runtimes", "reference,onnx", "-T", "1-3", "--limit", "30",
                           "--out", str(out), "--no-progress"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1].endswith("no figure: matplotlib is not installed (pip install 'lmh-deploy[plot]')")
    assert sorted(p.name for p in out.iterdir()) == ["sweep.csv", "sweep.json"]
    res = json.loads((out / "sweep.json").read_text())
    assert res["meta"]["dataset"] == "digits" and len(res["rows"]) == 6


@pytest.mark.parametrize("fmt,magic", [("svg", b"<?xml"), ("pdf", b"%PDF")])
def test_figure_formats(ckpt, tmp_path, fmt, magic):
    pytest.importorskip("matplotlib")
    from lmh_deploy.cli import sweep as cli_sweep

    out = tmp_path / fmt
    assert cli_sweep.main([str(ckpt), "--runtimes", "reference", "-T", "1-2", "--limit", "20",
                           "--out", str(out), "--figure-format", fmt, "--no-progress"]) == 0
    assert (out / f"sweep.{fmt}").read_bytes()[:len(magic)] == magic
