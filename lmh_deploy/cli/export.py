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

def export_checkpoint(path, fmt: str, out=None, timesteps: int | None = None, **options) -> Path:
    """Fold checkpoint ``path`` and write it in format ``fmt`` to ``out`` (atomically)."""
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
    return out


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
    out = export_checkpoint(args.checkpoint, args.format, args.output, args.timesteps, **options)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
