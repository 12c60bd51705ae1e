"""Atomic file output: write to a temporary file in the destination's directory, fsync it, then
``os.replace`` it onto the destination. A failed or interrupted write (an exception, ENOSPC,
``kill -9``) leaves no partial file and the previous content intact. Standard library only (the
isolated Lava process imports it too).

* Modes: a new file gets ``0666 & ~umask`` (as ``open()`` would give; ``mkstemp``'s 0600 is not
  kept), a replaced file keeps its mode.
* Temporary names are ``.<name>.<pid>.<random>.tmp`` (hidden, beside the destination). A writer
  killed before its rename leaves one behind; the next write to the same destination removes
  those whose process is gone (a live concurrent writer's file is left alone).
* :func:`atomic_dir` writes a set of files all-or-nothing (a temporary folder, then renames).
"""
from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import tempfile
import threading
from pathlib import Path

TMP_SUFFIX = ".tmp"

#: set by the command line's Ctrl-C / SIGTERM handler (:mod:`lmh_deploy.cli.common`): once set,
#: no atomic output is committed -- even where the handler's KeyboardInterrupt was swallowed (a
#: signal that lands in a finalizer or weakref callback: Python ignores exceptions raised there)
STOP_REQUESTED = threading.Event()


def current_umask() -> int:
    """The process umask (read from /proc where possible; otherwise set-and-restore)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def remove_stale_temps(path: str | os.PathLike) -> list:
    """Remove ``path``'s leftover temporary files (``.<name>.<pid>.*.tmp`` in its directory)
    whose writing process no longer exists; returns the removed paths."""
    path = Path(path)
    pat = re.compile(r"^\.+" + re.escape(path.name) + r"\.(\d+)\.[^/]*\.tmp$")
    removed = []
    try:
        names = os.listdir(path.parent)
    except OSError:
        return removed
    for name in names:
        m = pat.match(name)
        if m and not _pid_alive(int(m.group(1))):
            stale = path.parent / name
            with contextlib.suppress(OSError):
                if stale.is_dir() and not stale.is_symlink():
                    shutil.rmtree(stale)
                else:
                    stale.unlink()
                removed.append(stale)
    return removed


def _mkdir(directory: Path) -> None:
    """``mkdir -p``; a file where a folder should be is ENOTDIR naming that file (not EEXIST)."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        p = directory
        while p != p.parent and not p.is_file():
            p = p.parent
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(p)) from None


def _target_mode(path: Path) -> int:
    try:
        return os.stat(path).st_mode & 0o7777
    except OSError:
        return 0o666 & ~current_umask()


def _fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike):
    """Yield a temporary path in ``path``'s directory; on success fsync it, give it its mode
    (``path``'s if it exists, else ``0666 & ~umask``) and ``os.replace`` it onto ``path``; on any
    exception delete it (``path`` keeps its previous content). Raises ``OSError`` (the CLIs turn it
    into one line) when the directory cannot be written."""
    path = Path(path)
    try:
        _mkdir(path.parent)
        remove_stale_temps(path)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=TMP_SUFFIX,
                                   dir=path.parent)
        os.close(fd)
    except OSError as e:
        raise _about(e, path) from None
    try:
        yield Path(tmp)
        if STOP_REQUESTED.is_set():  # stopped meanwhile: do not commit (the except deletes tmp)
            raise KeyboardInterrupt
        _fsync_file(Path(tmp))
        os.chmod(tmp, _target_mode(path))
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(e, OSError) and e.filename is not None and str(tmp) in (
                str(e.filename), str(e.filename2)):
            raise _about(e, path) from None
        raise


def _about(err: OSError, path) -> OSError:
    """``err`` re-aimed at the destination ``path`` (not our temporary name) for the message."""
    if err.errno is None:
        return err
    return type(err)(err.errno, err.strerror, str(path))


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically (UTF-8)."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_output(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)


@contextlib.contextmanager
def atomic_dir(out_dir: str | os.PathLike):
    """Write several files into ``out_dir`` all-or-nothing.

    Yields a temporary folder (``.<name>.<pid>.<random>.tmp`` beside ``out_dir``); write every
    file there. On success: if ``out_dir`` does not exist the folder is renamed onto it (one
    atomic rename); otherwise each file is fsynced and renamed into ``out_dir`` (renames need no
    space, so they do not fail on a full disk). On any exception the folder is removed and
    ``out_dir`` is untouched."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(20, "Not a directory", str(out))
    _mkdir(out.parent)
    remove_stale_temps(out)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.{os.getpid()}.", suffix=TMP_SUFFIX,
                                dir=out.parent))
    try:
        yield tmp
        files = sorted(p for p in tmp.iterdir() if p.is_file())
        for p in files:
            _fsync_file(p)
        if not out.exists():
            os.chmod(tmp, 0o777 & ~current_umask())
            for p in files:
                os.chmod(p, 0o666 & ~current_umask())
            try:
                os.rename(tmp, out)
            except OSError as e:  # a concurrent writer made out_dir meanwhile: file by file
                if e.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                    raise
            else:
                _fsync_dir(out.parent)
                return
        for p in files:
            os.chmod(p, _target_mode(out / p.name))
        for p in files:
            os.replace(p, out / p.name)
        _fsync_dir(out)
        os.rmdir(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


__all__ = ["atomic_dir", "atomic_output", "atomic_write_bytes", "atomic_write_text",
           "current_umask", "remove_stale_temps"]
