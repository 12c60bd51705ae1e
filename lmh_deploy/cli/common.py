"""Shared pieces of the lmh-* command lines: one-line errors, exit status 2, T parsing."""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys

from lmh_deploy.errors import LmhError, os_error_message

#: errors a CLI reports as ``<prog>: error: <message>`` with exit status 2 (plus onnxruntime's
#: exceptions, recognized by module: see :func:`is_user_error`)
USER_ERRORS: tuple = (LmhError, OSError, MemoryError, RecursionError, json.JSONDecodeError,
                      UnicodeDecodeError)

def is_user_error(err: BaseException) -> bool:
    """Whether ``err`` is bad input or a bad environment (one line, exit 2) rather than a bug."""
    return isinstance(err, USER_ERRORS) or type(err).__module__.startswith("onnxruntime")


def error_message(err: BaseException) -> str:
    """The one-line message of a user error: an :class:`LmhError`'s text; for an ``OSError`` the
    path, what happened and the fix; for onnxruntime the first line of its complaint."""
    if isinstance(err, LmhError):
        msg = str(err)
    elif isinstance(err, OSError):
        msg = os_error_message(err)
    elif isinstance(err, MemoryError):
        msg = ("out of memory; lower --batch-size, --limit or --timesteps "
               "(or run on a machine with more memory)")
    elif isinstance(err, RecursionError):
        msg = "the input is nested too deeply to read (malformed or hostile file); check the file"
    elif isinstance(err, (json.JSONDecodeError, UnicodeDecodeError)):
        msg = f"cannot parse the input ({err}); check the file"
    else:  # onnxruntime
        lines = [ln for ln in str(err).splitlines() if ln.strip()]
        msg = (f"onnxruntime refused the model or its input ({lines[0] if lines else type(err).__name__}); "
               "check that the file was written by lmh-export and matches the data set")
    return " ".join(msg.split()) or type(err).__name__


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
    with _interruptible() as stopped:
        try:
            rc = body(args)
        except Exception as e:  # noqa: BLE001 - user errors become one line; bugs propagate
            if not is_user_error(e):
                raise
            return fail(parser.prog, e)
        except KeyboardInterrupt:  # Ctrl-C or SIGTERM (below): outputs were unwound, not kept
            return _stopped(parser.prog, stopped or ["interrupted"])
        if stopped:  # the signal's KeyboardInterrupt was swallowed (it hit a finalizer)
            return _stopped(parser.prog, stopped)
        return rc


def _stopped(prog: str, stopped: list) -> int:
    print(f"{prog}: {stopped[0]}; no partial output kept", file=sys.stderr)
    return 143 if stopped[0] == "terminated" else 130


@contextlib.contextmanager
def _interruptible():
    """While a command runs, Ctrl-C and SIGTERM raise KeyboardInterrupt and set
    :data:`lmh_deploy.atomic.STOP_REQUESTED`, so every open atomic output deletes its temporary
    file and none is committed afterwards; yields a list that receives "interrupted" or
    "terminated". Outside the main thread: no handlers."""
    from lmh_deploy.atomic import STOP_REQUESTED

    stopped: list = []
    owner = os.getpid()
    words = {signal.SIGINT: "interrupted", signal.SIGTERM: "terminated"}

    def on_signal(signum, frame):
        if os.getpid() != owner:  # a forked worker (Lava, data loaders): die as by default
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        stopped.append(words[signum])
        STOP_REQUESTED.set()
        raise KeyboardInterrupt

    def unraisable(info):  # our KeyboardInterrupt raised inside a finalizer: no traceback,
        if stopped and issubclass(info.exc_type, KeyboardInterrupt):  # STOP_REQUESTED rules
            return
        hook(info)

    try:
        previous = {s: signal.signal(s, on_signal) for s in words}
    except ValueError:  # not the main thread (e.g. a command called from a worker thread)
        yield stopped
        return
    hook, sys.unraisablehook = sys.unraisablehook, unraisable
    try:
        yield stopped
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        sys.unraisablehook = hook
        STOP_REQUESTED.clear()


def fail(prog: str, err: BaseException) -> int:
    """Print ``prog: error: <one line>`` on stderr and return 2."""
    print(f"{prog}: error: {error_message(err)}", file=sys.stderr)
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
