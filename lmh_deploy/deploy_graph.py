"""The DeployGraph: a trained network folded into plain numpy arrays (DESIGN §2).

Every exporter (ONNX, NIR) and every runtime (reference, torch, onnxruntime, NIR, Lava) starts
from this object, never from torch modules. It is produced once by :func:`lmh_deploy.fold.fold`.

Conventions
-----------
* Values between layers are spike **counts** (0/1, or 0..L): each neuron's threshold theta has
  been folded into the weights of the layers that read it.
* Synapse weights and biases lie on a power-of-two grid chosen per layer so that every partial
  sum of a convolution / matrix product is exactly representable in float32 ("exact-sum grid").
  Summation order then cannot change a result, so every runtime computes bit-identical currents
  and therefore identical spikes. The input is rounded to ``input_quantum`` and clipped to
  ``±input_bound`` (a fixed-point sensor input) by every runtime.
* A synapse fed by a fine analog grid (the first layer) would get coarse weights on one grid;
  the fold splits every synapse into ``<name>_hi`` (bias included) and ``<name>_lo`` synapses on
  two exact grids (attrs["part"]) joined by an ``add`` named ``<name>``: two exact partial sums,
  one float32 addition, identical in every runtime (:meth:`DeployGraph.synapse_weights` gives
  the combined weight).
* ``meta["input_norm"]`` (normalized image data sets): the graph's input is the raw pixel
  ``u = (p - pixel_mean_c) / 256``, not the normalized image; :func:`raw_input` converts.
* Op kinds (``DeployOp.kind``), each reading the named values in ``inputs``:

  ``synapse``  ``y = conv2d(x, W, stride, padding) + b`` or ``y = x @ W.T + b`` (attrs["op"]
               is "conv" or "linear"); BN, theta of the input and average-pool factors folded.
  ``neuron``   spiking layer; attrs["model"] is "lmh" (LM-H; LIF and radical LM-H included) or
               "lmht" (M-HT / LM-HT). See :class:`NeuronSpec`.
  ``add``      ``y = a + b`` (residual currents; with attrs["split"] the one float32 addition
               joining a split synapse's ``<name>_hi`` and ``<name>_lo`` partial sums).
  ``scale``    ``y = f * x`` (identity shortcut carrying theta * counts), arrays["factor"].
  ``sumpool``  ``k x k`` sum pooling, stride k (the 1/k^2 is folded into the next synapse).
  ``flatten``  ``[B, C, H, W] -> [B, C*H*W]``.

The graph input is named ``"input"``; ``output`` names the readout synapse (per-step logits).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

OP_KINDS = ("synapse", "neuron", "add", "scale", "sumpool", "flatten")


@dataclass
class DeployOp:
    name: str
    kind: str
    inputs: tuple
    arrays: dict = field(default_factory=dict)
    attrs: dict = field(default_factory=dict)


@dataclass
class NeuronSpec:
    """Typed view of a ``neuron`` op.

    LM-H (``model == "lmh"``; arrays ``mu_d, mu_s, lam_s, lam_d`` of shape [P, C])::

        v_D[t] = mu_D v_D[t-1] + mu_S v_S[t-1] + I[t];  m_S[t] = lam_S v_S[t-1] + lam_D v_D[t]
        s[t] = [m_S[t] >= theta];  v_S[t] = m_S[t] - theta s[t];  v_D(0) = 0, v_S(0) = theta/2

    LM-HT (``model == "lmht"``; arrays ``lam`` [P, C] and ``omega`` [T, T] or absent for I)::

        I[t] = sum_j Omega[t, j] x[j];  m[t] = lam v[t-1] + I[t]
        s[t] = clip(floor(m[t]/theta), 0, L);  v[t] = m[t] - theta s[t];  v(0) = v0

    P = 1 (time-invariant) or the trained T (per-step; held at the last step beyond T).
    C = 1 (per-layer) or the channel count.
    """

    model: str
    source_kind: str
    theta: np.float32
    levels: int
    v0: np.float32
    params: dict
    omega: np.ndarray | None

    @property
    def time_invariant(self) -> bool:
        """True when the neuron's constants do not depend on t (streamable at any T)."""
        per_step = any(a.shape[0] > 1 for a in self.params.values())
        return not per_step and self.omega is None


