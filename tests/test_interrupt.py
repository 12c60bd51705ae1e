"""A command stopped by Ctrl-C (SIGINT) or SIGTERM while it writes leaves nothing behind: the
atomic output's temporary file is deleted, one line on stderr, exit 130 / 143."""
from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

CKPT = Path(__file__).parent / "data" / "fidelity" / "resnet20_digits_lmh.pt"
EXPORT = "import sys; from lmh_deploy.cli.export import main; sys.exit(main(sys.argv[1:]))"


@pytest.mark.timeout(240)
@pytest.mark.parametrize("sig, code, word", [(signal.SIGTERM, 143, "terminated"),
                                             (signal.SIGINT, 130, "interrupted")])
def test_export_stopped_during_validation_leaves_nothing(tmp_path, sig, code, word):
    out = tmp_path / "k.nir"
    # the file is written to a temporary name first, then the (long) fold-fidelity check runs
    p = subprocess.Popen([sys.executable, "-c", EXPORT, "--format", "nir", str(CKPT), "-o",
                          str(out), "--no-progress"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 180
    while not list(tmp_path.glob(".k.nir.*")) and p.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert p.poll() is None, "export ended before its temporary file was seen"
    time.sleep(0.5)
    p.send_signal(sig)
    _, err = p.communicate(timeout=120)
    assert p.returncode == code, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert lines == [f"lmh-export: {word}; no partial output kept"], err
    assert list(tmp_path.iterdir()) == []
