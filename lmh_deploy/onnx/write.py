"""Exact ONNX export of a :class:`~lmh_deploy.graph.schema.DeployGraph` (DESIGN §3).

The graph is **not** written by hand: :func:`export_onnx` runs the one interpreter
(:func:`lmh_deploy.graph.interpret.run_graph`) with :class:`OnnxBackend`, a symbolic back-end whose
arrays are :class:`Value` s (ONNX value names) and whose operations append ONNX nodes. The neuron
equations of :mod:`lmh_deploy.neuron_math` are therefore traced, operation for operation and in the
same order, into the graph:

=======================  =====================================================================
interpreter operation    ONNX
=======================  =====================================================================
``a + b, a - b, a * b``  ``Add, Sub, Mul`` (operand order kept)
``spike(m, theta)``      ``s = Cast(GreaterOrEqual(m, theta), FLOAT)``  (s = [m >= theta])
``levels(m, theta, L)``  ``s = Clip(Floor(Div(m, theta)), 0, L)``
input quantization       ``x_q = Mul(Clip(Round(Div(x, q)), -B/q, B/q), q)`` (round half even)
``linear / conv``        ``Gemm(x, W, b, transB=1)`` / ``Conv(x, W, b)``
``sumpool``              ``ReduceSum(Reshape(x, [B, C, H/k, k, W/k, k]), axes=[3, 5])``
=======================  =====================================================================

The time loop is unrolled for T steps. Constants are shared initializers, deduplicated by content
(weights appear once, not T times; scalars once each). Inputs: ``input`` ``[batch, C, H, W]``
(static image, direct encoding) or ``[T, batch, C, H, W]`` (frames); the batch dimension is
dynamic. Outputs: ``logits`` ``[T, batch, K]`` (per step), ``mean_logits`` ``[batch, K]`` and,
with ``with_spikes``, ``spikes_<layer>`` ``[T, batch, ...]`` (spike counts of every neuron layer).
"""
from __future__ import annotations

import hashlib
import json

import numpy as np

from lmh_deploy.graph.schema import DeployGraph
from lmh_deploy.errors import require
from lmh_deploy.onnx import convention as key

#: the pinned opset (ReduceMean keeps its ``axes`` attribute up to 17)
OPSET = 17
PRODUCER = "lmh-deploy"
SPIKE_PREFIX = "spikes_"


def _broadcast(a: tuple | None, b: tuple | None) -> tuple | None:
    if a is None or b is None:
        return None
    n = max(len(a), len(b))
    a = (1,) * (n - len(a)) + tuple(a)
    b = (1,) * (n - len(b)) + tuple(b)
    out = []
    for x, y in zip(a, b):
        out.append(y if x == 1 else x)
    return tuple(out)