@dataclass
class ChainLayer:
    """One layer of :meth:`DeployGraph.layer_chain`: ``synapse`` (a DeployOp), then ``neuron``
    (a NeuronSpec; None for the readout); ``flatten_before``: its input is flattened first."""

    name: str
    synapse: DeployOp
    neuron: NeuronSpec | None
    flatten_before: bool


@dataclass
class DeployGraph:
    ops: list
    output: str
    timesteps: int
    input_shape: tuple
    num_classes: int
    input_quantum: float
    input_bound: float
    meta: dict = field(default_factory=dict)

    # ---------------------------------------------------------------------------------------
    def op(self, name: str) -> DeployOp:
        for o in self.ops:
            if o.name == name:
                return o
        raise KeyError(f"no op named {name!r} in the DeployGraph")

    def synapse_weights(self, name: str) -> tuple:
        """The deployed weight and bias of synapse ``name`` as float64: ``w_hi + w_lo`` (exact)
        for a split synapse (an ``add`` of ``<name>_hi`` and ``<name>_lo``), else its own."""
        o = self.op(name)
        if o.kind == "add" and o.attrs.get("split"):
            hi, lo = self.op(o.inputs[0]), self.op(o.inputs[1])
            return (hi.arrays["weight"].astype(np.float64) + lo.arrays["weight"].astype(np.float64),
                    hi.arrays["bias"].astype(np.float64) + lo.arrays["bias"].astype(np.float64))
        if o.kind != "synapse":
            raise KeyError(f"{name!r} is a {o.kind} op, not a synapse")
        return o.arrays["weight"].astype(np.float64), o.arrays["bias"].astype(np.float64)

    def neuron_names(self) -> list:
        return [o.name for o in self.ops if o.kind == "neuron"]

    def neuron(self, name: str) -> NeuronSpec:
        o = self.op(name)
        a = o.attrs
        params = {k: v for k, v in o.arrays.items() if k != "omega"}
        return NeuronSpec(model=a["model"], source_kind=a["source_kind"],
                          theta=np.float32(a["theta"]), levels=int(a["levels"]),
                          v0=np.float32(a["v0"]), params=params, omega=o.arrays.get("omega"))

    @property
    def levels(self) -> int:
        """Largest spike count any neuron can emit (1 for binary networks)."""
        return max([int(o.attrs["levels"]) for o in self.ops if o.kind == "neuron"] or [1])

    @property
    def time_invariant(self) -> bool:
        """True when no neuron has per-step constants or a non-identity Omega."""
        return all(self.neuron(n).time_invariant for n in self.neuron_names())

    @property
    def omega_period(self) -> int | None:
        """The window length T an LM-HT Omega imposes (runs need T' = k*T), else None."""
        for n in self.neuron_names():
            om = self.neuron(n).omega
            if om is not None:
                return int(om.shape[0])
        return None

    def check_timesteps(self, timesteps: int) -> int:
        """Validate a requested number of steps (DESIGN §1) and return it."""
        from .errors import TimestepsError

        if not isinstance(timesteps, (int, np.integer)) or timesteps < 1:
            raise TimestepsError(f"timesteps must be a positive integer, got {timesteps!r}")
        period = self.omega_period
        if period is not None and timesteps % period:
            raise TimestepsError(
                f"this LM-HT model was trained with T={period}; its Omega runs per window, so "
                f"T' must be a multiple of {period} (e.g. {period}, {2 * period}), not {timesteps}")
        return int(timesteps)

    def shapes(self) -> dict:
        """Per-sample shape of every value (``"input"`` and each op), by shape inference."""
        shp = {"input": tuple(self.input_shape)}
        for o in self.ops:
            x = shp[o.inputs[0]]
            if o.kind == "synapse" and o.attrs["op"] == "conv":
                w = o.arrays["weight"]
                k, s, p = w.shape[-1], o.attrs["stride"], o.attrs["padding"]
                shp[o.name] = (w.shape[0], (x[1] + 2 * p - k) // s + 1, (x[2] + 2 * p - k) // s + 1)
            elif o.kind == "synapse":
                shp[o.name] = (o.arrays["weight"].shape[0],)
            elif o.kind == "sumpool":
                k = o.attrs["kernel"]
                shp[o.name] = (x[0], x[1] // k, x[2] // k)
            elif o.kind == "flatten":
                shp[o.name] = (int(np.prod(x)),)
            else:
                shp[o.name] = x
        return shp

    def layer_chain(self) -> list:
        """The graph as a plain layer chain ``[flatten] synapse neuron ... synapse (readout)``:
        a list of :class:`ChainLayer` (named after the neuron op; the readout after its synapse).
        A split synapse (``<s>_hi``, ``<s>_lo``, ``add`` ``<s>``) is one layer whose synapse has
        the float64 weight ``w_hi + w_lo`` (exact in float64; a runtime summing in float64 and
        adding the bias before rounding to float32 reproduces ``fl32(hi + lo)``) and
        ``attrs["split"] = True``. Graphs that are not such a chain (residual adds, pools, ...)
        raise :class:`~lmh_deploy.errors.UnsupportedModelError` naming the op."""
        from .errors import UnsupportedModelError

        layers, pending, flat, prev = [], None, False, "input"
        ops = list(self.ops)
        i = 0
        while i < len(ops):
            op = ops[i]
            if (op.kind == "synapse" and op.attrs.get("part") == "hi" and i + 2 < len(ops)
                    and ops[i + 1].attrs.get("part") == "lo" and ops[i + 2].kind == "add"
                    and ops[i + 2].inputs == (op.name, ops[i + 1].name)
                    and ops[i + 1].inputs == op.inputs):
                lo, add = ops[i + 1], ops[i + 2]
                w = op.arrays["weight"].astype(np.float64) + lo.arrays["weight"].astype(np.float64)
                attrs = {k: v for k, v in op.attrs.items() if k != "part"}
                op = DeployOp(add.name, "synapse", op.inputs,
                              {"weight": w, "bias": op.arrays["bias"]}, dict(attrs, split=True))
                i += 2
            i += 1
            if op.inputs != (prev,):
                raise UnsupportedModelError(f"op {op.name!r} reads {list(op.inputs)}: only layer "
                                            f"chains (no residual adds) run here")
            if op.kind == "flatten":
                flat = True
            elif op.kind == "synapse":
                if pending is not None:
                    raise UnsupportedModelError(f"op {op.name!r}: two synapses in a row")
                pending = op
            elif op.kind == "neuron":
                if pending is None:
                    raise UnsupportedModelError(f"op {op.name!r}: a neuron must follow a synapse")
                layers.append(ChainLayer(op.name, pending, self.neuron(op.name), flat))
                pending, flat = None, False
            else:
                raise UnsupportedModelError(f"op {op.name!r} of kind {op.kind!r}: only layer "
                                            f"chains of synapses and neurons run here")
            prev = op.name
        if pending is None or pending.name != self.output:
            raise UnsupportedModelError(f"the graph output {self.output!r} must be the last "
                                        f"synapse of the chain (the readout)")
        layers.append(ChainLayer(pending.name, pending, None, flat))
        return layers

    def weight_bytes(self) -> int:
        return sum(a.nbytes for o in self.ops for a in o.arrays.values() if a is not None)


def raw_input(x, input_norm: dict | None):
    """Normalized images ``x = (p / scale - mean_c) / std_c`` (float, ``[..., C, H, W]``) -> the
    raw pixels a graph with ``meta["input_norm"]`` takes: ``u = (p - pixel_mean_c) / 256``
    (float32, exact), p recovered as ``round((x std_c + mean_c) scale)`` clipped to 0..scale.
    ``input_norm`` None: ``x`` unchanged."""
    if not input_norm:
        return x
    x = np.asarray(x, np.float64)
    c = len(input_norm["mean"])
    shp = (c, 1, 1) if x.ndim >= 3 and x.shape[-3] == c else (-1,)
    mean = np.asarray(input_norm["mean"], np.float64).reshape(shp)
    std = np.asarray(input_norm["std"], np.float64).reshape(shp)
    s = float(input_norm.get("scale", 255.0))
    pix = np.asarray(input_norm["pixel_mean"], np.float64).reshape(shp)
    p = np.clip(np.round((x * std + mean) * s), 0, s)
    return ((p - pix) / 256.0).astype(np.float32)
