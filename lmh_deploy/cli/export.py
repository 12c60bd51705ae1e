"""``lmh-export --format onnx model.pt [-o model.onnx] [--timesteps T]``.

Folds the checkpoint once (:func:`lmh_deploy.graph.fold.fold`) and hands the DeployGraph to the writer
of the chosen format. The output is written atomically (temporary file in the destination
directory, then ``os.replace``): on any error no output file is left behind.

Formats live in :data:`lmh_deploy.runtimes.FORMATS` (default output: the input with suffix
``.<format>``). To add a format, add one line there.
"""
from __future__ import annotations

import sys
from pathlib import Path

from lmh_deploy.cli.common import OneLineParser, positive_int, run_cli
from lmh_deploy.errors import ExportFormatError
from lmh_deploy.runtimes import FORMATS, get_writer

def export_checkpoint(path, fmt: str, out=None, timesteps: int | None = None,
                      validate: dict | None = None, **options) -> Path:
    """Fold checkpoint ``path`` and write it in format ``fmt`` to ``out`` (atomically).

    ``validate`` (a dict of :func:`validate_fold` options, or None): check the fold fidelity
    first; a failed check raises :class:`~lmh_deploy.errors.FoldFidelityError` and no file is
    written."""
    from lmh_deploy.atomic import atomic_output
    from lmh_deploy.graph.fold import fold
    from lmh_deploy.deployment import load_model_checked

    writer = get_writer(fmt)
    path = Path(path)
    out = Path(out) if out else path.with_suffix("." + fmt)
    if out.resolve() == path.resolve():
        raise ExportFormatError(f"output {out} would overwrite the checkpoint; pass -o")
    graph = fold(load_model_checked(path))
    if timesteps is not None:
        graph.check_timesteps(timesteps)
    with atomic_output(out) as tmp:
        writer(graph, tmp, timesteps=timesteps, **options)
        if validate is not None:  # inside: a failure removes the temporary file
            validate_fold(path, **validate)
    return out


def validate_fold(path, dataset: str | None = None, limit: int | None = 1000,
                  fidelity_ts: str | None = None, max_accuracy_drop: float | None = None,
                  min_spike_agreement: float | None = None, batch_size: int = 256) -> dict:
    """The fold-fidelity check of ``lmh-export --validate``: trained module vs deployed graph on
    the first ``limit`` test samples of the checkpoint's data set, at the trained T and the swept
    Ts. Returns the per-T figures; raises :class:`~lmh_deploy.errors.FoldFidelityError`."""
    from lmh_deploy.checkpoint import load_checkpoint
    from lmh_deploy.deployment import Deployment
    from lmh_deploy.evaluate import load_eval_data
    from lmh_deploy import verify as V

    ds = dataset or load_checkpoint(path).get("train_config", {}).get("dataset") or "digits"
    x, y = load_eval_data(ds, limit)
    with Deployment(path) as dep:
        ts = V.fidelity_timesteps(dep.trained_timesteps, fidelity_ts)
        fid = V.fold_fidelity(dep, x, y, ts, batch_size)
    bad = V.check_fidelity(fid, V.MAX_ACCURACY_DROP if max_accuracy_drop is None else max_accuracy_drop,
                           V.MIN_SPIKE_AGREEMENT if min_spike_agreement is None else min_spike_agreement)
    if bad:
        raise V.fidelity_error(bad)
    return fid


def build_parser() -> OneLineParser:
    p = OneLineParser(prog="lmh-export",
                      description="Export a trained lmh-deploy checkpoint (model.pt) exactly.")
    p.add_argument("checkpoint", help="the checkpoint (model.pt) to export")
    p.add_argument("--format", "-f", required=True, metavar="FMT",
                   help=f"export format: {', '.join(FORMATS)}")
    p.add_argument("-o", "--output", metavar="PATH",
                   help="output file (default: beside the input, suffix .<format>)")
    p.add_argument("--timesteps", "-T", type=positive_int, metavar="T",
                   help="unrolled time steps (default: the trained T)")
    p.add_argument("--frames", action="store_true",
                   help="input is a frame sequence [T, B, C, H, W] (default: a static image [B, C, H, W])")
    p.add_argument("--with-spikes", action="store_true",
                   help="add every layer's spike counts as outputs (for verification)")
    p.add_argument("--form", choices=("temporal", "unrolled"),
                   help="NIR only: temporal (streaming; time-invariant models) or unrolled "
                        "(stateless, every model); default: temporal when possible")
    p.add_argument("--validate", action="store_true",
                   help="check the fold fidelity (trained module vs deployed graph on the test set "
                        "of --dataset: accuracy and per-layer spike agreement at the trained T and "
                        "the swept Ts) before keeping the file; a failure writes nothing")
    p.add_argument("--dataset", help="--validate: data set (default: the checkpoint's)")
    p.add_argument("--limit", type=positive_int, default=1000, metavar="N",
                   help="--validate: first N test samples (default 1000)")
    from lmh_deploy.cli.verify import add_fidelity_options

    add_fidelity_options(p)
    p.add_argument("--lossy-lif", action="store_true",
                   help="NIR only: write LIF layers as plain nir.LIF for third-party importers "
                        "(LOSSY: hard reset to 0 instead of subtracting theta, v(0)=0)")
    return p


def main(argv=None) -> int:
    return run_cli(build_parser(), argv, _main)


def _main(args) -> int:
    options = {}
    if args.frames:
        options["frames"] = True
    if args.with_spikes:
        options["with_spikes"] = True
    if (args.form or args.lossy_lif) and args.format != "nir":
        raise ExportFormatError("--form and --lossy-lif apply to --format nir")
    if args.form:
        options["form"] = args.form
    if args.lossy_lif:
        options["lossy_lif"] = True
    validate = None
    if args.validate:
        validate = {"dataset": args.dataset, "limit": args.limit,
                    "fidelity_ts": args.fidelity_timesteps,
                    "max_accuracy_drop": args.max_accuracy_drop,
                    "min_spike_agreement": args.min_spike_agreement}
    out = export_checkpoint(args.checkpoint, args.format, args.output, args.timesteps,
                            validate=validate, **options)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
