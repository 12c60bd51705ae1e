"""The training command (``python training/fit.py``, ``lmh-train``): ``build_parser()`` and ``main(argv)``.

Precedence: ``config.DEFAULTS`` < ``--config FILE`` < flags given on the command line. Flags are
declared with ``default=SUPPRESS`` so that only the flags actually given override the file.
To add an option: add its key to ``config.DEFAULTS`` and one ``add_argument`` here whose ``dest``
is that key.
"""
from __future__ import annotations

import argparse
import sys

from lmh_deploy.cli.common import OneLineParser
from lmh_deploy.data import DATASET_NAMES
from lmh_deploy.errors import ConfigError, LmhError
from lmh_deploy.models import ARCHS
from lmh_deploy.training.config import DEFAULTS, LOSSES, NEURONS, OPTIMIZERS, load_config_file

RESUME_FROM_OUT = "<out>/model.pt"


def _bool(text: str) -> bool:
    t = text.lower()
    if t in ("1", "true", "yes", "on"):
        return True
    if t in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


def build_parser(prog: str = "fit.py") -> argparse.ArgumentParser:
    """The parser of the fit command (every flag's dest is a ``config.DEFAULTS`` key)."""
    d = DEFAULTS
    p = OneLineParser(
        prog=prog, argument_default=argparse.SUPPRESS,
        description="Train an LM-H / LM-HT / LIF spiking network and write <out>/model.pt and "
                    "<out>/metrics.json. With no arguments: LM-H MLP on scikit-learn's digits, T=4, CPU.")
    p.add_argument("--config", metavar="FILE", help="JSON (.json) or TOML file of options; flags override it")
    g = p.add_argument_group("model")
    g.add_argument("--neuron", choices=NEURONS, help=f"neuron model (default {d['neuron']})")
    g.add_argument("--levels", type=int, metavar="L", help="LM-HT spike levels L >= 1 (default 2; lmht only)")
    g.add_argument("--per-channel", dest="per_channel", type=_bool, metavar="BOOL",
                   help="per-channel neuron parameters (default false)")
    g.add_argument("--lif-decay", dest="lif_decay", type=float, metavar="LAMBDA",
                   help=f"LIF decay (default {d['lif_decay']})")
    g.add_argument("--arch", choices=tuple(ARCHS), help=f"architecture (default {d['arch']})")
    g.add_argument("--timesteps", "-T", type=int, metavar="T", help=f"time steps (default {d['timesteps']})")
    g = p.add_argument_group("data")
    g.add_argument("--dataset", choices=DATASET_NAMES, help=f"data set (default {d['dataset']})")
    g.add_argument("--data-dir", dest="data_dir", metavar="DIR", help="root of downloadable data sets")
    g.add_argument("--num-workers", dest="num_workers", type=int, metavar="N",
                   help=f"data loader workers (default {d['num_workers']})")
    g = p.add_argument_group("optimization")
    g.add_argument("--epochs", type=int, help=f"epochs (default {d['epochs']})")
    g.add_argument("--batch-size", dest="batch_size", type=int, help=f"batch size (default {d['batch_size']})")
    g.add_argument("--eval-batch-size", dest="eval_batch_size", type=int,
                   help=f"test batch size (default {d['eval_batch_size']})")
    g.add_argument("--lr", type=float, help=f"initial learning rate (default {d['lr']})")
    g.add_argument("--optimizer", choices=OPTIMIZERS,
                   help="sgd: momentum + cosine schedule (default); adamw: AdamW + cosine")
    g.add_argument("--momentum", type=float, help=f"SGD momentum (default {d['momentum']})")
    g.add_argument("--weight-decay", dest="weight_decay", type=float,
                   help=f"weight decay (default {d['weight_decay']})")
    g.add_argument("--loss", choices=LOSSES, help="ce: CE of the mean logits (default); tet: mean over t of CE")
    g.add_argument("--bn", choices=("tdbn", "per_step"),
                   help="tdBN: BN over T*B (default; foldable for export); per_step: one BN per step")
    g.add_argument("--autoaugment", type=_bool, metavar="BOOL", help="AutoAugment (default true)")
    g.add_argument("--cutout", type=int, metavar="PX", help="Cutout side (default: per data set; 0 off)")
    g = p.add_argument_group("paper-scale training")
    g.add_argument("--slice", type=int, metavar="K",
                   help="time-slicing online training: K steps per slice, one optimizer step each")
    g.add_argument("--sparsity-width", dest="sparsity_width", type=float, metavar="D",
                   help="STDS sparse training to target width D (paper: 0.05)")
    g.add_argument("--hybrid", nargs="?", const=True, type=_bool, metavar="BOOL",
                   help="hybrid training: QCFS ANN (stage 1) -> convert -> fine-tune")
    g.add_argument("--ann-checkpoint", dest="ann_checkpoint", metavar="CKPT",
                   help="hybrid: start from this trained QCFS ANN (implies --hybrid)")
    g.add_argument("--tq", type=int, metavar="TQ", help="hybrid: QCFS quantization steps (default 8)")
    g.add_argument("--ann-epochs", dest="ann_epochs", type=int, help="hybrid: ANN epochs (default 30)")
    g.add_argument("--ann-lr", dest="ann_lr", type=float, help="hybrid: ANN learning rate (default 0.1)")
    g.add_argument("--amp", nargs="?", const=True, type=_bool, metavar="BOOL", help="bf16 autocast on CUDA")
    g.add_argument("--channels-last", dest="channels_last", type=_bool, metavar="BOOL",
                   help="channels-last convolutions on CUDA (default true)")
    g.add_argument("--compact-spikes", dest="compact_spikes", type=_bool, metavar="BOOL",
                   help="autograd keeps uint8 spike counts instead of the layer outputs theta*s "
                        "(bit-identical results, less memory; default true)")
    g.add_argument("--sync-bn", dest="sync_bn", nargs="?", const=True, type=_bool, metavar="BOOL",
                   help="SyncBatchNorm under torchrun (CUDA)")
    g.add_argument("--keep-best", dest="keep_best", type=_bool, metavar="BOOL",
                   help="also keep <out>/best.pt, the best test accuracy (default false; paper configs true)")
    g = p.add_argument_group("run")
    g.add_argument("--device", help=f"cpu, cuda, cuda:N or mps (default {d['device']})")
    g.add_argument("--threads", type=int, metavar="N",
                   help="torch CPU threads during training (default 1: fastest for the digits models; "
                        "raise it for large models on the CPU)")
    g.add_argument("--seed", type=int, help=f"random seed (default {d['seed']})")
    g.add_argument("--out", metavar="DIR", help=f"output directory (default {d['out']})")
    g.add_argument("--resume", nargs="?", const=RESUME_FROM_OUT, metavar="CKPT",
                   help="continue from a checkpoint (default when given without a path: <out>/model.pt)")
    g.add_argument("--progress", type=_bool, metavar="BOOL",
                   help="show the per-epoch progress bar (default: only on a terminal)")
    return p


