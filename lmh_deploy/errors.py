"""Typed errors. Each message is one line naming the problem and the fix."""
import errno


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


class FoldFidelityError(LmhError, ValueError):
    """The deployed graph does not reproduce the trained module closely enough (lmh-verify,
    lmh-export --validate): accuracy moved or a layer's spike agreement fell below a threshold."""


class MissingDependencyError(LmhError, ImportError):
    """An optional dependency is not installed; the message names the extra."""


class CheckpointError(CheckpointFileError):
    """A file that cannot be used as an lmh-deploy checkpoint; the message names the file."""


class ConfigError(LmhError, ValueError):
    """An invalid training option; the message names the option and the valid values."""


class HybridError(LmhError, ValueError):
    """A model that cannot be converted (not a QCFS ANN, unknown target kind)."""


class UnknownDatasetError(LmhError, ValueError):
    """A data set name that is not in :data:`lmh_deploy.data.LOADERS`."""


class DatasetError(LmhError, ValueError):
    """A data set file is missing, corrupt or in an unexpected layout. The message is one line
    that names the file and the fix."""


class UnknownRuntimeError(LmhError, ValueError):
    """A runtime name that is not in :data:`lmh_deploy.runtimes.RUNTIMES`."""


class NonFiniteNeuronError(LmhError, ValueError):
    """A neuron parameter or buffer is NaN or infinite (training diverged); nothing can deploy it."""


class NirGraphError(LmhError, ValueError):
    """A NIR file or graph the lmh NIR runtime cannot execute (the message names the node)."""


class LavaUnavailableError(LmhError, ImportError):
    """lava-nc is not installed or cannot be imported."""


class LavaRuntimeError(LmhError, ValueError):
    """A layer list the Lava builder cannot run (the message names the layer and the fix)."""


class LavaTimeoutError(LmhError, TimeoutError):
    """An isolated Lava run exceeded its time limit (its whole process group was killed)."""


class ForeignCheckpointError(CheckpointFileError):
    """A checkpoint of the papers' original code that ``lmh-import`` cannot import (unreadable,
    unknown or missing keys, another architecture)."""


class OutputPathError(LmhError, ValueError):
    """An output path that would overwrite an input, or a folder that cannot be written."""


class NonFiniteError(LmhError, ValueError):
    """A weight, neuron parameter or input holds NaN or Inf (the message names it)."""


class ResourceError(LmhError, MemoryError):
    """A run whose estimated memory exceeds what is available (the message gives the estimate
    and the option that lowers it)."""


class IntegrityError(CheckpointError):
    """A checkpoint whose content hash does not match its tensors and config."""


#: errno -> what to do about it (the one line names the path and this fix)
OS_FIXES = {
    errno.EACCES: "permission denied; check its permissions or choose another path",
    errno.EPERM: "operation not permitted; check its permissions or choose another path",
    errno.EROFS: "read-only file system; choose another path",
    errno.EISDIR: "it is a directory; give a file path",
    errno.ENOTDIR: "a component of the path is not a directory; fix the path",
    errno.EEXIST: "it already exists; remove it or choose another path",
    errno.ENOSPC: "no space left on the device (nothing was written); free space or choose "
                  "another path",
    errno.EDQUOT: "disk quota exceeded (nothing was written); free space or choose another path",
    errno.ENAMETOOLONG: "file name too long; choose a shorter path",
    errno.ENOENT: "no such file or directory; check the path",
    errno.ELOOP: "too many levels of symbolic links; fix the path",
    errno.ENOTEMPTY: "directory not empty; choose another path",
    errno.EFBIG: "file too large for this file system; choose another path",
}


def os_error_message(err: OSError) -> str:
    """One line for an ``OSError``: the path(s), what happened and the fix (:data:`OS_FIXES`)."""
    where = " -> ".join(str(f) for f in (err.filename, err.filename2) if f is not None)
    fix = OS_FIXES.get(err.errno, (err.strerror or str(err) or type(err).__name__).lower())
    return f"{where}: {fix}" if where else f"{err.strerror or err}; {fix}"


def require(module: str, extra: str):
    """Import an optional heavy dependency or raise MissingDependencyError naming the extra."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise MissingDependencyError(
            f"{module} is not installed; install it with: pip install 'lmh-deploy[{extra}]'") from e


class ForeignNirError(LmhError, ValueError):
    """A NIR file written by another tool that the foreign-NIR runtime cannot run (one line
    naming the node and the primitive)."""


class ExportValidationError(ExportFormatError):
    """A freshly written export does not compute the reference interpreter's spikes / logits
    (``lmh-export``'s validation; nothing is written)."""
