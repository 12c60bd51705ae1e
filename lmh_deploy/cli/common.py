"""Shared pieces of the lmh-* command lines: one-line errors, exit status 2, T parsing."""
from __future__ import annotations

import argparse
import sys

from lmh_deploy.errors import LmhError

#: errors a CLI reports as ``<prog>: error: <message>`` with exit status 2
USER_ERRORS: tuple = (LmhError,)


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line on stderr (no usage block), exit status 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def run_cli(parser: argparse.ArgumentParser, argv, body) -> int:
    """Parse ``argv`` and return ``body(args)``'s exit status; ``--help`` and bad options return
    argparse's status, and bad input (an :class:`~lmh_deploy.errors.LmhError`) prints one line and
    returns 2."""
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, or a bad option (one line already printed): its status
        return int(e.code or 0)
    try:
        return body(args)
    except USER_ERRORS as e:
        return fail(parser.prog, e)


def fail(prog: str, err: BaseException) -> int:
    msg = " ".join(str(err).split()) or type(err).__name__
    print(f"{prog}: error: {msg}", file=sys.stderr)
    return 2


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return v


def nonneg_float(text: str) -> float:
    """argparse type: a float >= 0."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}") from None
    if not v >= 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}")
    return v


def unit_float(text: str) -> float:
    """argparse type: a fraction in [0, 1]."""
    v = nonneg_float(text)
    if v > 1:
        raise argparse.ArgumentTypeError(f"expected a fraction in 0..1, got {text!r}")
    return v