def config_from_args(argv=None, parser: argparse.ArgumentParser | None = None) -> dict:
    """DEFAULTS-free option dict: ``--config`` file values updated with the flags given."""
    parser = parser or build_parser()
    given = vars(parser.parse_args(argv))
    cfg = {}
    path = given.pop("config", None)
    if path is not None:
        try:
            cfg.update(load_config_file(path))
        except ConfigError as e:
            parser.error(str(e))
    cfg.update(given)
    if cfg.get("resume") == RESUME_FROM_OUT:
        from pathlib import Path

        cfg["resume"] = str(Path(cfg.get("out", DEFAULTS["out"])) / "model.pt")
    return cfg


def main(argv=None) -> int:
    """Parse, train, print where the results went; bad options exit 2 with a one-line error."""
    from lmh_deploy.training.config import resolve_config
    from lmh_deploy.training.loop import train

    parser = build_parser()
    cfg = config_from_args(argv, parser)
    try:
        cfg = resolve_config(cfg)
    except ConfigError as e:
        parser.error(str(e))
    try:
        metrics = train(cfg)
    except LmhError as e:  # every user error (config, data set, checkpoint, hybrid)
        parser.error(str(e))
    except KeyboardInterrupt:
        print(f"{parser.prog}: interrupted; continue with --resume --out {cfg['out']}", file=sys.stderr)
        return 130
    per_t = " ".join(f"{a:.4f}" for a in metrics["test_accuracy_per_t"])
    print(f"test accuracy {metrics['test_accuracy']:.4f} (per step: {per_t}); "
          f"wall time {metrics['wall_time_s']:.1f}s; wrote {cfg['out']}/model.pt and {cfg['out']}/metrics.json")
    return 0
