"""Shared pieces of the lmh-* command lines: one-line errors, exit status 2, T parsing."""
from __future__ import annotations

import argparse
import sys

from .errors import LmhError, TimestepsError

#: errors a CLI reports as ``<prog>: error: <message>`` with exit status 2
USER_ERRORS: tuple = (LmhError,)


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line on stderr (no usage block), exit status 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def user_errors() -> tuple:
    """Exception types that mean bad input (reported in one line, exit 2)."""
    from .data import UnknownDatasetError

    return USER_ERRORS + (UnknownDatasetError,)


def run_cli(parser: argparse.ArgumentParser, argv, body) -> int:
    """Parse ``argv`` and return ``body(args)``'s exit status; ``--help`` and bad options return
    argparse's status, and bad input (a :func:`user_errors` exception) prints one line and
    returns 2."""
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, or a bad option (one line already printed): its status
        return int(e.code or 0)
    try:
        return body(args)
    except user_errors() as e:
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


def parse_timesteps(text: str, maximum: int = 4096) -> list[int]:
    """``"1-32"``, ``"1,2,4,8"``, ``"1-8,16,32"`` -> sorted distinct step counts.

    Raises :class:`TimestepsError` for an empty or malformed list, a reversed range or T < 1."""
    text = str(text).strip()
    if not text:
        raise TimestepsError("empty --timesteps; give a range or a list, e.g. 1-32 or 1,2,4,8")
    out = set()
    for part in text.split(","):
        part = part.strip()
        try:
            if "-" in part:
                a, b = part.split("-")
                lo, hi = int(a), int(b)
            else:
                lo = hi = int(part)
        except ValueError:
            raise TimestepsError(f"malformed --timesteps {text!r}: {part!r} is not N or A-B "
                                 f"(e.g. 1-32 or 1,2,4,8)") from None
        if lo > hi:
            raise TimestepsError(f"reversed range {part!r} in --timesteps; write {hi}-{lo}")
        vals = range(lo, hi + 1)
        for v in vals:
            if v < 1 or v > maximum:
                raise TimestepsError(f"time step count {v} in --timesteps {text!r} is out of "
                                     f"range 1..{maximum}")
            out.add(v)
    return sorted(out)
