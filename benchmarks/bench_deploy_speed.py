"""Deployment speed targets on this machine, as ratios to their budgets (issues 4 and 5).

* the sweep of the default digits model (LM-H MLP, T=4, 360 test digits) for torch + onnx over
  T = 1..32: budget 120 s;
* the 100-sample Lava (float) run of the exported NIR file: budget 120 s (the Lava tests also run
  under a hard 120 s limit);
* when no checkpoint is given: the default ``python training/fit.py`` training (issue 2), budget
  180 s.

Usage: ``python benchmarks/bench_deploy_speed.py [--checkpoint model.pt] [--json PATH]``. Without a
checkpoint it trains the default (``training/fit.py`` defaults, about 10 s). Prints one table; the
JSON holds the same numbers. A ratio <= 1 meets the target.
"""
from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

BUDGET_S = 120.0


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", help="a digits checkpoint (default: train the default)")
    p.add_argument("--json", default=None, help="write the results here")
    args = p.parse_args(argv)

    from lmh_deploy.cli.sweep import main as sweep_main
    from lmh_deploy.nir.write import write_nir
    from lmh_deploy.graph.fold import fold_checkpoint
    from lmh_deploy.data.digits import digits_arrays
    from lmh_deploy.lava.nir import run_lava_nir

    with tempfile.TemporaryDirectory(prefix="lmh-bench-") as d:
        d = Path(d)
        ckpt = args.checkpoint
        train_s = None
        if ckpt is None:
            from lmh_deploy.training import train

            train_s, _ = _timed(lambda: train({"out": str(d / "run"), "progress": False}, log=None))
            ckpt = d / "run" / "model.pt"
        sweep_s, rc = _timed(lambda: sweep_main([str(ckpt), "--runtimes", "torch,onnx",
                                                 "--timesteps", "1-32", "--out", str(d / "sweep"),
                                                 "--no-progress"]))
        if rc != 0:
            raise SystemExit(f"the sweep failed (exit {rc})")
        write_nir(fold_checkpoint(ckpt), d / "model.nir")
        x = digits_arrays()[2][:100]
        lava_s, _ = _timed(lambda: run_lava_nir(d / "model.nir", x, timeout_s=2 * BUDGET_S))

    rows = [("sweep torch+onnx, T=1..32, 360 digits", sweep_s, BUDGET_S),
            ("Lava float run, 100 digits, T=4", lava_s, BUDGET_S)]
    if train_s is not None:
        rows.insert(0, ("train the default (fit.py defaults)", train_s, 180.0))
    print(f"{'measurement':<42}{'seconds':>10}{'budget':>9}{'ratio':>8}")
    for name, s, budget in rows:
        print(f"{name:<42}{s:>10.1f}{budget:>9.0f}{s / budget:>8.3f}")
    res = {"machine": platform.platform(), "cpus": __import__("os").cpu_count(),
           "train_default_s": train_s,
           "results": [{"measurement": n, "seconds": s, "budget_s": b, "ratio": s / b}
                       for n, s, b in rows]}
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
