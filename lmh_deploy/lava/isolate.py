"""Isolated Lava runs: a worker process in its own session under a hard timeout that never
outlives its caller (``python -m lmh_deploy.lava.isolate IN.npz OUT.npz``).

* The worker gets SIGKILL when its caller dies (``prctl(PR_SET_PDEATHSIG)`` via ctypes, Linux),
  and so does every process Lava forks (set at fork, ``os.register_at_fork``).
* A watchdog forked by the worker before Lava starts (its own process group, so it cannot be
  held up by a hung worker) kills the worker's group and removes the run's folder when the caller
  is gone (a zombie counts as gone) or the hard deadline passed.
* The caller kills the group and removes the folder on every exit path it lives through.
* The run's files and the worker's TMPDIR are a short private ``/tmp/lmh-lava-*`` folder:
  multiprocessing's socket paths break under a long TMPDIR.
"""
from __future__ import annotations

import os
import time

import numpy as np

from lmh_deploy.atomic import atomic_output
from lmh_deploy.errors import LavaRuntimeError, LavaTimeoutError


def _private_dir() -> str:
    """A short private folder for the run's files and the worker's TMPDIR (Unix socket paths
    of multiprocessing's manager must stay under ~100 bytes, so a long TMPDIR cannot be used):
    ``/tmp/lmh-lava-XXXXXXXX`` (mode 0700), or the default temp dir where /tmp is unusable."""
    import tempfile

    try:
        return tempfile.mkdtemp(prefix="lmh-lava-", dir="/tmp")
    except OSError:
        return tempfile.mkdtemp(prefix="lmh-lava-")


def isolated(write_job, timeout_s: float, result_cls):
    """Run ``python -m lmh_deploy.lava.isolate IN OUT`` in its own session under a hard timeout:
    ``write_job(IN)`` writes an ``.npz`` whose ``meta`` JSON names ``entry`` ("module:function",
    called in the worker with IN's path, returning a result with logits/spikes/...), and the result
    comes back as ``result_cls``.

    Nothing outlives the caller: the worker gets SIGKILL when its parent dies (prctl
    PR_SET_PDEATHSIG), so do the Lava processes it forks (set in each child at fork), and a
    watchdog process forked by the worker before Lava starts kills the whole process group and
    removes the run's folder when the caller is gone or the deadline passes (it cannot be held up
    by a hung worker). The caller kills the group and removes the folder on every exit path."""
    import shutil
    import subprocess
    import sys

    d = _private_dir()
    proc = None
    try:
        src, dst = os.path.join(d, "in.npz"), os.path.join(d, "out.npz")
        write_job(src)
        env = dict(os.environ, TMPDIR=d, LMH_LAVA_PARENT=str(os.getpid()), LMH_LAVA_DIR=d,
                   LMH_LAVA_DEADLINE=repr(time.time() + float(timeout_s) + 2.0))
        proc = subprocess.Popen([sys.executable, "-m", "lmh_deploy.lava.isolate", src, dst],
                                start_new_session=True, env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)
        try:
            _, err = proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            _killpg(proc)
            raise LavaTimeoutError(f"the Lava run exceeded {timeout_s:g} s and was killed; "
                                   "use fewer samples or a larger timeout") from None
        _killpg(proc)   # stragglers of the group (the watchdog, orphaned workers)
        if proc.returncode != 0 or not os.path.exists(dst):
            last = (err or "").strip().splitlines()[-1:] or ["no output"]
            raise LavaRuntimeError(f"the isolated Lava run failed (exit {proc.returncode}): "
                                   f"{last[0]}")
        return _load_result(dst, result_cls)
    finally:
        if proc is not None and proc.poll() is None:   # interrupted: leave nothing behind
            _killpg(proc)
        shutil.rmtree(d, ignore_errors=True)


def _killpg(proc) -> None:
    import signal

    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    if proc.poll() is None:
        proc.wait()


def _load_result(dst, result_cls):
    import json

    with np.load(dst, allow_pickle=False) as z:
        meta = json.loads(str(z["meta"]))
        spikes = {k: z[f"spikes.{k}"] for k in meta["spike_names"]}
        return result_cls(logits=z["logits"], spikes=spikes, offsets=meta["offsets"],
                       steps=meta["steps"], build_s=meta["build_s"], run_s=meta["run_s"],
                       fixed_point=meta["fixed_point"], input_quantum=meta["input_quantum"])


# ----------------------------------------------------------------------------------------------
# the worker side
# ----------------------------------------------------------------------------------------------

_PR_SET_PDEATHSIG = 1


def _set_pdeathsig(sig) -> None:
    """Linux: deliver ``sig`` to this process when its parent (thread) dies."""
    import ctypes
    import sys

    if not sys.platform.startswith("linux"):
        return
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
    except (OSError, AttributeError):
        pass


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie -- dead, not yet reaped -- counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _watchdog(worker: int, parent: int, deadline: float, folder: str) -> None:
    """The watchdog, forked by the worker into its own process group: when the caller is gone
    (or the deadline passed) it kills the worker's group and removes ``folder``; when only the
    worker ended, the living caller cleans up and the watchdog leaves. Never returns."""
    import shutil
    import signal

    group = os.getpgid(worker)
    os.setpgid(0, 0)
    while True:
        time.sleep(0.05)
        if not _alive(parent) or time.time() > deadline:
            try:
                os.killpg(group, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            for _ in range(20):
                shutil.rmtree(folder, ignore_errors=True)
                if not folder or not os.path.exists(folder):
                    break
                time.sleep(0.05)
            os._exit(0)
        if os.getppid() != worker:
            os._exit(0)


def _guard_worker() -> None:
    """Worker start: parent-death signal, a watchdog process, and the parent-death signal in
    every process Lava forks later."""
    import signal

    parent = int(os.environ.get("LMH_LAVA_PARENT", os.getppid()))
    deadline = float(os.environ.get("LMH_LAVA_DEADLINE", "inf"))
    folder = os.environ.get("LMH_LAVA_DIR", "")
    _set_pdeathsig(signal.SIGKILL)
    if os.getppid() != parent:   # the caller died before the prctl
        os._exit(1)
    me = os.getpid()
    if os.fork() == 0:
        _watchdog(me, parent, deadline, folder)
    os.register_at_fork(after_in_child=lambda: _set_pdeathsig(signal.SIGKILL))


def _worker_main(argv) -> int:
    """``python -m lmh_deploy.lava.isolate IN.npz OUT.npz`` (used by :func:`_isolated`): run the
    job and write the result atomically."""
    import json
    import signal

    _guard_worker()

    def on_term(signum, frame):  # kill our group (Lava workers, the watchdog) and leave
        os.killpg(os.getpgrp(), signal.SIGKILL)

    signal.signal(signal.SIGTERM, on_term)
    src, dst = argv
    with np.load(src, allow_pickle=False) as z:
        meta = json.loads(str(z["meta"]))
    import importlib

    mod, fn = meta["entry"].split(":")
    run = getattr(importlib.import_module(mod), fn)(src)   # -> LavaRun
    arrays = {"logits": run.logits, **{f"spikes.{k}": v for k, v in run.spikes.items()}}
    arrays["meta"] = np.array(json.dumps({
        "spike_names": list(run.spikes), "offsets": run.offsets, "steps": run.steps,
        "build_s": run.build_s, "run_s": run.run_s, "fixed_point": run.fixed_point,
        "input_quantum": run.input_quantum}))
    with atomic_output(dst) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **arrays)
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(_worker_main(sys.argv[1:]))
