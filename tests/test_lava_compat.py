"""The Python 3.11 shim for lava-nc 0.10: imports work, and the shim leaves no trace."""
import dataclasses
import subprocess
import sys
import textwrap

import pytest

from lmh_deploy.lava import compat


def test_wrapper_rewrites_only_target_module_defaults():
    @dataclasses.dataclass
    class Inner:
        a: int = 0

    wrapper = compat._make_wrapper(dataclasses.dataclass)

    ns = {"__module__": compat.TARGET_MODULE, "__annotations__": {"x": Inner}, "x": Inner(3)}
    fixed = wrapper(type("Outer", (), ns))
    one, two = fixed(), fixed()
    assert one.x == Inner(3) and one.x is not two.x          # fresh copy per instance

    ns_other = {"__module__": "somewhere.else", "__annotations__": {"x": Inner}, "x": Inner(3)}
    with pytest.raises(ValueError, match="mutable default"):
        wrapper(type("Other", (), ns_other))                  # untouched elsewhere
    with pytest.raises(ValueError, match="mutable default"):  # keyword form too
        wrapper(frozen=False)(type("Other2", (), dict(ns_other)))


def test_import_in_fresh_interpreter_and_no_leak():
    code = textwrap.dedent("""
        import dataclasses, sys
        original = dataclasses.dataclass
        from lmh_deploy.lava.compat import import_lava, TARGET_MODULE
        import_lava(); import_lava()                      # idempotent
        from lava.magma.compiler.var_model import CoreEncoder, ByteEncoder
        from lava.proc.dense.process import Dense          # a process imports cleanly
        from lava.magma.core.run_configs import Loihi2SimCfg
        a, b = CoreEncoder(), CoreEncoder()
        assert a.x == ByteEncoder() and a.x is not b.x
        assert dataclasses.dataclass is original
        leaks = [n for n, m in list(sys.modules.items())
                 if getattr(getattr(m, "dataclass", None), "_lmh_lava_shim", False)]
        assert not leaks, leaks
        try:
            @dataclasses.dataclass
            class Bad:
                x: list = []
        except ValueError as e:
            assert "mutable default" in str(e)
        else:
            raise SystemExit("mutable default accepted after the shim")
        try:
            @dataclasses.dataclass
            class Bad2:
                x: ByteEncoder = ByteEncoder()
        except ValueError:
            pass
        else:
            raise SystemExit("unhashable dataclass default accepted after the shim")
        print("OK")
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip().endswith("OK")


def test_import_lava_returns_package():
    lava = compat.import_lava()
    assert lava.__name__ == "lava"
    assert dataclasses.dataclass.__module__ == "dataclasses"


def test_package_modules_execute_standalone():
    """Lava's ProcessModel search executes every file beside a Process as a top-level module
    outside sys.modules: each must work that way (absolute imports, no dataclasses)."""
    import importlib.util
    import pathlib

    import lmh_deploy.lava.procs as pkg

    files = sorted(p for p in pathlib.Path(pkg.__file__).parent.glob("*.py") if p.name != "__init__.py")
    assert {p.stem for p in files} >= {"lmh", "lmht", "recorder", "model_base"}
    for path in files:
        spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)   # raises on failure


_AFTER_RLOCK = """
import multiprocessing as mp
mp.RLock()                      # fixes the default context to 'fork', as tqdm does
original = mp.set_start_method
from lmh_deploy.lava.compat import import_lava
import_lava()
import lava.proc.dense.process  # would raise 'context has already been set' without the shim
assert mp.set_start_method == original, "the shim leaked"
assert mp.get_start_method() == "fork"
try:
    mp.set_start_method("spawn")
except RuntimeError:
    print("OK")
"""

_AFTER_SPAWN = """
import multiprocessing as mp
mp.set_start_method("spawn")
from lmh_deploy.lava.compat import import_lava, LavaUnavailableError
try:
    import_lava()
except LavaUnavailableError as e:
    print("REFUSED", e)
"""


@pytest.mark.timeout(120, method="signal")
def test_start_method_already_fork_is_tolerated_and_other_methods_refused():
    ok = subprocess.run([sys.executable, "-c", _AFTER_RLOCK], capture_output=True, text=True,
                        timeout=100)
    assert ok.returncode == 0 and ok.stdout.strip() == "OK", ok.stderr[-2000:]
    no = subprocess.run([sys.executable, "-c", _AFTER_SPAWN], capture_output=True, text=True,
                        timeout=100)
    assert no.returncode == 0 and "REFUSED" in no.stdout and "'spawn'" in no.stdout, no.stderr
