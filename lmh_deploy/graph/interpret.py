"""Execute a :class:`DeployGraph` layer by layer over the whole time axis.

One interpreter, several array back-ends: :class:`NumpyBackend` is the reference (the ground
truth every runtime is checked against), :class:`TorchBackend` is the torch runtime, and the ONNX
exporter plugs in a symbolic back-end that records graph nodes instead of computing. Neurons run
the shared step functions of :mod:`lmh_deploy.neuron_math`.

Values are lists of per-step arrays (length T). A static input (direct encoding) is the same
array object at every step; stateless ops are evaluated once per distinct object, so the first
layer of a static-input network is computed once.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lmh_deploy import neuron_math as nm
from lmh_deploy import timeloop as tl
from lmh_deploy.graph.schema import DeployGraph, NeuronSpec
from lmh_deploy.ops import NumpyOps


@dataclass
class GraphRun:
    """Result of a run: per-step logits ``[T, B, K]`` and each neuron's spike counts ``[T, B, ...]``."""

    logits: object
    spikes: dict

    @property
    def mean_logits(self):
        return self.logits.mean(0)


def _map_steps(fn, xs):
    cache = {}
    out = []
    for x in xs:
        k = id(x)
        if k not in cache:
            cache[k] = fn(x)
        out.append(cache[k])
    return out


def _param_at(backend, arr: np.ndarray, t: int, ndim: int):
    """Row :func:`~lmh_deploy.timeloop.param_row` of a [P, C] table as a back-end constant
    broadcastable to [B, C, ...] (held at the last step beyond P)."""
    row = arr[tl.param_row(t, arr.shape[0])]
    if row.shape[0] == 1:
        return backend.const(np.asarray(row[0], np.float32))
    return backend.const(row.reshape((row.shape[0],) + (1,) * (ndim - 2)).astype(np.float32))


def run_neuron(backend, spec: NeuronSpec, xs: list, ndim: int) -> list:
    """Spike counts of one neuron layer for the per-step input currents ``xs`` (the time loop of
    :mod:`lmh_deploy.timeloop`)."""
    ops = backend.ops
    theta = backend.const(np.asarray(spec.theta, np.float32))
    zeros = backend.zeros_like(xs[0])
    v0 = backend.const(np.asarray(spec.v0, np.float32))
    if spec.model == "lmh":
        def lmh_params(t):
            return nm.LMHParams(*(_param_at(backend, spec.params[k], t, ndim)
                                  for k in ("mu_d", "mu_s", "lam_s", "lam_d")), theta=theta)

        return tl.run_lmh(ops, xs, lmh_params, (zeros, zeros + v0))[0]
    if spec.model == "lmht":
        rows = tl.omega_rows(spec.omega, lambda w: backend.const(np.asarray(w, np.float32)))

        def lmht_params(t):
            return nm.LMHTParams(lam=_param_at(backend, spec.params["lam"], t, ndim), theta=theta,
                                 levels=spec.levels)

        return tl.run_lmht(ops, list(xs), lmht_params, zeros + v0, rows)[0]
    raise ValueError(f"unknown neuron model {spec.model!r}")


def run_graph(graph: DeployGraph, x, backend, timesteps: int | None = None, record: bool = True):
    """Run ``graph`` on ``x`` (static ``[B, *input_shape]`` or frames ``[T, B, *input_shape]``).

    Returns ``(logits_per_step: list, spikes: dict name -> list)`` in back-end arrays.
    """
    nd = len(graph.input_shape)
    if backend.ndim(x) == nd + 1:
        t_run = graph.check_timesteps(timesteps or graph.timesteps)
        xq = backend.quantize_input(x, graph.input_quantum, graph.input_bound)
        xs = [xq] * t_run
    elif backend.ndim(x) == nd + 2:
        t_run = graph.check_timesteps(backend.length(x))
        if timesteps is not None and timesteps != t_run:
            from lmh_deploy.errors import TimestepsError

            raise TimestepsError(f"input has {t_run} frames but timesteps={timesteps} was asked")
        xs = [backend.quantize_input(backend.step(x, t), graph.input_quantum, graph.input_bound)
              for t in range(t_run)]
    else:
        raise ValueError(f"expected input [B, {', '.join(map(str, graph.input_shape))}] or "
                         f"[T, B, ...]; got {backend.ndim(x)} dimensions")
    shapes = graph.shapes()
    vals = {"input": xs}
    spikes = {}
    for op in graph.ops:
        ins = [vals[i] for i in op.inputs]
        if op.kind == "synapse":
            w = backend.const(op.arrays["weight"])
            b = backend.const(op.arrays["bias"])
            if op.attrs["op"] == "conv":
                st, pd = op.attrs["stride"], op.attrs["padding"]
                y = _map_steps(lambda a: backend.conv(a, w, b, st, pd), ins[0])
            else:
                y = _map_steps(lambda a: backend.linear(a, w, b), ins[0])
        elif op.kind == "neuron":
            y = run_neuron(backend, graph.neuron(op.name), ins[0], len(shapes[op.name]) + 1)
            if record:
                spikes[op.name] = y
        elif op.kind == "add" and op.attrs.get("split"):
            # hi + lo of a split synapse as hi - (-lo): the same float32 rounding (IEEE x - (-y)
            # is x + y), but no graph optimizer fuses a Sub into a convolution's accumulator
            # (onnxruntime's NCHWc transform would sum lo's products onto hi: other bits)
            y = [a - (-c) for a, c in zip(ins[0], ins[1])]
        elif op.kind == "add":
            y = [a + c for a, c in zip(ins[0], ins[1])]
        elif op.kind == "scale":
            f = backend.const(op.arrays["factor"])
            y = _map_steps(lambda a: a * f, ins[0])
        elif op.kind == "sumpool":
            k = op.attrs["kernel"]
            y = _map_steps(lambda a: backend.sumpool(a, k), ins[0])
        elif op.kind == "flatten":
            y = _map_steps(backend.flatten, ins[0])
        else:
            raise ValueError(f"unknown op kind {op.kind!r} ({op.name})")
        vals[op.name] = y
    return vals[graph.output], spikes


