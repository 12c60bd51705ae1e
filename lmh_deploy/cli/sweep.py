"""``lmh-sweep model.pt --runtimes torch,reference,onnx --timesteps 1-32 --dataset digits
[--limit N] --out DIR``: accuracy and spike cost against T per runtime -> DIR/sweep.{csv,json,png}.

Everything is validated before any run: an unknown runtime, an empty or malformed T list, a T the
model cannot run, or a bad file gives a one-line error (exit 2) and writes nothing.
"""
from __future__ import annotations

import sys

from lmh_deploy.cli.common import OneLineParser, positive_int, run_cli


def build_parser() -> OneLineParser:
    from lmh_deploy.runtimes import RUNTIMES

    p = OneLineParser(prog="lmh-sweep", description="Accuracy against the number of time steps, "
                      "per runtime (CSV, JSON and a figure).")
    p.add_argument("file", help="checkpoint (model.pt) or exported file (model.onnx)")
    p.add_argument("--runtimes", default="torch,reference,onnx", metavar="R[,R...]",
                   help=f"runtimes to sweep (from {', '.join(RUNTIMES)}; default torch,reference,onnx)")
    p.add_argument("--timesteps", "-T", default="1-32", metavar="LIST",
                   help="ranges and lists, e.g. 1-32 or 1,2,4,8 or 1-8,16,32 (default 1-32)")
    p.add_argument("--dataset", default="digits", help="data set (test split; default digits)")
    p.add_argument("--limit", type=positive_int, metavar="N", help="first N test samples only")
    p.add_argument("--out", default="runs/sweep", metavar="DIR", help="output directory")
    p.add_argument("--per-t", action="store_true",
                   help="re-export and re-run at every T (default: one run at the largest T, prefixes)")
    p.add_argument("--batch-size", type=positive_int, default=256, metavar="B")
    p.add_argument("--progress", dest="progress", action="store_true", default=None,
                   help="always show the progress bar (default: on a terminal)")
    p.add_argument("--no-progress", dest="progress", action="store_false")
    return p


def main(argv=None) -> int:
    return run_cli(build_parser(), argv, _main)


def _main(args) -> int:
    from lmh_deploy.sweep import plan, run_sweep, write_outputs

    dep, rts, ts = plan(args.file, args.runtimes, args.timesteps)
    with dep:
        result = run_sweep(dep, rts, ts, args.dataset, args.limit, args.batch_size,
                           args.per_t, args.progress)
    paths = write_outputs(result, args.out)
    rows = result["rows"]
    names = list(dict.fromkeys(r["runtime"] for r in rows))
    print(f"{'T':>4}" + "".join(f"{n:>16}" for n in names))
    for t in ts:
        accs = {r["runtime"]: r["accuracy"] for r in rows if r["T"] == t}
        print(f"{t:>4}" + "".join(f"{accs[n]:>16.4f}" for n in names))
    best = max(rows, key=lambda r: (r["accuracy"], -r["T"]))
    print(f"peak {best['accuracy']:.4f} at T={best['T']} ({best['runtime']}); trained T="
          f"{result['meta']['trained_timesteps']}")
    for note in result["meta"].get("notes", []):
        print(f"note: {note}")
    print(f"wrote {paths['csv']}, {paths['json']}, {paths['png']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
