"""Options every ``lmh-*`` command shares: ``--version``, help that shows defaults, boolean flags
as ``--flag / --no-flag`` (also ``--flag true|false``), and the data options (``--dataset``,
``--data-dir``, ``--data-option KEY=VALUE``) with the data set a file was trained on as default.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from lmh_deploy.cli.common import OneLineParser
from lmh_deploy.evaluate import FALLBACK_DATASET, resolve_dataset, trained_dataset  # noqa: F401



class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """argparse's defaults formatter, silent where the default is None / False or the help
    already says it."""

    def _get_help_string(self, action):
        h = action.help or ""
        if "default" in h or action.default in (None, False, argparse.SUPPRESS) or \
                isinstance(action, (argparse._HelpAction, argparse._VersionAction)):
            return h
        return super()._get_help_string(action)


def make_parser(prog: str, description: str, **kwargs) -> OneLineParser:
    """A one-line-error parser with defaults in ``--help`` and ``--version``."""
    from lmh_deploy import __version__

    p = OneLineParser(prog=prog, description=description, formatter_class=HelpFormatter, **kwargs)
    p.add_argument("--version", action="version", version=f"%(prog)s (lmh-deploy) {__version__}")
    return p


def parse_bool(text: str) -> bool:
    """argparse type: 1/true/yes/on or 0/false/no/off."""
    t = str(text).lower()
    if t in ("1", "true", "yes", "on"):
        return True
    if t in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


class BoolFlag(argparse.Action):
    """``--flag`` / ``--no-flag`` (as :class:`argparse.BooleanOptionalAction`), and also
    ``--flag true|false`` so that older command lines and scripts keep working."""

    def __init__(self, option_strings, dest, default=None, help=None, **_):
        opts = []
        for o in option_strings:
            opts.append(o)
            if o.startswith("--"):
                opts.append("--no-" + o[2:])
        super().__init__(opts, dest, nargs="?", default=default, help=help, metavar="BOOL")

    def __call__(self, parser, namespace, values, option_string=None):
        if option_string.startswith("--no-"):
            if values is not None:
                parser.error(f"{option_string} takes no value")
            setattr(namespace, self.dest, False)
        else:
            setattr(namespace, self.dest, True if values is None else _bool_or_error(parser, values))

    def format_usage(self):
        return " | ".join(self.option_strings)


def _bool_or_error(parser, values) -> bool:
    try:
        return parse_bool(values)
    except argparse.ArgumentTypeError as e:
        parser.error(str(e))


def add_progress(p: argparse.ArgumentParser) -> None:
    p.add_argument("--progress", action=BoolFlag, default=None,
                   help="progress bar (default: only on a terminal)")


def add_data_args(p: argparse.ArgumentParser) -> None:
    """``--dataset``, ``--data-dir``, ``--data-option KEY=VALUE`` (repeatable: keyword options of
    the data set's loader, e.g. ``frames=10`` for dvscifar10)."""
    from lmh_deploy.data import DATASET_NAMES

    g = p.add_argument_group("data")
    g.add_argument("--dataset", default=None, metavar="NAME",
                   help=f"data set whose test split is evaluated: {', '.join(DATASET_NAMES)} "
                        f"(default: the one the file was trained on, else {FALLBACK_DATASET})")
    g.add_argument("--data-dir", metavar="DIR", default=None,
                   help="root of downloadable data sets (cifar10, imagenet, ...; see the README)")
    g.add_argument("--data-option", metavar="KEY=VALUE", action="append", default=[],
                   help="loader option (repeatable), e.g. frames=10 for dvscifar10")


def data_options(args) -> dict:
    """``--data-option`` pairs as a dict (ints and floats parsed, true/false as bools)."""
    from lmh_deploy.errors import LmhError

    out = {}
    for item in getattr(args, "data_option", None) or []:
        key, sep, val = item.partition("=")
        if not sep or not key:
            raise LmhError(f"--data-option {item!r}: expected KEY=VALUE")
        for conv in (int, float, parse_bool):
            try:
                out[key.replace("-", "_")] = conv(val)
                break
            except (ValueError, argparse.ArgumentTypeError):
                continue
        else:
            out[key.replace("-", "_")] = val
    return out
