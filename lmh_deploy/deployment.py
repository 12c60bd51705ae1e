"""One model to run in several runtimes: the checkpoint (or an exported file) and the artifacts
each runtime needs (trained module, folded graph, exported files per (format, T)), made once and
on demand.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from lmh_deploy.errors import LmhError, TimestepsError
from lmh_deploy.guards import check_model_file, check_run
from lmh_deploy.graph.interpret import GraphRun
from lmh_deploy.runtimes import Runtime, UnknownRuntimeError, get_runtime


class Deployment:
    """``Deployment(path)``: ``path`` is a checkpoint (``.pt``) or an exported file whose suffix a
    runtime accepts (``.onnx``). The checkpoint is loaded at once, so a bad file fails before any
    work. Use as a context manager (exports go to a temporary directory, removed at exit)."""

    def __init__(self, path, workdir=None):
        self.path = Path(path)
        self._tmp = None
        self._workdir = Path(workdir) if workdir else None
        self._model = None
        self._graph = None
        self._files: dict = {}
        self._handles: dict = {}
        self.file_runtime: Runtime | None = None
        from lmh_deploy.runtimes import RUNTIMES

        for rt in RUNTIMES.values():  # the first runtime (registry order) taking this suffix
            if self.path.suffix in rt.suffixes:
                self.file_runtime = rt
                break
        if self.file_runtime is None:
            self._model = load_model_checked(self.path)
        else:
            if not self.path.is_file():
                raise LmhError(f"{self.path}: no such file")
            self._declared = check_model_file(self.path, self.file_runtime.source)
            self._handles[(self.file_runtime.name, None)] = self.file_runtime.load_fn()(self.path)

    # -- context -----------------------------------------------------------------------------
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        self._handles.clear()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    @property
    def workdir(self) -> Path:
        if self._workdir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="lmh-deploy-")
            self._workdir = Path(self._tmp.name)
        return self._workdir

    # -- artifacts ---------------------------------------------------------------------------
    @property
    def is_checkpoint(self) -> bool:
        return self.file_runtime is None

    @property
    def model(self):
        if self._model is None:
            raise LmhError(f"{self.path} is an exported file; the trained model needs the checkpoint")
        return self._model

    @property
    def graph(self):
        if self._graph is None:
            from lmh_deploy.graph.fold import fold

            self._graph = fold(self.model)
        return self._graph

    def structure(self):
        """``(DeployGraph, exact)``: the graph whose shapes and connectivity this model has (what
        :func:`lmh_deploy.cost.describe` reads). A checkpoint: its fold; our NIR file: the graph
        it was written from (both ``exact``). An ONNX file carries no graph: the architecture is
        rebuilt from the model config in its metadata and folded (``exact=False``: shapes and
        connectivity are the file's, weights and thresholds are not)."""
        if self.is_checkpoint:
            return self.graph, True
        if self.file_runtime.source == "nir":
            from lmh_deploy.nir.read import read_deploy_graph

            return read_deploy_graph(self.path), True
        import json

        from lmh_deploy.onnx.convention import SOURCE_CONFIG

        cfg = json.loads((getattr(self._file_handle, "meta", None) or {}).get(SOURCE_CONFIG, "{}"))
        if not cfg:
            raise LmhError(f"{self.path}: the file stores no model config; give the checkpoint")
        from lmh_deploy.graph.fold import fold
        from lmh_deploy.models import build_model

        return fold(build_model(cfg).eval()), False

    @property
    def _file_handle(self):
        return self._handles[(self.file_runtime.name, None)]

    @property
    def trained_timesteps(self) -> int:
        if self.is_checkpoint:
            return int(self.model.timesteps)
        t = getattr(self._file_handle, "timesteps", None)
        if t is None:
            raise LmhError(f"{self.path}: the file does not say its T; pass --timesteps")
        return int(t)

    def check_timesteps(self, timesteps: int) -> int:
        """Raise :class:`TimestepsError` if the model cannot run ``timesteps`` steps."""
        if self.is_checkpoint:
            return self.graph.check_timesteps(timesteps)
        check = getattr(self._file_handle, "check_timesteps", None)
        if check is None:
            from lmh_deploy.graph.schema import check_timesteps

            return check_timesteps(timesteps)
        return check(timesteps)

    def check_runtime(self, name: str) -> Runtime:
        """The runtime ``name``; for an exported file, only runtimes of its format."""
        rt = get_runtime(name)
        if not self.is_checkpoint and rt.source != self.file_runtime.source:
            from lmh_deploy.runtimes import RUNTIMES

            ok = [r.name for r in RUNTIMES.values() if r.source == self.file_runtime.source]
            raise UnknownRuntimeError(
                f"{self.path} is an exported {self.file_runtime.source} file: it runs in "
                f"{', '.join(ok)}; give the checkpoint (.pt) for {name!r}")
        return rt

    def export(self, fmt: str, timesteps: int, **options) -> Path:
        """The file of format ``fmt`` exported at ``timesteps`` (made once, in the workdir)."""
        key = (fmt, timesteps, tuple(sorted(options.items())))
        if key not in self._files:
            from lmh_deploy.runtimes import get_writer

            path = self.workdir / f"model_T{timesteps}_{len(self._files)}.{fmt}"
            get_writer(fmt)(self.graph, path, timesteps=timesteps, **options)
            self._files[key] = path
        return self._files[key]

    def source(self, rt: Runtime, timesteps: int):
        """What ``rt.run`` takes, for a run of ``timesteps`` steps."""
        if not self.is_checkpoint:
            if (rt.name, None) not in self._handles:
                self._handles[(rt.name, None)] = rt.load_fn()(self.path)
            return self._handles[(rt.name, None)]
        if rt.source == "model":
            return self.model
        if rt.source == "graph":
            return self.graph
        key = (rt.name, timesteps)
        if key not in self._handles:
            path = self.export(rt.source, timesteps, **rt.export_options)
            self._handles[key] = rt.load_fn()(path)
        return self._handles[key]

    def run(self, runtime: str | Runtime, x, timesteps: int | None = None,
            batch_size: int = 256, progress: bool | None = False) -> GraphRun:
        """Run ``x`` (``[N, ...]`` static or ``[T, N, ...]`` frames) in batches; one GraphRun.
        ``progress``: a tqdm bar over the samples (True always, None only on a terminal)."""
        return concat_runs(list(self._batches(runtime, x, timesteps, batch_size, progress, False)))

    def batches(self, runtime: str | Runtime, x, timesteps: int | None = None,
                batch_size: int = 256, progress: bool | None = False):
        """:meth:`run` one batch at a time: yields a GraphRun per ``batch_size`` samples, so the
        memory a whole evaluation needs is one batch's (logits and spike counts are not kept)."""
        return self._batches(runtime, x, timesteps, batch_size, progress, True)

    def _batches(self, runtime, x, timesteps, batch_size, progress, streamed):
        rt = runtime if isinstance(runtime, Runtime) else self.check_runtime(runtime)
        t = self.check_timesteps(timesteps or self.trained_timesteps)
        x = np.asarray(x, dtype=np.float32)
        if rt.source != "model":  # a folded normalization: the deployed graph takes raw pixels
            from lmh_deploy.graph.inputs import raw_input

            x = raw_input(x, self.input_norm)
        shape = self.input_shape
        frames = shape is not None and x.ndim == len(shape) + 2
        n = x.shape[1] if frames else x.shape[0]
        # finite inputs; memory estimate before any work
        check_run(self, x, frames, t, batch_size, streamed)
        src = self.source(rt, t)
        fn = rt.run_fn()

        def gen():
            from tqdm.auto import tqdm

            with tqdm(total=n, desc=rt.name, unit="sample", leave=False,
                      disable={True: False, False: True, None: None}[progress]) as bar:
                for i in range(0, n, batch_size):
                    xb = x[:, i:i + batch_size] if frames else x[i:i + batch_size]
                    yield fn(src, xb, t)
                    bar.update(min(batch_size, n - i))
        return gen()

    @property
    def input_norm(self) -> dict | None:
        """The input normalization folded into the deployed graph (``DeployGraph.meta``, or an
        exported file's ``lmh.input_norm`` metadata), or None."""
        if self.is_checkpoint:
            return self.graph.meta.get("input_norm")
        import json

        h = self._file_handle
        meta = getattr(h, "meta", None) or getattr(h, "metadata", None) or {}  # ONNX / NIR
        raw = meta.get("lmh.input_norm") or meta.get("input_norm")
        raw = raw.decode() if isinstance(raw, bytes) else raw
        return json.loads(raw) if isinstance(raw, str) else raw

    @property
    def input_shape(self) -> tuple | None:
        """Per-sample input shape (None if an exported file does not record it)."""
        if self.is_checkpoint:
            return tuple(self.model.input_shape)
        shape = getattr(self._file_handle, "input_shape", None)
        return None if shape is None else tuple(shape)


def load_model_checked(path):
    """:func:`lmh_deploy.checkpoint.load_model`, with every failure to read the file turned into
    a one-line :class:`~lmh_deploy.errors.CheckpointFileError` naming the file."""
    from lmh_deploy.checkpoint import load_model
    from lmh_deploy.errors import CheckpointFileError, LmhError

    try:
        return load_model(path)
    except LmhError:  # CheckpointError included
        raise
    except Exception as e:  # noqa: BLE001 - torch.load raises many types on garbage input
        raise CheckpointFileError(f"{path}: not a readable lmh-deploy checkpoint "
                                  f"({type(e).__name__}); re-save or re-train it") from None


def concat_runs(runs: list) -> GraphRun:
    """Concatenate GraphRuns along the batch axis (axis 1 of ``[T, B, ...]``)."""
    if len(runs) == 1:
        return runs[0]
    return GraphRun(np.concatenate([r.logits for r in runs], 1),
                    {k: np.concatenate([r.spikes[k] for r in runs], 1) for k in runs[0].spikes})


__all__ = ["Deployment", "concat_runs", "TimestepsError"]


def run_file(path, dataset=None, runtime=None, timesteps=None, limit=None, batch_size=256,
             data_dir=None, data_options=None, progress=False) -> dict:
    """Evaluate ``path`` on the test split of ``dataset`` (default: the file's training data set,
    else digits) and return the result dict that ``lmh-run --json`` writes."""
    import time

    from lmh_deploy.evaluate import SpikeTally, accuracy_per_step, load_eval_data, resolve_dataset

    dataset = resolve_dataset(path, dataset)
    with Deployment(path) as dep:
        name = runtime or ("torch" if dep.is_checkpoint else dep.file_runtime.name)
        rt = dep.check_runtime(name)
        t = dep.check_timesteps(timesteps or dep.trained_timesteps)
        opts = dict(data_options or {})
        if dataset == "dvscifar10":
            opts.setdefault("frames", t)
        x, y = load_eval_data(dataset, limit, data_dir, **opts)
        t0 = time.perf_counter()
        logits, tally = [], SpikeTally()
        for run in dep.batches(rt, x, t, batch_size, progress=progress):  # memory: one batch
            logits.append(run.logits)
            tally.add(run.spikes)
        wall = time.perf_counter() - t0
        trained = dep.trained_timesteps
    acc = accuracy_per_step(np.concatenate(logits, 1), y)
    return {"file": str(path), "runtime": rt.name, "dataset": dataset, "timesteps": t,
            "trained_timesteps": trained, "samples": int(len(y)),
            "accuracy_per_step": acc, "accuracy": acc[-1], **tally.stats(),
            "wall_time_s": wall}
