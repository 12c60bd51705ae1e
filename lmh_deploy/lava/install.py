"""``lmh-install-lava`` (or ``python -m lmh_deploy.lava.install``): install Lava for pip users.

lava-nc 0.10.0 is pure Python and runs on Python 3.11+, but its metadata declares Python < 3.11
and old pins, so pip refuses it. This runs, in the current interpreter's environment::

    python -m pip install --no-deps --ignore-requires-python lava-nc==0.10.0
    python -m pip install "numpy>=1.24,<2" "asteval==0.9.33" "networkx>=2.8" "scipy>=1.10"

(the second line is the ``[lava]`` extra: what lava-nc actually imports). ``--dry-run`` prints
the commands without running them.
"""
from __future__ import annotations

import argparse
import subprocess
import sys

LAVA_PACKAGES = ["lava-nc==0.10.0"]
LAVA_DEPENDENCIES = ["numpy>=1.24,<2", "asteval==0.9.33", "networkx>=2.8", "scipy>=1.10"]
INSTALL_HINT = "lmh-install-lava (or: python -m lmh_deploy.lava.install)"


def commands(python: str = sys.executable) -> list[list[str]]:
    """The pip command lines that install Lava into ``python``'s environment."""
    pip = [python, "-m", "pip", "install"]
    return [pip + ["--no-deps", "--ignore-requires-python", *LAVA_PACKAGES], pip + LAVA_DEPENDENCIES]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="lmh-install-lava", description=__doc__.split("\n\n")[1])
    p.add_argument("--dry-run", action="store_true", help="print the pip commands only")
    args = p.parse_args(argv)
    for cmd in commands():
        print("+ " + " ".join(cmd), flush=True)
        if not args.dry_run:
            rc = subprocess.call(cmd)
            if rc:
                print(f"lmh-install-lava: error: pip exited with status {rc}", file=sys.stderr)
                return rc
    return 0


if __name__ == "__main__":
    sys.exit(main())