# ---------------------------------------------------------------------------------------------
# back-ends
# ---------------------------------------------------------------------------------------------


class NumpyBackend:
    """float32 numpy: the reference interpreter."""

    ops = NumpyOps

    @staticmethod
    def const(a):
        return np.asarray(a, dtype=np.float32)

    @staticmethod
    def ndim(x):
        return np.ndim(x)

    @staticmethod
    def length(x):
        return len(x)

    @staticmethod
    def step(x, t):
        return np.asarray(x[t], dtype=np.float32)

    @staticmethod
    def zeros_like(x):
        return np.zeros_like(x, dtype=np.float32)

    @staticmethod
    def quantize_input(x, q, bound):
        """``x_q = clip(round(x / q), -bound/q, bound/q) * q`` (round half to even)."""
        x = np.asarray(x, dtype=np.float32)
        lim = np.float32(bound / q)
        return (np.clip(np.round(x / np.float32(q)), -lim, lim) * np.float32(q)).astype(np.float32)

    @staticmethod
    def linear(x, w, b):
        return (x @ w.T + b).astype(np.float32)

    @staticmethod
    def conv(x, w, b, stride, padding):
        """2-D convolution (cross-correlation) by im2col + matmul."""
        o, c, k, _ = w.shape
        if padding:
            x = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
        win = np.lib.stride_tricks.sliding_window_view(x, (k, k), axis=(2, 3))
        win = win[:, :, ::stride, ::stride]  # [B, C, Ho, Wo, k, k]
        bsz, _, ho, wo = win.shape[:4]
        cols = win.transpose(0, 2, 3, 1, 4, 5).reshape(bsz * ho * wo, c * k * k)
        y = cols @ w.reshape(o, -1).T + b
        return np.ascontiguousarray(y.reshape(bsz, ho, wo, o).transpose(0, 3, 1, 2)).astype(np.float32)

    @staticmethod
    def sumpool(x, k):
        bsz, c, h, w = x.shape
        return x[:, :, : h - h % k, : w - w % k].reshape(bsz, c, h // k, k, w // k, k).sum((3, 5))

    @staticmethod
    def flatten(x):
        return x.reshape(x.shape[0], -1)


class TorchBackend:
    """torch (no autograd): the torch runtime of a DeployGraph."""

    def __init__(self, device="cpu"):
        import torch

        from lmh_deploy.ops import TorchOps

        self.torch = torch
        self.ops = TorchOps
        self.device = torch.device(device)

    def const(self, a):
        return self.torch.as_tensor(np.asarray(a, np.float32), device=self.device)

    def ndim(self, x):
        return x.dim() if hasattr(x, "dim") else np.ndim(x)

    def length(self, x):
        return x.shape[0]

    def step(self, x, t):
        return self.const(x[t]) if not hasattr(x, "dim") else x[t].to(self.device, self.torch.float32)

    def zeros_like(self, x):
        return self.torch.zeros_like(x)

    def quantize_input(self, x, q, bound):
        x = self.torch.as_tensor(x, dtype=self.torch.float32, device=self.device)
        lim = float(np.float32(bound / q))
        return self.torch.clamp(self.torch.round(x / float(q)), -lim, lim) * float(q)

    def linear(self, x, w, b):
        return self.torch.nn.functional.linear(x, w, b)

    def conv(self, x, w, b, stride, padding):
        return self.torch.nn.functional.conv2d(x, w, b, stride=stride, padding=padding)

    def sumpool(self, x, k):
        bsz, c, h, w = x.shape
        return x[:, :, : h - h % k, : w - w % k].reshape(bsz, c, h // k, k, w // k, k).sum((3, 5))

    def flatten(self, x):
        return x.reshape(x.shape[0], -1)


def run_reference(graph: DeployGraph, x, timesteps: int | None = None) -> GraphRun:
    """The ground truth: numpy float32. Returns logits [T, B, K] and spikes {name: [T, B, ...]}."""
    logits, spikes = run_graph(graph, x, NumpyBackend, timesteps)
    return GraphRun(np.stack(logits), {k: np.stack(v) for k, v in spikes.items()})


def run_torch(graph: DeployGraph, x, timesteps: int | None = None, device="cpu") -> GraphRun:
    """The torch runtime of a DeployGraph (numpy arrays out)."""
    import torch

    be = TorchBackend(device)
    with torch.no_grad():
        logits, spikes = run_graph(graph, x, be, timesteps)
        return GraphRun(torch.stack(logits).cpu().numpy(),
                        {k: torch.stack(v).cpu().numpy() for k, v in spikes.items()})
