"""``lmh-import --from stbp-lmh|lmht-snn CKPT --arch NAME [options] -o model.pt``.

Reads a checkpoint saved by the papers' original training code, maps it onto the matching
architecture here (``ref-*`` archs of :mod:`lmh_deploy.models`) and writes our self-describing
checkpoint (atomically), ready for ``lmh-export`` / ``lmh-run`` / ``lmh-verify``.
"""
from __future__ import annotations

import sys

from lmh_deploy.cli.common import OneLineParser, positive_int, run_cli
from lmh_deploy.guards import check_outputs
from lmh_deploy.importers import SOURCES


def build_parser() -> OneLineParser:
    p = OneLineParser(prog="lmh-import", description="Import a checkpoint trained with the "
                      "original LM-H (hzc1208/STBP_LMH) or LM-HT (hzc1208/LMHT_SNN) code.")
    p.add_argument("checkpoint", metavar="CKPT", help="their saved .pth file")
    p.add_argument("--from", dest="source", required=True, choices=SOURCES,
                   help="which code saved it")
    p.add_argument("--arch", required=True, metavar="NAME",
                   help="their --net_arch (stbp-lmh: resnet18/19/20/34, vgg11/13/16/19; "
                        "lmht-snn: resnet18/19/34, vgg13, cifarnet (direct), resnet20, vgg13, "
                        "vgg16 (hybrid))")
    p.add_argument("-o", "--out", required=True, metavar="PATH", help="our checkpoint (model.pt)")
    p.add_argument("--timesteps", "-T", type=positive_int, metavar="T",
                   help="their --time_step (stbp-lmh: default 4; lmht-snn: read from the T-GIM)")
    p.add_argument("--levels", "-L", type=positive_int, metavar="L",
                   help="lmht-snn: their --thre_level (required for hybrid checkpoints)")
    p.add_argument("--mode", default="auto", choices=("auto", "direct", "hybrid"),
                   help="lmht-snn: main.py (direct) or hybrid_train.py (hybrid); default: from "
                        "the key layout")
    p.add_argument("--input-shape", default="3,32,32", metavar="C,H,W",
                   help="input size (default 3,32,32); inputs are what their data pipeline "
                        "produced (normalized images)")
    p.add_argument("--input-quantum", type=float, metavar="Q",
                   help="grid of the deployed inputs (a power of two; the fold's default 2^-8)")
    p.add_argument("--input-bound", type=float, metavar="B",
                   help="largest |input| of the deployed inputs (the fold's default 8)")
    p.add_argument("--flat-width", type=float, metavar="D",
                   help="stbp-lmh --pruning checkpoints: their --flat_width (default 0.2)")
    p.add_argument("--first-gain", type=float, metavar="G",
                   help="lmht-snn: override the first neuron layer's input gain (hybrid "
                        "resnet20/vgg16: L, else 1)")
    return p


def main(argv=None) -> int:
    return run_cli(build_parser(), argv, _main)


def _main(args) -> int:
    check_outputs([("-o", args.out)], [("CKPT", args.checkpoint)])
    from lmh_deploy.checkpoint import save_checkpoint
    from lmh_deploy.errors import LmhError
    from lmh_deploy.importers import import_checkpoint

    opts = {"timesteps": args.timesteps, "input_shape": args.input_shape}
    if args.source == "stbp-lmh":
        for flag, val in (("--levels", args.levels), ("--first-gain", args.first_gain)):
            if val is not None:
                raise LmhError(f"{flag} is for --from lmht-snn; LM-H has no levels or input gain")
        if args.mode != "auto":
            raise LmhError("--mode is for --from lmht-snn")
        opts["flat_width"] = args.flat_width
    else:
        if args.flat_width is not None:
            raise LmhError("--flat-width is for --from stbp-lmh pruning checkpoints")
        opts.update(levels=args.levels, mode=args.mode, first_gain=args.first_gain)
    grid = None
    if (args.input_quantum is None) != (args.input_bound is None):
        raise LmhError("give --input-quantum and --input-bound together")
    if args.input_quantum is not None:
        import math

        q, b = float(args.input_quantum), float(args.input_bound)
        if not (q > 0 and math.log2(q).is_integer() and b > 0):
            raise LmhError(f"--input-quantum must be a power of two and --input-bound positive, "
                           f"got {q:g}, {b:g}")
        grid = {"input_quantum": q, "input_bound": b}
    res = import_checkpoint(args.source, args.checkpoint, args.arch, **opts)
    if grid:
        res.model.config.update(grid)
    save_checkpoint(args.out, res.model, train_config={**res.info, "neuron_map": res.neuron_map})
    cfg = res.model.config
    n = cfg["neuron"]
    what = n["kind"] + (f" L={n['levels']}" if "levels" in n else "")
    extra = res.info.get("layout") or res.info.get("mode")
    print(f"{args.out}: {cfg['arch']} (width x{cfg['width']:g}) from {args.source} {args.arch} "
          f"[{extra}], {what}, T={cfg['timesteps']}, {cfg['num_classes']} classes, "
          f"{res.info['neuron_layers']} neuron layers, input {tuple(cfg['input_shape'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
