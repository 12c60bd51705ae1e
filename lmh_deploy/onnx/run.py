"""Run an exported ONNX file in onnxruntime (CPU) and return a :class:`GraphRun`.

Graph optimizations are **disabled** (``ORT_DISABLE_ALL``) by default. The exported graph is
already minimal (constants shared, first layer of a static input computed once); disabling the
optimizer guarantees that no fusion or constant re-association changes a float32 rounding in the
neuron updates, so onnxruntime's spikes are bit-identical to the reference interpreter's.
(``ORT_ENABLE_ALL`` was measured to keep parity on the test models too -- tests check both --
but only the unoptimized graph is the one we can argue is exact.)
"""
from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from lmh_deploy.errors import ExportFormatError, TimestepsError, require
from lmh_deploy.graph.interpret import GraphRun
from lmh_deploy.graph.schema import check_timesteps
from lmh_deploy.onnx import convention as key

OPTIMIZATION_LEVELS = ("disable", "basic", "extended", "all")


def session_options(threads: int | None = None, optimization: str = "disable"):
    """onnxruntime SessionOptions: ``threads`` intra-op threads (None = onnxruntime default)."""
    ort = require("onnxruntime", "onnx")
    so = ort.SessionOptions()
    levels = {"disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
              "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
              "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
              "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}
    if optimization not in levels:
        raise ValueError(f"unknown optimization level {optimization!r}; choose one of "
                         f"{', '.join(OPTIMIZATION_LEVELS)}")
    so.graph_optimization_level = levels[optimization]
    if threads is not None:
        so.intra_op_num_threads = int(threads)
        so.inter_op_num_threads = 1
    so.log_severity_level = 3
    return so


@dataclass
class OnnxModel:
    """A loaded exported file: the session and the metadata lmh-deploy wrote into it."""

    path: str
    session: object
    timesteps: int
    frames: bool
    time_invariant: bool
    omega_period: int
    spike_outputs: dict
    meta: dict

    @property
    def input_shape(self) -> tuple | None:
        """Per-sample input shape written by the exporter (None if absent)."""
        shape = self.meta.get(key.INPUT_SHAPE)
        return None if shape is None else tuple(json.loads(shape))

    def check_timesteps(self, timesteps: int | None) -> int:
        """The number of steps to report: the file's T or a valid prefix of it."""
        if timesteps is None:
            return self.timesteps
        timesteps = check_timesteps(timesteps, self.omega_period)
        if timesteps > self.timesteps:
            raise TimestepsError(
                f"{self.path} was exported for T={self.timesteps}; it cannot run {timesteps} steps "
                f"(re-export with lmh-export --timesteps {timesteps})")
        return timesteps


def load_onnx(path, threads: int | None = None, optimization: str = "disable") -> OnnxModel:
    """Open an exported ``.onnx`` file in onnxruntime (CPU)."""
    ort = require("onnxruntime", "onnx")
    try:
        sess = ort.InferenceSession(str(path), session_options(threads, optimization),
                                    providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own exception types
        first = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
        raise ExportFormatError(f"{path}: not a readable ONNX file ({first}); re-export it with "
                                f"lmh-export --format onnx") from None
    meta = dict(sess.get_modelmeta().custom_metadata_map)
    if key.TIMESTEPS not in meta:
        raise ExportFormatError(f"{path}: not an lmh-deploy export (no lmh.* metadata); export "
                                f"it with lmh-export --format onnx")
    return OnnxModel(path=str(path), session=sess, timesteps=int(meta[key.TIMESTEPS]),
                     frames=meta.get(key.INPUT_LAYOUT) == "TBCHW",
                     time_invariant=meta.get(key.TIME_INVARIANT) == "true",
                     omega_period=int(meta.get(key.OMEGA_PERIOD, 0)),
                     spike_outputs=json.loads(meta.get(key.SPIKE_OUTPUTS, "{}")), meta=meta)


def run_onnx_model(model: OnnxModel, x, timesteps: int | None = None) -> GraphRun:
    """Run a loaded file on ``x`` (``[B, C, H, W]``, or ``[T, B, ...]`` for a frames export).

    Returns per-step logits ``[T', B, K]`` and the spike outputs the file has (``--with-spikes``),
    cut to the first ``T'`` steps when ``timesteps`` asks for a prefix of the file's T."""
    t = model.check_timesteps(timesteps)
    x = np.ascontiguousarray(np.asarray(x, dtype=np.float32))
    names = ["logits"] + list(model.spike_outputs.values())
    outs = model.session.run(names, {"input": x})
    spikes = {k: o[:t] for k, o in zip(model.spike_outputs, outs[1:])}
    return GraphRun(outs[0][:t], spikes)


def run_onnx(path_or_model, x, timesteps: int | None = None) -> GraphRun:
    """Runtime entry ``onnx``: a path (opened here) or an :class:`OnnxModel`."""
    m = path_or_model if isinstance(path_or_model, OnnxModel) else load_onnx(path_or_model)
    return run_onnx_model(m, x, timesteps)
