"""The DeployGraph: a trained network folded into plain numpy arrays (DESIGN §2).

Every exporter (ONNX, NIR) and every runtime (reference, torch, onnxruntime, NIR, Lava) starts
from this object, never from torch modules. It is produced once by :func:`lmh_deploy.graph.fold.fold`.

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
  ``u = (p - pixel_mean_c) / 256``, not the normalized image; :func:`lmh_deploy.graph.inputs.raw_input` converts.
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


def check_timesteps(timesteps, period: int | None = None) -> int:
    """``timesteps`` as an int when it is a positive integer and (LM-HT with a learned Omega of
    window ``period``) a multiple of ``period``; else :class:`~lmh_deploy.errors.TimestepsError`.
    The one check every runtime and file handle uses (DESIGN §1)."""
    from lmh_deploy.errors import TimestepsError

    if not isinstance(timesteps, (int, np.integer)) or timesteps < 1:
        raise TimestepsError(f"timesteps must be a positive integer, got {timesteps!r}")
    if period and timesteps % period:
        raise TimestepsError(
            f"this LM-HT model was trained with T={period}; its Omega runs per window, so "
            f"T' must be a multiple of {period} (e.g. {period}, {2 * period}), not {timesteps}")
    return int(timesteps)


@dataclass
class NeuronSpec:
    """Typed view of a ``neuron`` op.

    LM-H (``model == "lmh"``; arrays ``mu_d, mu_s, lam_s, lam_d`` of shape [P, C])::

        v_D[t] = mu_D v_D[t-1] + mu_S v_S[t-1] + I[t];  m_S[t] = lam_S v_S[t-1] + lam_D v_D[t]
        s[t] = [m_S[t] >= theta];  v_S[t] = m_S[t] - theta s[t];  v_D(0) = 0, v_S(0) = theta/2

    LM-HT (``model == "lmht"``; arrays ``lam`` [P, C] and ``omega`` [T, T] or absent for I)::

        I[t] = sum_j Omega[t, j] x[j];  m[t] = lam v[t-1] + I[t]
        s[t] = #{k in 1..L : m[t] >= fl(k theta)};  v[t] = m[t] - theta s[t];  v(0) = v0

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
class Layer:
    """One layer of a layer chain (:meth:`DeployGraph.layer_chain`): a ``synapse`` op
    (``I = W s + b``; ``weight`` [out, in] or [out, in, k, k]) then ``neuron`` (a
    :class:`NeuronSpec`; None for the readout). ``flatten_before``: the input is flattened first.
    The one layer type of every runtime that builds its own network (NIR reader, Lava)."""

    name: str
    synapse: DeployOp
    neuron: NeuronSpec | None = None
    flatten_before: bool = False

    @classmethod
    def linear(cls, weight, bias, neuron: NeuronSpec | None = None, name: str = "") -> "Layer":
        """A fully connected layer ``I = weight @ s + bias`` (weight [out, in], bias [out])."""
        syn = DeployOp(name, "synapse", ("input",), {"weight": weight, "bias": bias}, {"op": "linear"})
        return cls(name, syn, neuron, False)

    weight = property(lambda self: self.synapse.arrays["weight"],
                      lambda self, v: self.synapse.arrays.__setitem__("weight", v),
                      doc="the synapse weight [out, in] (or [out, in, k, k])")
    bias = property(lambda self: self.synapse.arrays["bias"],
                    lambda self, v: self.synapse.arrays.__setitem__("bias", v),
                    doc="the synapse bias [out]")

    @property
    def weight64(self) -> np.ndarray:
        """The deployed weight in float64: ``weight + weight_lo`` for a split synapse (exact in
        float64). A runtime that sums ``weight64 @ s`` in float64 and adds the bias before one
        rounding to float32 reproduces the reference's ``fl32(hi + lo)``."""
        w = np.asarray(self.synapse.arrays["weight"], np.float64)
        lo = self.synapse.arrays.get("weight_lo")
        return w if lo is None else w + np.asarray(lo, np.float64)

    @property
    def bias64(self) -> np.ndarray:
        """The deployed bias in float64: ``bias + bias_lo`` for a split synapse (exact in
        float64; add it to ``weight64 @ s`` before the one rounding to float32)."""
        b = np.asarray(self.synapse.arrays["bias"], np.float64)
        lo = self.synapse.arrays.get("bias_lo")
        return b if lo is None else b + np.asarray(lo, np.float64)

    @property
    def op(self) -> str:
        """"linear" or "conv"."""
        return self.synapse.attrs.get("op", "linear")

    @property
    def stride(self) -> int:
        return int(self.synapse.attrs.get("stride", 1))

    @property
    def padding(self) -> int:
        return int(self.synapse.attrs.get("padding", 0))


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

    def neuron_names(self) -> list:
        return [o.name for o in self.ops if o.kind == "neuron"]

    def neuron(self, name: str) -> NeuronSpec:
        return spec_of(self.op(name))

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
        return check_timesteps(timesteps, self.omega_period)

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

    def layer_chain(self) -> list:
        """The graph as a plain layer chain ``[flatten] synapse neuron ... synapse (readout)``:
        a list of :class:`Layer` (named after the neuron op; the readout after its synapse).
        A split synapse (``<s>_hi``, ``<s>_lo``, ``add`` ``<s>``) is one layer named ``<s>``
        whose synapse carries ``weight`` / ``bias`` (hi) and ``weight_lo`` / ``bias_lo``,
        attrs["split"] True (:attr:`Layer.weight64`, :attr:`Layer.bias64`: their exact sums). Graphs that are not such a chain (residual
        adds, pools, ...) raise :class:`~lmh_deploy.errors.UnsupportedModelError` naming the op."""
        from lmh_deploy.errors import UnsupportedModelError

        layers, pending, flat, prev = [], None, False, "input"
        ops, i = list(self.ops), 0
        while i < len(ops):
            op = ops[i]
            if (op.kind == "synapse" and op.attrs.get("part") == "hi" and i + 2 < len(ops)
                    and ops[i + 1].attrs.get("part") == "lo" and ops[i + 2].kind == "add"
                    and ops[i + 2].inputs == (op.name, ops[i + 1].name)
                    and ops[i + 1].inputs == op.inputs):
                lo, add = ops[i + 1], ops[i + 2]
                attrs = {k: v for k, v in op.attrs.items() if k != "part"}
                op = DeployOp(add.name, "synapse", op.inputs,
                              {"weight": op.arrays["weight"], "weight_lo": lo.arrays["weight"],
                               "bias": op.arrays["bias"], "bias_lo": lo.arrays["bias"]},
                              dict(attrs, split=True))
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
                layers.append(Layer(op.name, pending, self.neuron(op.name), flat))
                pending, flat = None, False
            else:
                raise UnsupportedModelError(f"op {op.name!r} of kind {op.kind!r}: only layer "
                                            f"chains of synapses and neurons run here")
            prev = op.name
        if pending is None or pending.name != self.output:
            raise UnsupportedModelError(f"the graph output {self.output!r} must be the last "
                                        f"synapse of the chain (the readout)")
        layers.append(Layer(pending.name, pending, None, flat))
        return layers

    def weight_bytes(self) -> int:
        return sum(a.nbytes for o in self.ops for a in o.arrays.values() if a is not None)


