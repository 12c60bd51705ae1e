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


def test_figure_has_accuracy_activity_and_cost_panels(tmp_path, monkeypatch):
    """Issue 19: the sweep figure carries a cost panel: SOPs per sample (left axis) and the energy
    estimate (right axis, nJ) against T, with the ReLU ANN's energy as the reference line."""
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from lmh_deploy.sweep import plot

    rows = [{"runtime": rt, "T": t, "accuracy": 0.5 + 0.1 * t, "spikes_per_sample": 10.0 * t,
             "sops_per_sample": 300.0 * t, "snn_energy_pj": 0.9 * 300 * t + 46.0,
             "ann_energy_pj": 2000.0, "firing_rate": {}} for rt in ("reference", "onnx")
            for t in (1, 2, 3)]
    result = {"meta": {"file": "m.pt", "dataset": "digits", "samples": 10, "trained_timesteps": 2,
                       "model": "lmh mlp"}, "rows": rows}
    figs = []
    monkeypatch.setattr(plt, "close", lambda fig=None: figs.append(fig))
    plot(result, tmp_path / "s.png")
    (fig,) = figs
    labels = [a.get_ylabel() for a in fig.axes]
    assert labels == ["test accuracy (%, 10 samples)", "spikes per sample (all layers)",
                      "SOPs per sample (spike count x fan-out)", "energy estimate per sample (nJ)"]
    sop_ax, energy_ax = fig.axes[2], fig.axes[3]
    (sop_line,) = [ln for ln in sop_ax.get_lines() if ln.get_label().startswith("identical")]
    assert sop_line.get_label() == "identical in 2 runtimes (reference, onnx)"
    assert list(sop_line.get_ydata()) == [300.0, 600.0, 900.0]
    energy, ann = energy_ax.get_lines()
    assert list(energy.get_ydata()) == pytest.approx([0.316, 0.586, 0.856])  # nJ = pJ / 1000
    assert list(ann.get_ydata()) == [2.0, 2.0] and "ReLU ANN" in ann.get_label()
    plt.close(fig)
    # without SOPs (a run that recorded no spikes) the figure has the accuracy panel only
    bare = [dict(r, spikes_per_sample=None, sops_per_sample=None, snn_energy_pj=None,
                 ann_energy_pj=None) for r in rows]
    figs.clear()
    plot({"meta": result["meta"], "rows": bare}, tmp_path / "b.png")
    assert [a.get_ylabel() for a in figs[0].axes] == ["test accuracy (%, 10 samples)"]
