"""``lmh-verify model.pt --format onnx|nir [--dataset D] [--data-dir DIR] [--runtime R,...] [--timesteps T] [--limit N] [--json PATH]``:
the command around :func:`lmh_deploy.verify.verify` (exit status 1 when a runtime differs from
the reference, 2 on bad input)."""
from __future__ import annotations

import json
import sys

from lmh_deploy.cli.common import positive_int, run_cli
from lmh_deploy.cli.options import add_data_args, add_progress, data_options, make_parser
from lmh_deploy.guards import check_outputs
from lmh_deploy.verify import MAX_ACCURACY_DROP, MIN_SPIKE_AGREEMENT, format_report, verify


def build_parser():
    from lmh_deploy.runtimes import FORMATS

    p = make_parser("lmh-verify", "Check that exported runtimes compute the reference "
                    "interpreter's spikes exactly, layer by layer, on a data set's test split.")
    p.add_argument("checkpoint", help="the checkpoint (model.pt)")
    p.add_argument("--format", "-f", required=True, metavar="FMT",
                   help=f"export format: {', '.join(FORMATS)}")
    p.add_argument("--runtime", metavar="R[,R...]",
                   help="runtimes to check (default: the format's runtimes)")
    p.add_argument("--timesteps", "-T", type=positive_int, metavar="T",
                   help="time steps (default: the trained T)")
    p.add_argument("--limit", type=positive_int, default=None, metavar="N",
                   help="first N test samples (default: all)")
    p.add_argument("--batch-size", type=positive_int, default=256, metavar="B")
    p.add_argument("--json", metavar="PATH", help="also write the report as JSON (atomically)")
    add_progress(p)
    add_data_args(p)
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
    p.add_argument("--fidelity-timesteps", metavar="TS", type=_timesteps_list,
                   help="the swept Ts checked besides the trained T, e.g. 8,16 or 1-32 "
                        "(default: 2T)")


def _timesteps_list(text: str) -> str:
    """argparse type of --fidelity-timesteps: checked here (one line naming the option)."""
    import argparse

    from lmh_deploy.errors import TimestepsError
    from lmh_deploy.sweep import parse_timesteps

    try:
        parse_timesteps(text, option="--fidelity-timesteps")
    except TimestepsError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def main(argv=None) -> int:
    return run_cli(build_parser(), argv, _main)


def _main(args) -> int:
    check_outputs([("--json", args.json)], [("checkpoint", args.checkpoint)])
    rep = verify(args.checkpoint, args.format, args.runtime, args.timesteps, args.dataset,
                 args.limit, args.batch_size, args.data_dir, data_options(args), args.progress,
                 fidelity_ts=args.fidelity_timesteps, max_accuracy_drop=args.max_accuracy_drop,
                 min_spike_agreement=args.min_spike_agreement)
    if args.json:
        from lmh_deploy.atomic import atomic_write_text

        atomic_write_text(args.json, json.dumps(rep, indent=2) + "\n")
    print(format_report(rep))
    return 0 if rep["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