# ---------------------------------------------------------------------------------------------
# the one serializer: DeployGraph <-> (JSON-able dict, {key: float32 array})
# ---------------------------------------------------------------------------------------------


def _plain(v):
    if isinstance(v, np.ndarray):
        return v.astype(np.float64).tolist()
    if isinstance(v, np.floating):
        return float(v)
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, (list, tuple)):
        return [_plain(a) for a in v]
    return v


def op_to_dict(op: DeployOp, arrays: dict | None) -> dict:
    """One op as JSON. With ``arrays`` (a dict) the op's arrays go there under ``"<op>.<key>"``
    (float32, exact); with None they are written inline as float64 lists (exact for float32)."""
    d = {"name": op.name, "kind": op.kind, "inputs": list(op.inputs),
         "attrs": {k: _plain(v) for k, v in op.attrs.items()}}
    present = {k: v for k, v in op.arrays.items() if v is not None}
    if arrays is None:
        d["arrays"] = {k: _plain(v) for k, v in present.items()}
    else:
        d["array_keys"] = sorted(present)
        for k, v in present.items():
            arrays[f"{op.name}.{k}"] = np.asarray(v, np.float32)
    return d


def op_from_dict(d: dict, arrays: dict | None = None) -> DeployOp:
    """Inverse of :func:`op_to_dict` (``arrays``: the dict it filled, or any mapping)."""
    attrs = dict(d["attrs"])
    if d["kind"] == "neuron":
        attrs["theta"], attrs["v0"] = np.float32(attrs["theta"]), np.float32(attrs["v0"])
    out = {k: np.asarray(v, np.float32) for k, v in d.get("arrays", {}).items()}
    for k in d.get("array_keys", ()):
        out[k] = np.asarray(arrays[f"{d['name']}.{k}"], np.float32)
    return DeployOp(d["name"], d["kind"], tuple(d["inputs"]), out, attrs)


