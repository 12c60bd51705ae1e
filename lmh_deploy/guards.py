"""Guards run before any work: outputs that would overwrite an input, output folders that cannot
be written, non-finite weights and inputs, model files that refer to data outside themselves,
and runs that would not fit in memory. Each raises a one-line :class:`~lmh_deploy.errors.LmhError`
naming the file, option, tensor or sample and the fix (the CLIs print it, exit status 2)."""
from __future__ import annotations

import contextlib
import os
from pathlib import Path

import numpy as np

from lmh_deploy.errors import LmhError, NonFiniteError, OutputPathError, ResourceError


# -- output paths ---------------------------------------------------------------------------------
def same_file(a, b) -> bool:
    """Whether paths ``a`` and ``b`` name the same file: ``os.path.samefile`` when both exist
    (hard links, symbolic links, ``..``), else equal ``realpath``."""
    try:
        return os.path.samefile(a, b)
    except (OSError, ValueError):
        return os.path.realpath(a) == os.path.realpath(b)


def check_outputs(outputs, inputs) -> None:
    """Refuse an output that resolves to an input (or to another output).

    ``outputs`` and ``inputs`` are ``(name, path)`` pairs (``name``: the option, e.g. ``--json``;
    a ``None`` path is skipped). Raises :class:`OutputPathError` before anything is read or
    written."""
    outputs = [(n, p) for n, p in outputs if p is not None]
    inputs = [(n, p) for n, p in inputs if p is not None]
    for i, (name, out) in enumerate(outputs):
        for what, src in inputs:
            if same_file(out, src):
                raise OutputPathError(f"{name} {out} is the input {what} {src}: writing it would "
                                      f"destroy the input; choose another {name} path")
        for name2, out2 in outputs[i + 1:]:
            if same_file(out, out2):
                raise OutputPathError(f"{name} and {name2} are the same file {out}; give two "
                                      "different paths")


def check_output_dir(path, option: str = "--out", files=(), inputs=()) -> None:
    """Check that folder ``path`` can receive outputs before any work (training checks before
    its first epoch): it is not a file, it (or the nearest existing parent) is writable and has
    room for a small probe file, and none of ``files`` inside it is one of ``inputs``. Folders
    made by the check are removed again (the run makes them when it writes)."""
    path = Path(path)
    check_outputs([(f"{option} ({name})", path / name) for name in files], inputs)
    if path.exists() and not path.is_dir():
        raise OutputPathError(f"{option} {path}: exists and is not a directory; choose another "
                              f"{option} path")
    made, p = [], path
    while not p.exists() and p != p.parent:
        made.append(p)
        p = p.parent
    import tempfile

    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".lmh-write-probe.", suffix=".tmp") as f:
            f.write(b"\0" * 4096)
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        from lmh_deploy.errors import os_error_message

        raise OutputPathError(f"{option} {path}: cannot be written ("
                              f"{os_error_message(e).split(': ', 1)[-1]})") from None
    finally:  # the run makes its folder itself; a failed run then leaves nothing new
        for d in made:
            try:
                d.rmdir()
            except OSError:
                pass


def check_train_output(cfg: dict, config_file=None) -> None:
    """The training run's ``--out`` (``model.pt``, ``best.pt``, ``metrics.json``) against its
    inputs (``--config``, ``--ann-checkpoint``; ``--resume`` may be ``<out>/model.pt``), then
    writable (:func:`check_output_dir`)."""
    out = Path(cfg["out"])
    inputs = [("--config", config_file), ("--ann-checkpoint", cfg.get("ann_checkpoint"))]
    check_outputs([("--out (model.pt)", out / "model.pt")], inputs)
    check_output_dir(out, "--out", ("best.pt", "metrics.json"),
                     inputs + [("--resume", cfg.get("resume"))])


@contextlib.contextmanager
def removing_new_dir(path):
    """Around a run that writes into folder ``path``: if the run fails and the folder did not
    exist before, remove what it made (a failed run leaves nothing new behind)."""
    path = Path(path)
    made, p = [], path
    while not p.exists() and p != p.parent:
        made.append(p)
        p = p.parent
    try:
        yield
    except BaseException:
        if made:
            import shutil

            shutil.rmtree(made[-1], ignore_errors=True)
        raise


