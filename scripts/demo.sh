#!/usr/bin/env bash
# The main job on the default: install into .venv, train LM-H on digits (training/fit.py), then
# export, run, verify and sweep the trained model with the deployment tools.
# Arguments go to training/fit.py (e.g. --neuron lmht --levels 2); LMH_OUT sets the run directory.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
OUT=${LMH_OUT:-runs/latest}
.venv/bin/python training/fit.py --out "$OUT" "$@"

if .venv/bin/lmh-export --help >/dev/null 2>&1; then
  echo "== export to ONNX and NIR"
  .venv/bin/lmh-export "$OUT/model.pt" --format onnx
  .venv/bin/lmh-export "$OUT/model.pt" --format nir
fi
if .venv/bin/lmh-run --help >/dev/null 2>&1; then
  echo "== run the exported ONNX model in onnxruntime"
  .venv/bin/lmh-run "$OUT/model.onnx"
  echo "== run the exported NIR model as a Lava process graph (CPU simulation, 100 test digits)"
  .venv/bin/lmh-run "$OUT/model.nir" --runtime lava --limit 100
fi
if .venv/bin/lmh-verify --help >/dev/null 2>&1; then
  echo "== verify the exported runtimes spike for spike against the reference interpreter"
  .venv/bin/lmh-verify "$OUT/model.pt" --format onnx --limit 100
  .venv/bin/lmh-verify "$OUT/model.pt" --format nir --runtime nir,nir-torch,lava --limit 100
fi
if .venv/bin/lmh-sweep --help >/dev/null 2>&1; then
  echo "== accuracy against the number of time steps"
  .venv/bin/lmh-sweep "$OUT/model.pt" --runtimes torch,reference,onnx,nir,lava --timesteps 1-32 \
    --out "$OUT/sweep" --no-progress
  echo "== figure: $OUT/sweep/sweep.png"
fi
echo "== done: results in $OUT/"
