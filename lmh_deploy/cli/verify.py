"""``lmh-verify model.pt --format onnx [--runtime R,...] [--timesteps T] [--limit N] [--json PATH]``:
the command around :func:`lmh_deploy.verify.verify` (exit status 1 when a runtime differs from
the reference, 2 on bad input)."""
from __future__ import annotations

import json
import sys

from lmh_deploy.cli.common import OneLineParser, positive_int, run_cli
from lmh_deploy.verify import format_report, verify


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
    p.add_argument("--limit", type=positive_int, default=None, metavar="N",
                   help="first N test samples (default: all)")
    p.add_argument("--batch-size", type=positive_int, default=256, metavar="B")
    p.add_argument("--json", metavar="PATH", help="also write the report as JSON (atomically)")
    return p


def main(argv=None) -> int:
    return run_cli(build_parser(), argv, _main)


def _main(args) -> int:
    rep = verify(args.checkpoint, args.format, args.runtime, args.timesteps, args.dataset,
                 args.limit, args.batch_size)
    if args.json:
        from lmh_deploy.atomic import atomic_write_text

        atomic_write_text(args.json, json.dumps(rep, indent=2) + "\n")
    print(format_report(rep))
    return 0 if rep["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
