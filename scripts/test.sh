#!/usr/bin/env bash
# Install everything into .venv (scripts/setup.sh), then run the whole test suite.
# Extra arguments go to pytest, e.g.  bash scripts/test.sh -m "not slow"  or  -k checkpoint
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest -q "$@"
