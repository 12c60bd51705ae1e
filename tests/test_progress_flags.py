"""Issue 16 item 7: lmh-export (write / sample / validate) and lmh-inspect show a tqdm bar with
--progress and none with --no-progress (default: only on a terminal)."""
from __future__ import annotations

import pytest

from _deploy_models import random_model, save_model

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def ck(tmp_path_factory):
    return save_model(random_model("mlp", "lmh", 4), tmp_path_factory.mktemp("p") / "m.pt")


@pytest.mark.parametrize("flag", ["--progress", "--no-progress", None])
def test_export_progress(ck, tmp_path, capsys, flag):
    from lmh_deploy.cli import export

    out = tmp_path / "m.onnx"
    assert export.main(["-f", "onnx", str(ck), "-o", str(out)] + ([flag] if flag else [])) == 0
    err = capsys.readouterr().err
    if flag == "--progress":
        assert "lmh-export onnx:" in err and "/3 " in err, err
    else:  # --no-progress, and the default off a terminal (pytest captures: not a tty)
        # no bar; the one note says this random model records no data set for the fold check
        assert "lmh-export" not in err and "\r" not in err
        assert [ln for ln in err.splitlines() if not ln.startswith("note: fold fidelity")] == []
    assert out.exists()


@pytest.mark.parametrize("flag", ["--progress", "--no-progress"])
def test_inspect_progress(ck, capsys, flag):
    from lmh_deploy.cli import inspect

    assert inspect.main([str(ck), "--limit", "50", flag]) == 0
    err = capsys.readouterr().err
    if flag == "--progress":
        assert "reference:" in err and "/50 " in err, err  # tqdm throttles updates: total shown
    else:
        assert err == ""
