"""The ``nir-literal`` runtime: any NIR file evaluated node by node exactly as convention
``lmh-nir/2`` reads, with no neuron-cluster recognition.

Every node is the generic evaluator :func:`lmh_deploy.nir.run_numpy.eval_node` (through the
same :class:`~lmh_deploy.nir.run_numpy.Stepper` and time loop as the ``nir`` runtime, with no
fused clusters) computed in float64 and its output rounded to float32 (``precision="float32"``, the default) or kept in
float64 (``precision="float64"``, for diagnosis). Edges into a node are summed in float64 before
the node's rounding. So the unrolled form, written as float32 products and two-input sums, is
bit-identical to the reference interpreter; the temporal form computes the model's equations in
real arithmetic with one rounding per node, so a spike can differ from the reference only where
a membrane lies within a few float32 ulps of a threshold.

Initial outputs (lmh-nir/2). A delayed edge carries at t = 0 its source's output "at t = -1":
one delay-free evaluation of the graph in which every ``I`` emits its ``v0``, ``LIF`` emits 0
spikes, ``Input`` emits 0 and delayed edges carry 0
(:func:`lmh_deploy.nir.run_numpy.initial_outputs`). Files of convention ``lmh-nir/1`` are read by
their own rule (delayed edges carry 0 at t = 0), with a one-line warning.
"""
from __future__ import annotations

import numpy as np

from lmh_deploy.errors import LmhError
from lmh_deploy.graph.interpret import GraphRun
from lmh_deploy.nir.program import NirProgram, load_program
from lmh_deploy.nir.run_numpy import NumpyNirBackend, run_program

PRECISIONS = ("float32", "float64")


class LiteralBackend(NumpyNirBackend):
    """float64 arithmetic; :meth:`out` rounds a node's output to float32 (or keeps float64).
    Inputs are quantized in float32 exactly as the reference does (values on the input grid)."""

    def __init__(self, precision: str = "float32"):
        if precision not in PRECISIONS:
            raise LmhError(f"unknown precision {precision!r} for nir-literal; choose float32 "
                           f"(one rounding per node, the default) or float64 (diagnosis)")
        self.precision = precision

    def out(self, y):
        y = np.asarray(y, np.float64)
        return y.astype(np.float32).astype(np.float64) if self.precision == "float32" else y

    @staticmethod
    def const(a):
        return np.asarray(a, dtype=np.float64)

    @staticmethod
    def zeros(batch, shape):
        return np.zeros((batch,) + tuple(shape), np.float64)

    @staticmethod
    def gt(u, thr):
        return (u > thr).astype(np.float64)

    @staticmethod
    def where(c, a, b):
        return np.where(c > 0, a, b).astype(np.float64)

    @staticmethod
    def quantize_input(x, q, bound):
        return NumpyNirBackend.quantize_input(x, q, bound).astype(np.float64)

    @staticmethod
    def linear(x, w, b):
        return x @ w.T + b

    @staticmethod
    def conv(x, w, b, stride, padding):
        o, c, k, _ = w.shape
        if padding:
            x = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
        win = np.lib.stride_tricks.sliding_window_view(x, (k, k), axis=(2, 3))
        win = win[:, :, ::stride, ::stride]
        bsz, _, ho, wo = win.shape[:4]
        cols = win.transpose(0, 2, 3, 1, 4, 5).reshape(bsz * ho * wo, c * k * k)
        y = cols @ w.reshape(o, -1).T + b
        return np.ascontiguousarray(y.reshape(bsz, ho, wo, o).transpose(0, 3, 1, 2))


def load_literal(path) -> NirProgram:
    """Registry loader: read and check any NIR file, with no cluster recognition."""
    return load_program(path, fuse=False)


def run_literal(source, x, timesteps: int | None = None, precision: str = "float32",
                trace: dict | None = None) -> GraphRun:
    """The ``nir-literal`` runtime: NIR file / program -> GraphRun.

    ``x``: static ``[B, *shape]`` or frames ``[T, B, *shape]``; ``precision`` "float32" (each
    node's output rounded to float32; float32 arrays out) or "float64" (float64 arrays out);
    ``trace``: a dict that receives each ``Threshold`` node's input (its membrane) and output,
    ``{name: (u [T, B, ...], y [T, B, ...])}`` ([1, B, ...] for the unrolled form's one
    evaluation). A program passed in must have no fused clusters. Raises NirGraphError /
    TimestepsError (one line) for an unreadable graph or a wrong T, LmhError for a precision
    other than float32 / float64."""
    be = LiteralBackend(precision)
    prog = source if isinstance(source, NirProgram) else load_literal(source)
    if prog.fused:
        raise LmhError("nir-literal evaluates every node: load the program with fuse=False")
    logits, spikes = run_program(prog, np.asarray(x, np.float32), timesteps, be=be, trace=trace)
    if trace is not None:
        for n, (us, ys) in list(trace.items()):
            trace[n] = (np.stack(us), np.stack(ys))
    dt = np.float32 if precision == "float32" else np.float64
    return GraphRun(np.stack(logits).astype(dt), {k: np.stack(v).astype(dt)
                                                  for k, v in spikes.items()})
