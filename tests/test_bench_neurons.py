"""The GPU benchmark's tuning logic, checked on the CPU with a synthetic timer.

``bench_neurons.tune_rows`` times each candidate backward configuration (elements per thread,
programs per SM, and for LM-HT dL/dOmega in registers or by ``tl.dot``) and ``install_best``
makes the fused launchers use the winners. The timings need a GPU; the selection and the
installed launch configurations do not, so they are tested here with a fake row function.
"""
from __future__ import annotations

import importlib.util
import os

import pytest

from lmh_deploy.kernels import fused as F

_PATH = os.path.join(os.path.dirname(__file__), "..", "benchmarks", "bench_neurons.py")


@pytest.fixture
def bench():
    spec = importlib.util.spec_from_file_location("bench_neurons", _PATH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _fake_times(kind, t, cfg):
    """A made-up cost surface: LM-HT at T=10 is fastest with the tl.dot variant at 4 elements
    per thread and 8 programs/SM; everything else prefers 2 elements per thread, 4 programs."""
    pt, _, pps = cfg[:3]
    dot = cfg[3] if len(cfg) > 3 else False
    if kind == "lmht" and t == 10:
        return 1.0 + abs(pt - 4) + (0 if dot else 5) + (0 if pps == 8 else 0.5)
    return 1.0 + abs(pt - 2) + (0 if pps == 4 else 0.25) + (3 if dot else 0)


def test_tune_picks_and_installs_the_fastest(bench, monkeypatch):
    def fake_row(kind, t, bw):
        cfg = F._lmht_bwd_cfg(t, True) if kind == "lmht" else F._lmh_bwd_cfg(t, False, True)
        return {"section": "layer", "kind": kind, "T": t, "impl": "fused", "graph_ms":
                _fake_times(kind, t, cfg), "ms": 0.0, "x_floor": 0.0, "peak_gb": 0.0}

    monkeypatch.setattr(bench, "_fused_graph_row", fake_row)
    orig = (F._lmh_bwd_cfg, F._lmht_bwd_cfg)
    rows, best = bench.tune_rows(bw=1.0, ts=(4, 10))
    assert (F._lmh_bwd_cfg, F._lmht_bwd_cfg) == orig  # tuning leaves the launchers as they were
    assert best[("lmht", 10)] == (4, 8, True)
    assert best[("lmht", 4)][2] is False and best[("lmht", 4)][0] == 2
    assert best[("lmh", 4)] == (2, 4, False)
    assert any(r.get("omega_dot") for r in rows) and all(r["section"] == "tune" for r in rows)
    monkeypatch.setattr(F, "_lmh_bwd_cfg", F._lmh_bwd_cfg)  # restored after the test
    monkeypatch.setattr(F, "_lmht_bwd_cfg", F._lmht_bwd_cfg)
    bench.install_best(best)
    assert F._lmht_bwd_cfg(10, True) == (4, 4, 8, True)
    assert F._lmht_bwd_cfg(10, False) == orig[1](10, False)  # no Omega: the untuned default
    assert F._lmh_bwd_cfg(4, False, True) == (2, 4, 4)
    assert F._lmh_bwd_cfg(7, False, True) == orig[0](7, False, True)  # untuned T: default
