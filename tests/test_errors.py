"""Every user-facing error is an :class:`~lmh_deploy.errors.LmhError` (one line, exit status 2).

The test imports every module of the package (lmh_deploy, lmh_deploy.training,
lmh_deploy.export), collects each exception class defined there and checks it derives from
LmhError and lives in :mod:`lmh_deploy.errors`; then each one, raised in a command, is printed as
one line and exits 2.
"""
from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

import lmh_deploy
import lmh_deploy.errors as errors
from lmh_deploy.cli.common import OneLineParser, run_cli

#: modules that need an optional heavy dependency at import time (skipped when it is missing)
OPTIONAL = ("lmh_deploy.lava.procs.", "lmh_deploy.kernels._")


def _all_modules() -> list:
    import lmh_deploy.export
    import lmh_deploy.training

    mods = []
    for pkg in (lmh_deploy, lmh_deploy.training, lmh_deploy.export):
        names = [pkg.__name__] + [m.name for m in pkgutil.walk_packages(pkg.__path__,
                                                                           pkg.__name__ + ".")]
        for name in names:
            if name.endswith("__main__"):
                continue
            try:
                mods.append(importlib.import_module(name))
            except ImportError:
                if not name.startswith(OPTIONAL):
                    raise
    return mods


def _exception_classes() -> dict:
    out = {}
    for mod in _all_modules():
        for _, cls in inspect.getmembers(mod, inspect.isclass):
            if issubclass(cls, BaseException) and cls.__module__.startswith("lmh_deploy"):
                out[f"{cls.__module__}.{cls.__qualname__}"] = cls
    return out


def test_the_walk_sees_the_whole_package():
    names = {m.__name__ for m in _all_modules()}
    for expected in ("lmh_deploy.graph.schema", "lmh_deploy.nir.program", "lmh_deploy.lava.build",
                     "lmh_deploy.cli.train", "lmh_deploy.training.loop", "lmh_deploy.data.base"):
        assert expected in names
    assert len(_exception_classes()) >= 16


def test_every_exception_class_is_an_lmh_error_defined_in_errors():
    classes = _exception_classes()
    not_lmh = sorted(n for n, c in classes.items() if not issubclass(c, errors.LmhError))
    assert not_lmh == []
    elsewhere = sorted(n for n in classes if not n.startswith("lmh_deploy.errors."))
    assert elsewhere == []


@pytest.mark.parametrize("cls", [c for _, c in inspect.getmembers(errors, inspect.isclass)
                                 if issubclass(c, BaseException)], ids=lambda c: c.__name__)
def test_a_command_reports_each_error_in_one_line_with_status_2(capsys, cls):
    def body(args):
        raise cls("bad input named here; do this instead")

    assert run_cli(OneLineParser(prog="lmh-x"), [], body) == 2
    err = capsys.readouterr().err
    assert err == "lmh-x: error: bad input named here; do this instead\n"
