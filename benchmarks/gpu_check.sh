#!/usr/bin/env bash
# One GPU check for the fused kernels (issue 21), sized for a ~5-minute lease on an H200:
#   1. the kernel tests compiled (TRITON_INTERPRET unset), the spike-rule rounding edges included;
#   2. a trimmed bench_neurons run: tune (LM-HT backward configurations), layer (fused rows and
#      SpikingJelly's LIF kernel as the peer), resnet (eager / fused / compact, peak memory);
#   3. if time is left, Nsight Compute on the LM-HT T = 10 backward (registers-only vs tl.dot).
# Usage: bash benchmarks/gpu_check.sh OUTDIR      (OUTDIR defaults to $OUT)
# Env: TEST_ARGS / BENCH_ARGS (replace the pytest arguments / bench arguments but --json),
#      NCU_MODES (LM-HT dot modes profiled, default "0 2"), WHL (folder of wheels to add, default .whl: spikingjelly and loguru for the peer row),
#      PYTHON (default python3), TEST_TIMEOUT / BENCH_TIMEOUT / NCU_TIMEOUT (seconds),
#      DRY=1 (CPU: interpreter, only the spike-rule tests, the bench's argument parsing).
# Writes OUTDIR/tests.log, junit.xml, bench.json, bench.log, ncu.log, env.txt.
set -u
OUTDIR=${1:-${OUT:-/tmp/gpu_check_out}}
mkdir -p "$OUTDIR"
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-python3}
WHL=${WHL:-$ROOT/.whl}
TEST_TIMEOUT=${TEST_TIMEOUT:-130}
BENCH_TIMEOUT=${BENCH_TIMEOUT:-240}
NCU_TIMEOUT=${NCU_TIMEOUT:-60}
START=$SECONDS
unset TRITON_INTERPRET

# The package laid out as installed: export/ and training/ are lmh_deploy.export / .training.
SITE=$(mktemp -d /tmp/lmh_site.XXXX)
cp -r "$ROOT/lmh_deploy" "$ROOT/tests" "$ROOT/benchmarks" "$ROOT/pyproject.toml" "$SITE/"
rm -rf "$SITE/lmh_deploy/export" "$SITE/lmh_deploy/training"
cp -r "$ROOT/export" "$SITE/lmh_deploy/export"
cp -r "$ROOT/training" "$SITE/lmh_deploy/training"
PP=$SITE
if [ -d "$WHL" ] && ls "$WHL"/*.whl >/dev/null 2>&1; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target "$SITE/_whl" "$WHL"/*.whl && PP=$SITE:$SITE/_whl
fi
export PYTHONPATH=$PP PYTHONUNBUFFERED=1
cd "$SITE" || exit 1
{
    echo "date $(date -u +%FT%TZ)"
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem --format=csv 2>&1
    "$PY" -c "import sys, torch, triton; print('python', sys.version.split()[0], 'torch', torch.__version__, 'triton', triton.__version__, 'cuda', torch.cuda.is_available())"
    "$PY" -c "import spikingjelly; print('spikingjelly', spikingjelly.__file__)" 2>&1 | tail -1
} > "$OUTDIR/env.txt" 2>&1
cat "$OUTDIR/env.txt"

# 1. tests, compiled (on a CUDA machine tests/conftest.py leaves TRITON_INTERPRET unset)
if [ "${DRY:-0}" = 1 ]; then
    export TRITON_INTERPRET=1
    TESTS=(tests/test_spike_rule.py -k "numpy_and_torch_ops or triton_kernels")
else
    # shellcheck disable=SC2206
    TESTS=(${TEST_ARGS:--n 8 tests/test_kernels.py tests/test_spike_rule.py tests/test_bench_neurons.py})
fi
timeout "$TEST_TIMEOUT" "$PY" -m pytest -q -p no:cacheprovider --timeout 100 \
    --junitxml "$OUTDIR/junit.xml" "${TESTS[@]}" > "$OUTDIR/tests.log" 2>&1
echo "# tests rc=$? after $((SECONDS - START)) s"
grep -E "passed|failed|error" "$OUTDIR/tests.log" | tail -3

# 2. the trimmed benchmark (JSON written after each section, so a timeout keeps what ran)
BENCH=(benchmarks/bench_neurons.py --json "$OUTDIR/bench.json" --sections tune,layer,resnet
       --impls fused,spikingjelly --kinds lif,lmh,lmh-radical,lmht --ts 4,10
       --resnet-impls eager,fused,compact --tune-kinds lmht --rep-scale 0.6)
# shellcheck disable=SC2206
[ -n "${BENCH_ARGS:-}" ] && BENCH=(benchmarks/bench_neurons.py --json "$OUTDIR/bench.json" $BENCH_ARGS)
if [ "${DRY:-0}" = 1 ]; then
    "$PY" "${BENCH[@]}" --help > "$OUTDIR/bench.log" 2>&1 && echo "# bench arguments parse"
else
    timeout "$BENCH_TIMEOUT" "$PY" "${BENCH[@]}" > "$OUTDIR/bench.log" 2>&1
    echo "# bench rc=$? after $((SECONDS - START)) s"
fi

# 3. Nsight Compute on the LM-HT T = 10 backward, one launch per dot mode, if time is left
if [ "${DRY:-0}" != 1 ] && command -v ncu >/dev/null && [ $((SECONDS - START)) -lt ${NCU_BEFORE:-300} ]; then
    cat > /tmp/ncu_lmht.py <<'EOF'
import sys
import torch
from lmh_deploy.kernels import fused as F
from lmh_deploy.neurons import LMHTNeuron
mode = int(sys.argv[1])
cfg = {0: (1, 4, 2, 0), 1: (2, 4, 4, 1), 2: (2, 4, 4, 2), 3: (1, 4, 4, 3)}[mode]
F._lmht_bwd_cfg = lambda t, need: cfg
torch.manual_seed(0)
mod = LMHTNeuron(10, levels=2).cuda()
x = (torch.randn(10, 64, 128, 32, 32, device="cuda", dtype=torch.bfloat16) * 0.8 + 0.3).requires_grad_()
g = torch.randn_like(x)
for _ in range(2):
    torch.autograd.grad(mod.counts(x), [x, mod.a, mod.M], grad_outputs=g)
torch.cuda.synchronize()
k = F.LAST_KERNELS.get("lmht_bwd")
print("mode", mode, "cfg", cfg, "regs", getattr(k, "n_regs", None), "spills", getattr(k, "n_spills", None))
EOF
    for mode in ${NCU_MODES:-0 2}; do
        timeout $((NCU_TIMEOUT / 2)) ncu --clock-control none -k regex:lmht_bwd -s 1 -c 1 \
            --section SpeedOfLight --section Occupancy --section LaunchStats \
            "$PY" /tmp/ncu_lmht.py $mode >> "$OUTDIR/ncu.log" 2>&1
        echo "# ncu mode $mode rc=$?" >> "$OUTDIR/ncu.log"
    done
    grep -E "mode|Duration|Throughput|Registers Per|Achieved Occupancy|Theoretical Occupancy|rc=" "$OUTDIR/ncu.log" | head -40
fi

echo "# total $((SECONDS - START)) s"
echo "# --- tests"; tail -4 "$OUTDIR/tests.log"
echo "# --- bench"
if grep -q "# summary" "$OUTDIR/bench.log"; then
    sed -n '/# summary/,$p' "$OUTDIR/bench.log" | head -60
else
    tail -40 "$OUTDIR/bench.log"
fi
grep -E "^# (best|installed)|ERROR" "$OUTDIR/bench.log" | head -20
