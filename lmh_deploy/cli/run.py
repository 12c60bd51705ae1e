"""``lmh-run FILE --dataset digits [--runtime R] [--timesteps T] [--limit N] [--json PATH]``.

Runs a checkpoint (``.pt``: runtimes ``torch`` = the trained module, ``deployed-torch``,
``reference``, ``onnx`` = exported on the fly) or an exported file (``.onnx``: runtime ``onnx``) on
the test split and prints the accuracy of the cumulative mean logits after each step.
"""
from __future__ import annotations

import json
import sys
import time

from lmh_deploy.cli.common import OneLineParser, positive_int, run_cli


def build_parser() -> OneLineParser:
    from lmh_deploy.runtimes import RUNTIMES

    p = OneLineParser(prog="lmh-run", description="Run a checkpoint or an exported model on a "
                      "data set and print the accuracy after each time step.")
    p.add_argument("file", help="checkpoint (model.pt) or exported file (model.onnx)")
    p.add_argument("--dataset", default="digits", help="data set (test split; default digits)")
    p.add_argument("--runtime", default=None, metavar="R",
                   help=f"one of {', '.join(RUNTIMES)} (default: torch for a checkpoint, the "
                        "file's runtime for an exported file)")
    p.add_argument("--timesteps", "-T", type=positive_int, metavar="T",
                   help="time steps (default: the trained / exported T)")
    p.add_argument("--limit", type=positive_int, metavar="N", help="first N test samples only")
    p.add_argument("--batch-size", type=positive_int, default=256, metavar="B")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON (atomically)")
    return p


def run_file(path, dataset="digits", runtime=None, timesteps=None, limit=None, batch_size=256) -> dict:
    """Evaluate ``path`` and return the result dict that ``lmh-run --json`` writes."""
    from lmh_deploy.deployment import Deployment
    from lmh_deploy.evaluate import accuracy_per_step, load_eval_data, spike_stats

    with Deployment(path) as dep:
        name = runtime or ("torch" if dep.is_checkpoint else dep.file_runtime.name)
        rt = dep.check_runtime(name)
        t = dep.check_timesteps(timesteps or dep.trained_timesteps)
        x, y = load_eval_data(dataset, limit)
        t0 = time.perf_counter()
        run = dep.run(rt, x, t, batch_size)
        wall = time.perf_counter() - t0
        trained = dep.trained_timesteps
    acc = accuracy_per_step(run.logits, y)
    return {"file": str(path), "runtime": rt.name, "dataset": dataset, "timesteps": t,
            "trained_timesteps": trained, "samples": int(len(y)),
            "accuracy_per_step": acc, "accuracy": acc[-1], **spike_stats(run.spikes),
            "wall_time_s": wall}


def main(argv=None) -> int:
    return run_cli(build_parser(), argv, _main)


def _main(args) -> int:
    res = run_file(args.file, args.dataset, args.runtime, args.timesteps, args.limit,
                   args.batch_size)
    if args.json:
        from lmh_deploy.atomic import atomic_write_text

        atomic_write_text(args.json, json.dumps(res, indent=2) + "\n")
    print(f"{res['file']}  runtime {res['runtime']}  {res['dataset']} ({res['samples']} test samples)")
    for t, a in enumerate(res["accuracy_per_step"], 1):
        print(f"  T={t:<3d} accuracy {a:.4f}")
    sps = res["spikes_per_sample"]
    sps = "spikes not recorded" if sps is None else f"{sps:.0f} spikes/sample"
    print(f"accuracy {res['accuracy']:.4f} at T={res['timesteps']}; {sps}; {res['wall_time_s']:.2f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
