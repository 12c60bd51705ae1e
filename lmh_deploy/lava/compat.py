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

Call :func:`import_lava` before any ``lava`` import. It never touches the multiprocessing start
method (importing a Lava process sets ``fork`` itself).
"""
from __future__ import annotations

import copy
import dataclasses
import importlib
import sys
import threading

TARGET_MODULE = "lava.magma.compiler.var_model"
_LOCK = threading.Lock()


class LavaUnavailableError(ImportError):
    """lava-nc is not installed or cannot be imported."""


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
        return sys.modules["lava"]
