"""Typed errors. Each message is one line naming the problem and the fix."""


class LmhError(Exception):
    """Base class of lmh-deploy's user-facing errors (CLIs print ``error: <message>``, exit 2)."""


class CheckpointFileError(LmhError, ValueError):
    """A file is not a readable lmh-deploy checkpoint."""


class UnsupportedModelError(LmhError, ValueError):
    """A model contains a layer or configuration the fold / an exporter cannot represent."""


class TimestepsError(LmhError, ValueError):
    """An impossible number of time steps for this model."""


class ExportFormatError(LmhError, ValueError):
    """Unknown export format, or a form the model cannot be written in."""


class MissingDependencyError(LmhError, ImportError):
    """An optional dependency is not installed; the message names the extra."""


def require(module: str, extra: str):
    """Import an optional heavy dependency or raise MissingDependencyError naming the extra."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise MissingDependencyError(
            f"{module} is not installed; install it with: pip install 'lmh-deploy[{extra}]'") from e
