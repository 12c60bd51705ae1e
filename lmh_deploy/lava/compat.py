"""Python 3.11 compatibility for lava-nc 0.10, without editing site-packages.

lava-nc 0.10 declares Python < 3.11 and breaks there in exactly one place:
``lava/magma/compiler/var_model.py`` gives dataclass fields default *instances* of the
(unhashable) dataclass ``ByteEncoder`` (``x: ByteEncoder = ByteEncoder()``). Python 3.11's
``dataclasses`` rejects any unhashable default ("mutable default ... use default_factory");
3.10 only rejected list/dict/set, so under 3.10 those fields shared one default instance.

The shim (:func:`import_lava`) imports that one module with ``dataclasses.dataclass`` replaced,
*for the duration of that import only*, by a wrapper that rewrites such defaults of classes
defined in ``lava.magma.compiler.var_model`` into ``field(default_factory=<copy of default>)``
(a fresh copy per instance -- never worse than 3.10's shared instance). Classes of any other
module pass through untouched; afterwards ``dataclasses.dataclass`` is the original again and
no module keeps a reference to the wrapper, so the mutable-default check still rejects mutable
defaults everywhere else.

A second, equally narrow fix: ``lava/magma/runtime/message_infrastructure/multiprocessing.py``
calls ``multiprocessing.set_start_method('fork')`` without ``force`` at import, which raises
"context has already been set" whenever anything in the process has already fixed the default
context -- even to ``fork`` itself (a ``multiprocessing.RLock()``, as tqdm creates, does that).
While that one module is imported, a request for the method that is already in force is a no-op;
any other request behaves as before. If the process already fixed a *different* method
(``spawn``), Lava cannot run in it and :class:`LavaUnavailableError` says to use a fresh process.
We never set the start method ourselves.

Call :func:`import_lava` before any ``lava`` import.
"""
from __future__ import annotations

import copy
import dataclasses
import importlib
import sys
import threading

TARGET_MODULE = "lava.magma.compiler.var_model"
MP_MODULE = "lava.magma.runtime.message_infrastructure.multiprocessing"
_LOCK = threading.Lock()


from lmh_deploy.errors import LavaUnavailableError  # noqa: E402,F401 (raised here)


def _needs_factory(value) -> bool:
    """The 3.11 test for a forbidden default: an unhashable *dataclass instance*."""
    return (dataclasses.is_dataclass(value) and not isinstance(value, type)
            and type(value).__hash__ is None)


def _default_factory(value):
    return lambda: copy.deepcopy(value)


def _make_wrapper(original):
    """``dataclass`` wrapper that fixes unhashable dataclass defaults of TARGET_MODULE classes."""

    def fix(cls):
        if getattr(cls, "__module__", None) == TARGET_MODULE:
            for name in list(cls.__dict__.get("__annotations__", {})):
                value = cls.__dict__.get(name, dataclasses.MISSING)
                if _needs_factory(value):
                    setattr(cls, name, dataclasses.field(default_factory=_default_factory(value)))
        return cls

    def dataclass(cls=None, /, **kwargs):
        if cls is None:
            return lambda c: original(fix(c), **kwargs)
        return original(fix(cls), **kwargs)

    dataclass.__wrapped__ = original
    dataclass._lmh_lava_shim = True
    return dataclass


def _load_target() -> None:
    """Import TARGET_MODULE with the wrapper installed, then restore everything."""
    original = dataclasses.dataclass
    wrapper = _make_wrapper(original)
    before = set(sys.modules)
    dataclasses.dataclass = wrapper
    try:
        importlib.import_module(TARGET_MODULE)
    finally:
        dataclasses.dataclass = original
        # modules imported meanwhile did `from dataclasses import dataclass`: rebind them
        for name in set(sys.modules) - before:
            mod = sys.modules.get(name)
            if mod is not None and getattr(mod, "dataclass", None) is wrapper:
                mod.dataclass = original


def _load_mp_module() -> None:
    """Import MP_MODULE so that its ``set_start_method('fork')`` tolerates 'fork' already set."""
    import multiprocessing as mp

    current = mp.get_start_method(allow_none=True)
    if current is None:
        importlib.import_module(MP_MODULE)
        return
    if current != "fork":
        raise LavaUnavailableError(
            f"this process already uses the multiprocessing start method {current!r}; Lava needs "
            f"'fork': run Lava in a fresh process (the lava runtimes of lmh-run do)")
    original = mp.set_start_method

    def set_start_method(method, force=False):
        if not force and method == mp.get_start_method(allow_none=True):
            return None
        return original(method, force=force)

    mp.set_start_method = set_start_method
    try:
        importlib.import_module(MP_MODULE)
    finally:
        mp.set_start_method = original


def import_lava():
    """Make ``lava`` importable on Python 3.11 and return the ``lava`` package.

    Idempotent and thread-safe. Raises :class:`LavaUnavailableError` naming the install command
    when lava-nc is missing.
    """
    with _LOCK:
        if TARGET_MODULE not in sys.modules:
            try:
                importlib.import_module("lava")
            except ImportError as e:
                raise LavaUnavailableError(
                    "lava-nc is not installed: run scripts/setup.sh (it installs lava-nc==0.10.0 "
                    "with --no-deps --ignore-requires-python)") from e
            try:
                _load_target()
            except ImportError as e:
                raise LavaUnavailableError(
                    f"lava-nc imports failed ({e}); run scripts/setup.sh to install its "
                    "dependencies") from e
        if MP_MODULE not in sys.modules:
            try:
                _load_mp_module()
            except LavaUnavailableError:
                raise
            except ImportError as e:
                raise LavaUnavailableError(
                    f"lava-nc imports failed ({e}); run scripts/setup.sh to install its "
                    "dependencies") from e
        return sys.modules["lava"]