class Value:
    """A symbolic array: the name of an ONNX value, its rank and shape (``None`` = batch).

    ``+ - * /`` append ``Add / Sub / Mul / Div`` nodes with the operands in the written order."""

    __slots__ = ("g", "name", "shape", "fill")
    __array_ufunc__ = None  # numpy operands defer to Value's reflected operators

    def __init__(self, g: "GraphBuilder", name: str, shape: tuple, fill=None):
        self.g, self.name, self.shape = g, name, tuple(shape)
        #: a value known at export time that broadcasts over ``shape`` (a neuron's initial state
        #: ``0`` or ``theta/2``, and what it meets before the first input current): kept as a
        #: small float32 array and never materialized as a [B, C, H, W] tensor
        self.fill = fill

    @property
    def rank(self) -> int:
        return len(self.shape)

    _NP = {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Div": np.divide}

    def _bin(self, op, a, b):
        fa, fb = (x.fill if isinstance(x, Value) else np.asarray(x, np.float32) for x in (a, b))
        if fa is not None and fb is not None:
            # both known: the same IEEE float32 operation, evaluated here instead of per sample
            # and per step (e.g. mu_D * 0 + mu_S * theta/2 at t = 0); bits are identical
            f = self._NP[op](np.asarray(fa, np.float32), np.asarray(fb, np.float32)).astype(np.float32)
            shape = _broadcast(a.shape if isinstance(a, Value) else (),
                               b.shape if isinstance(b, Value) else ())
            return Value(self.g, self.g.const(f).name, shape, fill=f)
        a, b = self.g.as_value(a), self.g.as_value(b)
        return self.g.node(op, [a, b], _broadcast(a.shape, b.shape))

    def __add__(self, o):
        return self._bin("Add", self, o)

    def __radd__(self, o):
        return self._bin("Add", o, self)

    def __sub__(self, o):
        return self._bin("Sub", self, o)

    def __rsub__(self, o):
        return self._bin("Sub", o, self)

    def __mul__(self, o):
        return self._bin("Mul", self, o)

    def __rmul__(self, o):
        return self._bin("Mul", o, self)

    def __truediv__(self, o):
        return self._bin("Div", self, o)

    def __rtruediv__(self, o):
        return self._bin("Div", o, self)

    def __neg__(self):
        return self.g.node("Neg", [self], self.shape)


class GraphBuilder:
    """Collects nodes and initializers; constants are deduplicated by (dtype, shape, bytes)."""

    def __init__(self, name_hints: dict | None = None):
        from onnx import helper, numpy_helper

        self.helper, self.numpy_helper = helper, numpy_helper
        self.nodes: list = []
        self.initializers: list = []
        self._consts: dict = {}
        self._hints = name_hints or {}
        self._n = 0

    def fresh(self, prefix: str) -> str:
        self._n += 1
        return f"{prefix}_{self._n}"

    def const(self, a, dtype=np.float32) -> Value:
        arr = np.array(a, dtype=dtype, order="C")  # (ascontiguousarray would make 0-d 1-d)
        key = (arr.dtype.str, arr.shape, hashlib.sha1(arr.tobytes()).hexdigest())
        if key not in self._consts:
            name = self._hints.get(id(a)) or self.fresh("c")
            self.initializers.append(self.numpy_helper.from_array(arr, name))
            self._consts[key] = Value(self, name, arr.shape,
                                      fill=arr if arr.dtype == np.float32 else None)
        return self._consts[key]

    def as_value(self, x) -> Value:
        return x if isinstance(x, Value) else self.const(x)

    def node(self, op: str, inputs: list, shape, name: str | None = None, **attrs) -> Value:
        out = name or self.fresh(op)
        self.nodes.append(self.helper.make_node(
            op, [i.name if isinstance(i, Value) else i for i in inputs], [out],
            name=f"n_{out}", **attrs))
        return Value(self, out, shape)


class OnnxOps:
    """The firing functions of :mod:`lmh_deploy.ops` as ONNX nodes."""

    name = "onnx"

    @staticmethod
    def spike(m: Value, theta):
        """``s = 1 if m >= theta else 0`` -> ``Cast(GreaterOrEqual(m, theta), FLOAT)``."""
        from onnx import TensorProto

        g = m.g
        ge = g.node("GreaterOrEqual", [m, g.as_value(theta)], m.shape)
        return g.node("Cast", [ge], m.shape, to=TensorProto.FLOAT)

    @staticmethod
    def levels(m: Value, theta, levels):
        """``s = #{k in 1..L : m >= fl(k theta)}`` -> ``Sum_k Cast(GreaterOrEqual(m, fl(k theta)))``
        (the cascade of DESIGN §1, thresholds float32 constants)."""
        from onnx import TensorProto

        from lmh_deploy.ops import level_threshold

        g = m.g
        fired = [g.node("Cast", [g.node("GreaterOrEqual", [m, g.as_value(
            theta * float(k) if isinstance(theta, Value) else level_threshold(theta, k))], m.shape)],
            m.shape, to=TensorProto.FLOAT) for k in range(1, int(levels) + 1)]
        return fired[0] if len(fired) == 1 else g.node("Sum", fired, m.shape)

    @staticmethod
    def detach(x):
        return x

    @staticmethod
    def sigmoid(x: Value):
        return x.g.node("Sigmoid", [x], x.shape)


class OnnxBackend:
    """Symbolic back-end of :func:`lmh_deploy.graph.interpret.run_graph`: arrays are :class:`Value` s."""

    ops = OnnxOps

    def __init__(self, builder: GraphBuilder):
        self.g = builder

    def const(self, a):
        return self.g.const(a)

    @staticmethod
    def ndim(x: Value):
        return x.rank

    @staticmethod
    def length(x: Value):
        return x.shape[0]

    def step(self, x: Value, t: int):
        idx = self.g.const(np.asarray(t, np.int64), dtype=np.int64)
        return self.g.node("Gather", [x, idx], x.shape[1:], axis=0)

    def zeros_like(self, x: Value):
        """A known zero of ``x``'s shape: a scalar constant that broadcasts (see ``Value.fill``);
        arithmetic with other known values happens at export time, so a neuron's first step
        costs no full-size ``ConstantOfShape`` and no multiplications of zeros."""
        zero = np.zeros((), np.float32)
        return Value(self.g, self.g.const(zero).name, x.shape, fill=zero)

    def quantize_input(self, x: Value, q, bound):
        """``x_q = clip(round(x / q), -B/q, B/q) * q`` (Round is half-to-even, like numpy)."""
        lim = np.float32(bound / q)
        r = self.g.node("Round", [x / np.float32(q)], x.shape)
        c = self.g.node("Clip", [r, self.g.const(-lim), self.g.const(lim)], x.shape)
        return c * np.float32(q)

    def linear(self, x: Value, w: Value, b: Value):
        return self.g.node("Gemm", [x, w, b], (x.shape[0], w.shape[0]), transB=1)

    def conv(self, x: Value, w: Value, b: Value, stride, padding):
        o, _, k, _ = w.shape
        ho = (x.shape[2] + 2 * padding - k) // stride + 1
        wo = (x.shape[3] + 2 * padding - k) // stride + 1
        return self.g.node("Conv", [x, w, b], (x.shape[0], o, ho, wo), kernel_shape=[k, k],
                           strides=[stride, stride], pads=[padding] * 4)

    def sumpool(self, x: Value, k: int):
        """k x k sum pooling, stride k: crop to a multiple of k, reshape, ReduceSum."""
        bsz, c, h, w = x.shape
        if h % k or w % k:
            starts = self.g.const(np.asarray([0, 0], np.int64), np.int64)
            ends = self.g.const(np.asarray([h - h % k, w - w % k], np.int64), np.int64)
            axes = self.g.const(np.asarray([2, 3], np.int64), np.int64)
            x = self.g.node("Slice", [x, starts, ends, axes], (bsz, c, h - h % k, w - w % k))
        shape = self.g.const(np.asarray([0, c, h // k, k, w // k, k], np.int64), np.int64)
        r = self.g.node("Reshape", [x, shape], (bsz, c, h // k, k, w // k, k))
        axes = self.g.const(np.asarray([3, 5], np.int64), np.int64)
        return self.g.node("ReduceSum", [r, axes], (bsz, c, h // k, w // k), keepdims=0)

    def flatten(self, x: Value):
        n = int(np.prod(x.shape[1:]))
        return self.g.node("Flatten", [x], (x.shape[0], n), axis=1)

    def stack(self, xs: list, name: str) -> Value:
        """``[T, ...]`` from T values ``[...]`` (Unsqueeze + Concat)."""
        ax = self.g.const(np.asarray([0], np.int64), np.int64)
        ups = [self.g.node("Unsqueeze", [v, ax], (1,) + v.shape) for v in xs]
        return self.g.node("Concat", ups, (len(xs),) + xs[0].shape, name=name, axis=0)


def _dims(shape: tuple) -> list:
    return ["batch" if d is None else int(d) for d in shape]


def export_onnx(graph: DeployGraph, timesteps: int | None = None, frames: bool = False,
                with_spikes: bool = False, opset: int = OPSET, check: bool = True):
    """Build the ONNX ``ModelProto`` of ``graph`` unrolled over ``timesteps`` (default: trained T).

    ``frames=True`` takes ``[T, batch, *input_shape]`` frame sequences instead of a static image.
    Raises :class:`~lmh_deploy.errors.TimestepsError` for a T the model cannot run (DESIGN §1).
    """
    onnx = require("onnx", "onnx")
    from onnx import TensorProto, helper

    from lmh_deploy.graph.interpret import run_graph

    t = graph.check_timesteps(graph.timesteps if timesteps is None else timesteps)
    hints = {}
    for op in graph.ops:
        for k, a in op.arrays.items():
            if a is not None and a.size > 1:
                hints[id(a)] = f"{op.name}.{k}"
    g = GraphBuilder(hints)
    be = OnnxBackend(g)
    in_shape = ((t,) if frames else ()) + (None,) + tuple(graph.input_shape)
    x = Value(g, "input", in_shape)
    logits, spikes = run_graph(graph, x, be, t, record=with_spikes)
    out_logits = be.stack(logits, "logits")
    g.node("ReduceMean", [out_logits], out_logits.shape[1:], name="mean_logits", axes=[0],
           keepdims=0)
    outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, _dims(out_logits.shape)),
               helper.make_tensor_value_info("mean_logits", TensorProto.FLOAT,
                                             _dims(out_logits.shape[1:]))]
    spike_outputs = {}
    for name, vals in spikes.items():
        out = be.stack(vals, SPIKE_PREFIX + name)
        spike_outputs[name] = out.name
        outputs.append(helper.make_tensor_value_info(out.name, TensorProto.FLOAT, _dims(out.shape)))
    inputs = [helper.make_tensor_value_info("input", TensorProto.FLOAT, _dims(in_shape))]
    doc = ("Spiking network exported by lmh-deploy (time loop unrolled). Values between layers are "
           "spike counts; weights on an exact-sum power-of-two grid; input quantized as "
           "clip(round(x/q), -B/q, B/q)*q. Every synapse and residual sum is exact in float32, so "
           "onnxruntime's graph optimizations keep bit-exact spikes, except rewrites that fold "
           "a constant into weights or biases (ConvMulFusion, ConvAddFusion, MatMulScaleFusion).")
    gp = helper.make_graph(g.nodes, "lmh_deploy", inputs, outputs, g.initializers, doc_string=doc)
    model = helper.make_model(gp, opset_imports=[helper.make_opsetid("", opset)],
                              producer_name=PRODUCER, doc_string=doc)
    model.ir_version = min(model.ir_version, 9)  # readable by onnxruntime >= 1.16
    meta = {
        key.TIMESTEPS: str(t),
        key.TRAINED_TIMESTEPS: str(graph.timesteps),
        key.INPUT_LAYOUT: "TBCHW" if frames else "BCHW",
        key.INPUT_SHAPE: json.dumps(list(graph.input_shape)),
        key.NUM_CLASSES: str(graph.num_classes),
        key.INPUT_QUANTUM: repr(graph.input_quantum),
        key.INPUT_BOUND: repr(graph.input_bound),
        key.INPUT_NORM: json.dumps(graph.meta.get("input_norm")),
        key.LEVELS: str(graph.levels),
        key.TIME_INVARIANT: str(graph.time_invariant).lower(),
        key.OMEGA_PERIOD: str(graph.omega_period or 0),
        key.NEURONS: json.dumps({n: graph.neuron(n).source_kind for n in graph.neuron_names()}),
        key.SPIKE_OUTPUTS: json.dumps(spike_outputs),
        key.SOURCE_CONFIG: json.dumps(graph.meta.get("source_config", {}), default=str),
        "lmh.dataset": str(graph.meta.get("dataset") or ""),  # what lmh-run etc. default to
    }
    helper.set_model_props(model, meta)
    if check:
        onnx.checker.check_model(model, full_check=True)
    return model


def write_onnx(graph: DeployGraph, path, timesteps: int | None = None, frames: bool = False,
               with_spikes: bool = False) -> None:
    """Writer of ``lmh-export --format onnx``: export and save to ``path`` (the caller makes the
    write atomic)."""
    onnx = require("onnx", "onnx")
    model = export_onnx(graph, timesteps=timesteps, frames=frames, with_spikes=with_spikes)
    onnx.save_model(model, str(path))