# -- finiteness -----------------------------------------------------------------------------------
def check_finite_state(state: dict, path) -> None:
    """Every floating tensor of a state dict is finite, else :class:`NonFiniteError` naming the
    first bad tensor (weights, BN statistics, neuron parameters)."""
    import torch

    for key, t in state.items():
        if isinstance(t, torch.Tensor) and (t.is_floating_point() or t.is_complex()):
            bad = ~torch.isfinite(t)
            if bool(bad.any()):
                raise NonFiniteError(f"{path}: tensor {key} holds {int(bad.sum())} NaN/Inf of "
                                     f"{t.numel()} values; the file is corrupt or training "
                                     "diverged: restore or retrain it")


def check_finite_arrays(arrays: dict, what) -> None:
    """Every array of ``{name: array}`` is finite, else :class:`NonFiniteError` naming it."""
    for key, a in arrays.items():
        a = np.asarray(a)
        if a.dtype.kind in "fc" and not np.isfinite(a).all():
            raise NonFiniteError(f"{what}: {key} holds {int((~np.isfinite(a)).sum())} NaN/Inf of "
                                 f"{a.size} values; the file is corrupt: re-export it")


def check_finite_inputs(x, what: str = "input") -> None:
    """Input samples ``x`` (``[N, ...]`` or frames ``[T, N, ...]``, ``frames`` found by the
    caller's convention: axis 0 is the sample axis here) are finite, else :class:`NonFiniteError`
    naming the first bad sample."""
    x = np.asarray(x)
    if x.dtype.kind not in "fc":
        return
    finite = np.isfinite(x)
    if finite.all():
        return
    bad = np.argwhere(~finite)[0]
    raise NonFiniteError(f"{what}: sample {int(bad[0])} holds NaN/Inf (at index "
                         f"{tuple(int(i) for i in bad)}); clean the data set")


# -- model files ----------------------------------------------------------------------------------
def check_onnx_file(path) -> None:
    """An ONNX file for lmh-run: no external-data references (a model must not make the runtime
    read other files), every initializer finite. Reads the protobuf only."""
    from lmh_deploy.errors import require

    onnx = require("onnx", "onnx")
    from onnx import numpy_helper

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # noqa: BLE001 - protobuf raises DecodeError and others on junk
        raise LmhError(f"{path}: not a readable ONNX file ({type(e).__name__}); re-export it with "
                       "lmh-export") from None
    inits = list(model.graph.initializer)
    for t in inits:
        if t.data_location == onnx.TensorProto.EXTERNAL or t.external_data:
            raise LmhError(f"{path}: initializer {t.name} refers to external data; lmh-deploy "
                           "refuses files that read other files: re-export it with lmh-export")
    arrays = {}
    for t in inits:
        try:
            arrays[f"initializer {t.name}"] = numpy_helper.to_array(t)
        except Exception as e:  # noqa: BLE001
            raise LmhError(f"{path}: initializer {t.name} is malformed ({type(e).__name__}); "
                           "re-export it") from None
    check_finite_arrays(arrays, path)


#: graph metadata keys of lmh-nir/1 that must be finite numbers (scalars or arrays)
NIR_NUMERIC_META = ("timesteps", "trained_timesteps", "levels", "input_quantum", "input_bound",
                    "num_classes", "input_shape", "format_version")
#: node metadata keys that must be finite numbers
NIR_NUMERIC_NODE_META = ("step", "v0", "levels", "level", "theta", "gain")
#: lmh-nir graph metadata that must be integers >= 1 / numbers > 0
NIR_POSITIVE_INT_META = ("timesteps", "trained_timesteps", "levels", "num_classes")
NIR_POSITIVE_META = ("input_quantum", "input_bound")
#: the largest element count a NIR file may declare for one value (per sample)
MAX_DECLARED_ELEMENTS = 1 << 28


def _numeric(v) -> bool:
    try:
        a = np.asarray(v, dtype=np.float64)
    except (TypeError, ValueError, OverflowError):
        return False
    return a.size > 0 and bool(np.isfinite(a).all())


