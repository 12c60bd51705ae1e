"""``lmh-verify model.pt --format onnx [--runtime R,...] [--timesteps T] [--limit N] [--json PATH]``:
the command around :func:`lmh_deploy.verify.verify` (exit status 1 when a runtime differs from
the reference, 2 on bad input)."""
from __future__ import annotations

import json
import sys

from lmh_deploy.cli.common import OneLineParser, positive_int, run_cli
from lmh_deploy.verify import MAX_ACCURACY_DROP, MIN_SPIKE_AGREEMENT, format_report, verify


def build_parser() -> OneLineParser:
    p = OneLineParser(prog="lmh-verify", description="Check that exported runtimes compute the "
                      "reference interpreter's spikes exactly, layer by layer.")
    p.add_argument("checkpoint", help="the checkpoint (model.pt)")
    p.add_argument("--format", "-f", required=True, metavar="FMT", help="export format (onnx)")
    p.add_argument("--runtime", metavar="R[,R...]",
                   help="runtimes to check (default: the format's runtimes)")
    p.add_argument("--timesteps", "-T", type=positive_int, metavar="T",
                   help="time steps (default: the trained T)")
    p.add_argument("--dataset", default=None, help="data set (default: the checkpoint's, else digits)")
    p.add_argument("--data-dir", metavar="DIR", help="root of downloadable data sets (CIFAR, ...)")
    p.add_argument("--limit", type=positive_int, default=None, metavar="N",
                   help="first N test samples (default: all)")
    p.add_argument("--batch-size", type=positive_int, default=256, metavar="B")
    p.add_argument("--json", metavar="PATH", help="also write the report as JSON (atomically)")
    add_fidelity_options(p)
    return p


def add_fidelity_options(p) -> None:
    """The fold-fidelity thresholds (lmh-verify, lmh-export --validate)."""
    from lmh_deploy.cli.common import nonneg_float, unit_float

    p.add_argument("--max-accuracy-drop", type=nonneg_float, default=MAX_ACCURACY_DROP,
                   metavar="POINTS", help="fail when the deployed test accuracy differs from the "
                   f"trained module's by more than this (percentage points; default {MAX_ACCURACY_DROP})")
    p.add_argument("--min-spike-agreement", type=unit_float, default=MIN_SPIKE_AGREEMENT,
                   metavar="FRAC", help="fail when a layer keeps fewer identical spikes (trained "
                   f"module vs deployed graph) than this fraction (default {MIN_SPIKE_AGREEMENT})")
    p.add_argument("--fidelity-timesteps", metavar="TS",
                   help="the swept Ts checked besides the trained T, e.g. 8,16 or 1-32 "
                        "(default: 2T)")


def main(argv=None) -> int:
    return run_cli(build_parser(), argv, _main)


def _main(args) -> int:
    rep = verify(args.checkpoint, args.format, args.runtime, args.timesteps, args.dataset,
                 args.limit, args.batch_size, args.fidelity_timesteps, args.max_accuracy_drop,
                 args.min_spike_agreement, data_dir=args.data_dir)
    if args.json:
        from lmh_deploy.atomic import atomic_write_text

        atomic_write_text(args.json, json.dumps(rep, indent=2) + "\n")
    print(format_report(rep))
    return 0 if rep["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
