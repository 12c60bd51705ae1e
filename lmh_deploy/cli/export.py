"""``lmh-export --format onnx|nir model.pt [-o PATH] [--timesteps T] [--validate/--no-validate]``.

Folds the checkpoint once (:func:`lmh_deploy.graph.fold.fold`) and hands the DeployGraph to the
writer of the chosen format. The output is written atomically (temporary file in the destination
directory, then ``os.replace``) and, by default, validated before it is renamed into place: the
written file is run on a sample batch (the first test samples of the checkpoint's data set, else
seeded inputs on the input grid) against the reference interpreter
(:func:`lmh_deploy.verify.validate_export`); on a mismatch or any other error no output file is
left behind. The file records the data set it was trained on (the default of lmh-run & co.).

Formats live in :data:`lmh_deploy.runtimes.FORMATS` (default output: the input with suffix
``.<format>``). To add a format, add one line there.
"""
from __future__ import annotations

import sys
from pathlib import Path

from lmh_deploy.cli.common import positive_int, run_cli
from lmh_deploy.cli.options import BoolFlag, add_data_args, add_progress, data_options, make_parser

from lmh_deploy.errors import ExportFormatError
from lmh_deploy.exporting import export_checkpoint, export_graph  # noqa: F401 (API of this command)
from lmh_deploy.runtimes import FORMATS, get_writer


def build_parser():
    p = make_parser("lmh-export", "Export a trained lmh-deploy checkpoint (model.pt) exactly, "
                    "then check the written file against the reference interpreter.")
    p.add_argument("checkpoint", help="the checkpoint (model.pt) to export")
    p.add_argument("--format", "-f", required=True, metavar="FMT",
                   help=f"export format: {', '.join(FORMATS)}")
    p.add_argument("-o", "--output", metavar="PATH",
                   help="output file (default: beside the input, suffix .<format>)")
    p.add_argument("--timesteps", "-T", type=positive_int, metavar="T",
                   help="unrolled time steps (default: the trained T)")
    p.add_argument("--validate", action=BoolFlag, default=True,
                   help="run the written file on a sample batch against the reference and print "
                        "spike agreement and max |Δ logit|; a mismatch is an error, no file")
    p.add_argument("--frames", action=BoolFlag, default=False,
                   help="input is a frame sequence [T, B, C, H, W] (default: a static image [B, C, H, W])")
    p.add_argument("--with-spikes", action=BoolFlag, default=False,
                   help="add every layer's spike counts as outputs (for verification)")
    p.add_argument("--form", choices=("temporal", "unrolled"),
                   help="NIR only: temporal (streaming; time-invariant models) or unrolled "
                        "(stateless, every model); default: temporal when possible")
    p.add_argument("--limit", type=positive_int, default=1000, metavar="N",
                   help="validation: the fold fidelity (trained module vs deployed graph: accuracy "
                        "and per-layer spike agreement at the trained T and the swept Ts) is "
                        "checked on the first N test samples of --dataset")
    p.add_argument("--batch-size", type=positive_int, default=64, metavar="B",
                   help="validation: samples per batch of the fold-fidelity check (its memory; "
                        "default 64)")
    from lmh_deploy.cli.verify import add_fidelity_options

    add_fidelity_options(p)
    p.add_argument("--lossy-lif", action=BoolFlag, default=False,
                   help="NIR only: write LIF layers as plain nir.LIF for third-party importers "
                        "(LOSSY: hard reset to 0 instead of subtracting theta, v(0)=0; not validated)")
    p.add_argument("--target", metavar="TOOL",
                   help="NIR only: the LOSSY form TOOL's importer runs: snntorch, spikingjelly, "
                        "norse, sinabs (prints what is lost)")
    p.add_argument("--dt", type=float, metavar="SECONDS",
                   help="with --target: seconds per step (default: the tool's own)")
    add_progress(p)
    add_data_args(p)
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
    if (args.target or args.dt is not None) and args.format != "nir":
        raise ExportFormatError("--target and --dt apply to --format nir")
    if args.dt is not None and not args.target:
        raise ExportFormatError("--dt applies to --target forms (ours run one step per step)")
    if args.target:
        from lmh_deploy.nir.targets import TARGETS

        if args.target not in TARGETS:
            raise ExportFormatError(f"unknown NIR target {args.target!r}; choose one of "
                                    f"{', '.join(TARGETS)}")
        options.update(target=args.target, dt=args.dt)
    report: dict = {}
    fidelity = {"dataset": args.dataset, "limit": args.limit, "data_dir": args.data_dir,
                "data_options": data_options(args), "fidelity_ts": args.fidelity_timesteps,
                "max_accuracy_drop": args.max_accuracy_drop,
                "min_spike_agreement": args.min_spike_agreement, "progress": args.progress,
                "batch_size": args.batch_size}
    out = export_checkpoint(args.checkpoint, args.format, args.output, args.timesteps,
                            args.validate, report, args.dataset, args.data_dir, data_options(args),
                            args.progress, fidelity=fidelity, **options)
    if "validation" in report:
        from lmh_deploy.verify import format_validation

        print(f"validated: {format_validation(report['validation'])}")
        for t, g in report["validation"].get("fold_fidelity", {}).items():
            worst = min((v for v in g["spike_agreement"].values() if v is not None), default=1.0)
            print(f"fold fidelity at T={t}: accuracy trained {g['accuracy_trained']:.4f} / "
                  f"deployed {g['accuracy_deployed']:.4f}; worst layer {worst:.6f} identical spikes")
        if "fold_fidelity_skipped" in report["validation"]:
            print(f"note: {report['validation']['fold_fidelity_skipped']}", file=sys.stderr)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB)")
    if args.target:
        from lmh_deploy.nir.targets import load_target
        import h5py

        with h5py.File(out, "r") as f:
            lossy = f["node/metadata/lossy"][()]
        lossy = lossy.decode() if isinstance(lossy, bytes) else str(lossy)
        tf = load_target(out)
        print(f"{args.target} form at dt = {tf.dt:g} s; LOSSY (not the trained model):")
        for item in lossy.split("; "):
            print(f"  - {item}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