def check_nir_file(path) -> int:
    """A NIR file before any run: readable without unbounded recursion, numeric ``lmh.*``
    metadata numeric and finite, the ``deploy`` JSON parseable, every parameter array finite, no
    declared shape above :data:`MAX_DECLARED_ELEMENTS` elements. Returns the number of values per
    sample the graph declares (summed over its nodes' outputs), for :func:`check_memory`.

    Node semantics (thresholds > 0, L >= 1, consistent shapes) are :mod:`lmh_deploy.nir`'s
    validation."""
    import json
    import sys

    from lmh_deploy.errors import NirGraphError, require

    nir = require("nir", "nir")
    limit = sys.getrecursionlimit()
    try:
        g = nir.read(str(path))
    except RecursionError:
        raise NirGraphError(f"{path}: nested too deeply to read (more than {limit} levels); not "
                            "a NIR file lmh-export wrote") from None
    except Exception as e:  # noqa: BLE001 - h5py/nir raise many types on foreign files
        raise NirGraphError(f"{path}: not a readable NIR file ({type(e).__name__}); re-export it "
                            "with lmh-export --format nir") from None
    meta = dict(getattr(g, "metadata", None) or {})
    for k in NIR_NUMERIC_META:
        if k in meta and not _numeric(meta[k]):
            raise NirGraphError(f"{path}: metadata {k!r} is {str(meta[k])[:40]!r}, not a finite "
                                "number; the file was edited or is corrupt: re-export it")
    ours = str(meta.get("format", "")).startswith("lmh-nir")
    if ours:  # our convention's ranges (lmh_deploy.nir.convention): T >= 1, L >= 1, q, B > 0
        for k in NIR_POSITIVE_INT_META:
            if k in meta and not (float(np.min(meta[k])) >= 1 and float(np.min(meta[k])).is_integer()):
                raise NirGraphError(f"{path}: metadata {k!r} = {meta[k]} must be an integer >= 1; "
                                    "the file was edited or is corrupt: re-export it")
        for k in NIR_POSITIVE_META:
            if k in meta and not float(np.min(meta[k])) > 0:
                raise NirGraphError(f"{path}: metadata {k!r} = {meta[k]} must be > 0; re-export it")
    if "deploy" in meta:
        try:
            text = meta["deploy"]
            json.loads(text.decode() if isinstance(text, bytes) else str(text))
        except RecursionError:
            raise NirGraphError(f"{path}: metadata 'deploy' is nested too deeply; re-export "
                                "it") from None
        except (ValueError, TypeError) as e:
            raise NirGraphError(f"{path}: metadata 'deploy' is not valid JSON ({type(e).__name__}); "
                                "re-export it") from None
    total = 0

    def visit(graph, prefix, depth):
        nonlocal total
        if depth > 64:
            raise NirGraphError(f"{path}: subgraphs nested more than 64 deep; not a file "
                                "lmh-export wrote")
        for name, node in (getattr(graph, "nodes", None) or {}).items():
            where = f"node {prefix}{name}"
            nm = dict(getattr(node, "metadata", None) or {})
            for k in NIR_NUMERIC_NODE_META:
                if k in nm and not _numeric(nm[k]):
                    raise NirGraphError(f"{path}: {where} metadata {k!r} is not a finite number; "
                                        "re-export the file")
            if hasattr(node, "nodes"):
                visit(node, f"{prefix}{name}.", depth + 1)
                continue
            arrays = {f"{where} {k}": v for k, v in vars(node).items()
                      if isinstance(v, np.ndarray) and k not in ("input_type", "output_type")}
            check_finite_arrays(arrays, path)
            if ours and type(node).__name__ == "Threshold" and not np.all(
                    np.asarray(node.threshold) > 0):
                raise NirGraphError(f"{path}: {where}: threshold theta = "
                                    f"{float(np.min(node.threshold)):g} <= 0 (lmh-nir needs "
                                    "theta > 0); the file was edited or is corrupt: re-export it")
            if ours and "level" in nm and not (float(np.min(nm["level"])) >= 1):
                raise NirGraphError(f"{path}: {where}: spike level {nm['level']} < 1 (L >= 1); "
                                    "re-export the file")
            for typ in ("input_type", "output_type"):
                for port, shape in (getattr(node, typ, None) or {}).items():
                    try:
                        dims = [int(d) for d in np.asarray(shape).reshape(-1)]
                    except (TypeError, ValueError, OverflowError):
                        raise NirGraphError(f"{path}: {where} declares a non-integer shape "
                                            f"{str(shape)[:40]}; re-export the file") from None
                    if any(d < 0 for d in dims):
                        raise NirGraphError(f"{path}: {where} declares a negative shape {dims}")
                    n = int(np.prod(dims, dtype=object)) if dims else 1
                    if n > MAX_DECLARED_ELEMENTS:
                        raise NirGraphError(
                            f"{path}: {where} declares a shape {dims} ({n} values per sample, "
                            f"more than {MAX_DECLARED_ELEMENTS}); refusing to allocate it")
                    if typ == "output_type":
                        total += n

    visit(g, "", 0)
    return total