def to_dict(graph: DeployGraph, arrays: dict | None = None, skip_kinds: tuple = ()) -> dict:
    """``graph`` as a JSON-able dict: structure, attributes and (see :func:`op_to_dict`) arrays.
    Ops of a kind in ``skip_kinds`` carry no arrays (the caller stores them elsewhere, e.g. the
    synapse weights in NIR nodes). Inverse: :func:`from_dict`."""
    ops = []
    for o in graph.ops:
        if o.kind in skip_kinds:
            o = DeployOp(o.name, o.kind, o.inputs, {}, o.attrs)
        ops.append(op_to_dict(o, arrays))
    d = {"ops": ops, "output": graph.output, "timesteps": graph.timesteps,
         "input_shape": list(graph.input_shape), "num_classes": graph.num_classes,
         "input_quantum": graph.input_quantum, "input_bound": graph.input_bound}
    if graph.meta.get("input_norm"):
        d["input_norm"] = graph.meta["input_norm"]
    return d


def from_dict(d: dict, arrays: dict | None = None, meta: dict | None = None) -> DeployGraph:
    """Inverse of :func:`to_dict`; ``arrays`` supplies the arrays written out of line."""
    meta = dict(meta or {})
    if d.get("input_norm"):
        meta["input_norm"] = d["input_norm"]
    return DeployGraph(ops=[op_from_dict(o, arrays) for o in d["ops"]], output=d["output"],
                       timesteps=int(d["timesteps"]), input_shape=tuple(d["input_shape"]),
                       num_classes=int(d["num_classes"]), input_quantum=float(d["input_quantum"]),
                       input_bound=float(d["input_bound"]), meta=meta)


def neuron_op(name: str, spec: NeuronSpec, inputs: tuple = ("input",)) -> DeployOp:
    """The ``neuron`` op of ``spec`` (inverse of :meth:`DeployGraph.neuron`)."""
    arrays = dict(spec.params)
    if spec.omega is not None:
        arrays["omega"] = spec.omega
    return DeployOp(name, "neuron", inputs, arrays,
                    {"model": spec.model, "source_kind": spec.source_kind, "theta": spec.theta,
                     "levels": int(spec.levels), "v0": spec.v0})


def spec_of(op: DeployOp) -> NeuronSpec:
    """The :class:`NeuronSpec` of a ``neuron`` op."""
    a = op.attrs
    params = {k: v for k, v in op.arrays.items() if k != "omega"}
    return NeuronSpec(model=a["model"], source_kind=a["source_kind"],
                      theta=np.float32(a["theta"]), levels=int(a["levels"]),
                      v0=np.float32(a["v0"]), params=params, omega=op.arrays.get("omega"))


def layers_to_dict(layers, arrays: dict) -> list:
    """A layer chain as JSON (arrays into ``arrays``): each layer its synapse op and neuron op."""
    return [{"name": L.name, "flatten_before": bool(L.flatten_before),
             "synapse": op_to_dict(DeployOp(f"{i}.syn", "synapse", L.synapse.inputs,
                                            L.synapse.arrays, L.synapse.attrs), arrays),
             "neuron": None if L.neuron is None else
             op_to_dict(neuron_op(f"{i}.neuron", L.neuron), arrays)}
            for i, L in enumerate(layers)]


def layers_from_dict(d: list, arrays: dict) -> list:
    """Inverse of :func:`layers_to_dict`."""
    out = []
    for e in d:
        syn = op_from_dict(e["synapse"], arrays)
        syn.name = e["name"]
        spec = None if e["neuron"] is None else spec_of(op_from_dict(e["neuron"], arrays))
        out.append(Layer(e["name"], syn, spec, bool(e["flatten_before"])))
    return out

