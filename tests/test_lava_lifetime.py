"""Lava never outlives its caller (issue 14): killing ``lmh-run --runtime lava`` with SIGTERM,
SIGKILL or SIGINT leaves no process and no temp folder after 2 s; a 120-character TMPDIR works."""
import glob
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("lava", reason="Lava is installed by scripts/setup.sh")
pytest.importorskip("nir")

from _deploy_models import random_model  # noqa: E402
from lmh_deploy.graph.fold import fold  # noqa: E402
from lmh_deploy.nir.write import write_nir  # noqa: E402

pytestmark = [pytest.mark.lava, pytest.mark.timeout(180, method="signal")]
BIN = Path(sys.executable).parent


def _ours(parent: int) -> list:
    """Pids whose environment names ``parent`` as the Lava caller (worker, its Lava processes,
    the watchdog)."""
    tag = f"LMH_LAVA_PARENT={parent}".encode()
    pids = []
    for d in glob.glob("/proc/[0-9]*"):
        try:
            with open(f"{d}/environ", "rb") as fh:
                if tag in fh.read().split(b"\0"):
                    with open(f"{d}/stat") as st:
                        if st.read().split()[2] != "Z":
                            pids.append(int(d[6:]))
        except OSError:
            pass
    return pids


@pytest.fixture(scope="module")
def cnn_nir(tmp_path_factory):
    path = tmp_path_factory.mktemp("lava-life") / "cnn.nir"
    write_nir(fold(random_model("cnn", "lmh", 4)), path)
    return path


def _folders():
    return set(glob.glob("/tmp/lmh-lava-*"))


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL, signal.SIGINT])
def test_killing_lmh_run_leaves_nothing(cnn_nir, sig):
    before = _folders()
    p = subprocess.Popen([str(BIN / "lmh-run"), str(cnn_nir), "--runtime", "lava",
                          "--limit", "300"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t0 = time.time()
    while len(_ours(p.pid)) < 4 and time.time() - t0 < 90:   # Lava processes are running
        time.sleep(0.2)
    assert len(_ours(p.pid)) >= 4, "the Lava run did not start"
    assert _folders() - before
    p.send_signal(sig)
    p.wait(timeout=30)
    time.sleep(2.0)
    assert _ours(p.pid) == []
    assert not (_folders() - before)


def test_run_under_a_120_character_tmpdir(cnn_nir, tmp_path):
    long = tmp_path / ("d" * (119 - len(str(tmp_path))))
    long.mkdir()
    assert len(str(long)) >= 119
    env = dict(os.environ, TMPDIR=str(long))
    out = subprocess.run([str(BIN / "lmh-run"), str(cnn_nir), "--runtime", "lava", "--limit", "3"],
                         capture_output=True, text=True, timeout=150, env=env)
    assert out.returncode == 0, out.stderr
    assert not list(long.iterdir())