def check_model_file(path, source: str) -> int:
    """Check an exported file of format ``source`` (``"onnx"``, ``"nir"``) before it is loaded;
    returns the values per sample it declares (0 when unknown)."""
    if source == "onnx":
        check_onnx_file(path)
        return 0
    if source == "nir":
        return check_nir_file(path)
    return 0


# -- resources ------------------------------------------------------------------------------------
def available_memory() -> int:
    """Bytes a run may use: ``LMH_MEMORY_LIMIT`` (bytes) if set, else MemAvailable."""
    env = os.environ.get("LMH_MEMORY_LIMIT")
    if env:
        return int(float(env))
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 1 << 62


def run_memory_estimate(timesteps: int, samples: int, batch: int, input_size: int,
                        neurons: int, classes: int, bytes_per: int = 4) -> int:
    """Bytes a run needs: per batch, every layer's state and output for all ``T`` steps
    (``T * B * (input + 3 * neurons)``, the runtimes keep [T, B, ...] tensors), plus the results
    kept for the whole set (logits and spike counts: ``T * N * (classes + neurons)``)."""
    b = min(batch, samples)
    per_batch = timesteps * b * (input_size + 3 * neurons)
    kept = timesteps * samples * (classes + neurons)
    return int(bytes_per * (per_batch + kept))


def check_memory(need: int, what: str, fix: str) -> None:
    """Refuse a run that needs more than :func:`available_memory` (one line with the estimate)."""
    have = available_memory()
    if need > have:
        raise ResourceError(f"{what} needs about {_gib(need)} of memory, {_gib(have)} is "
                            f"available; {fix}")


def check_run(dep, x, frames: bool, timesteps: int, batch_size: int,
              streamed: bool = False) -> None:
    """Before a :class:`~lmh_deploy.deployment.Deployment` run: every input sample finite, and
    the memory estimate (:func:`run_memory_estimate`; layer sizes from the folded graph, the NIR
    file's declared shapes, or the input alone for ONNX) within :func:`available_memory`.
    ``streamed``: the results are consumed batch by batch (one batch's results kept)."""
    check_finite_inputs(np.swapaxes(x, 0, 1) if frames else x, "input data")
    n = int(x.shape[1] if frames else x.shape[0])
    size = int(np.prod(x.shape[2:] if frames else x.shape[1:], dtype=np.int64))
    neurons, classes = 0, 0
    if dep.is_checkpoint:
        try:  # a model the fold cannot represent still runs in "torch": estimate from the input
            g = dep.graph
        except LmhError:
            g = None
        if g is not None:
            neurons = sum(int(np.prod(s)) for k, s in g.shapes().items() if k != "input")
            classes = int(g.num_classes)
    else:
        neurons = int(getattr(dep, "_declared", 0) or 0)
    need = run_memory_estimate(int(timesteps), min(n, int(batch_size)) if streamed else n,
                               int(batch_size), size, neurons, classes)
    check_memory(need, f"a run of T={timesteps} on {n} samples in batches of {min(batch_size, n)}",
                 "lower --timesteps, --batch-size or --limit")


def _gib(n: int) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**27 else f"{n / 2**20:.0f} MiB"


__all__ = ["removing_new_dir", "check_model_file", "check_nir_file", "check_run", "NonFiniteError", "OutputPathError", "ResourceError", "available_memory",
           "check_finite_arrays", "check_finite_inputs", "check_finite_state", "check_memory",
           "check_onnx_file", "check_output_dir", "check_outputs", "check_train_output",
           "run_memory_estimate", "same_file"]
