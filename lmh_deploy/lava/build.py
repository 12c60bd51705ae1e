"""Build the Lava process graph of a layered spiking network (lava-nc 0.10 on Python 3.11).

The builder takes a list of :class:`~lmh_deploy.graph.schema.Layer` (weight matrix, bias, neuron
spec); the NIR reader and the DeployGraph (:func:`layers_from_deploy_graph`) both produce it.

Process graph (one Lava run for the whole batch)::

    RingBuffer(input payload) -> Dense(W_1) -> neuron_1 -> Dense(W_2) -> neuron_2 -> ...
                                 -> Dense(W_K) -> RingBuffer sink (per-step readout currents)
    each neuron_l.s_out -> RingBuffer sink (spike record)

* Neurons are :mod:`lmh_deploy.lava.procs.lmh` (LM-H, LIF, radical LM-H) and
  :mod:`lmh_deploy.lava.procs.lmht` (multi-level; windowed when Omega != I) Processes whose
  ProcessModels call the shared step functions of :mod:`lmh_deploy.neuron_math` (numpy only).
  The synapse bias is added inside the neuron: ``I[t] = a_in[t] + b``; the readout bias on the host.
* **Latency / alignment.** Each Dense hop adds one step; a windowed (learned-Omega) neuron adds
  ``Tw - 1`` more (so ``Tw`` per layer with its Dense). Neuron l's first valid input arrives at
  ``offset_l = out_offset_{l-1} + 1`` (input at step 0); its spikes for sample b, step i appear at
  ``out_offset_l + b*T + i``. The readout is read at ``readout_offset = out_offset_last + 1``.
* **Batching.** Samples stream back to back, T steps each, in one run of ``B*T + readout_offset``
  steps; every neuron resets its state when its own step index within a sample is 0
  (:mod:`lmh_deploy.lava.schedule`), so results equal B separate runs.
* **Floating point** (``fixed_point=False``): Lava's ``floating_pt`` models; float32 neuron state,
  bit-identical to the numpy reference on the DeployGraph's exact-sum grid.
* **Fixed point** (``fixed_point=True``): Loihi-2-style (:mod:`lmh_deploy.lava.fixed_point`):
  Lava's bit-accurate Dense with 8-bit weights and a shared exponent, integer input payloads
  ``round(x / input_quantum)``, 12-bit decays/couplings/Omega, 24-bit state.

Running it: :mod:`lmh_deploy.lava.run`.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lmh_deploy.errors import LavaRuntimeError, UnsupportedModelError
from lmh_deploy.graph.schema import Layer

DEFAULT_WEIGHT_EXP = 6


def LavaLayer(weight, bias, neuron=None, name: str = "") -> Layer:
    """A fully connected layer for the Lava builder: ``I = W s + b`` (``weight`` [out, in],
    ``bias`` [out]; s: spike counts of the previous layer, or the input for the first layer),
    then ``neuron`` (a :class:`~lmh_deploy.graph.schema.NeuronSpec`), or ``None`` for the readout
    (which must be the last layer and only the last). Returns the one
    :class:`~lmh_deploy.graph.schema.Layer` type."""
    return Layer.linear(weight, bias, neuron, name)


# ----------------------------------------------------------------------------------------------
# validation and parameter layout
# ----------------------------------------------------------------------------------------------


def _layer_name(layer: Layer, idx: int) -> str:
    return layer.name or f"layer{idx}"


def validate_layers(layers) -> list:
    """Check shapes and kinds; returns the list. Raises :class:`LavaRuntimeError`."""
    layers = list(layers)
    if not layers:
        raise LavaRuntimeError("no layers given; pass at least a readout layer")
    prev = None
    for i, L in enumerate(layers):
        name = _layer_name(L, i)
        w = np.asarray(L.weight)
        if w.ndim != 2:
            raise LavaRuntimeError(f"{name}: weight must be a 2-D [out, in] matrix, got shape "
                                   f"{w.shape}; flatten conv layers before building")
        if np.asarray(L.bias).shape != (w.shape[0],):
            raise LavaRuntimeError(f"{name}: bias shape {np.asarray(L.bias).shape} does not match "
                                   f"{w.shape[0]} outputs")
        if prev is not None and w.shape[1] != prev:
            raise LavaRuntimeError(f"{name}: weight has {w.shape[1]} inputs but the previous layer "
                                   f"has {prev} neurons")
        last = i == len(layers) - 1
        if last and L.neuron is not None:
            raise LavaRuntimeError(f"{name}: the last layer must be the readout (neuron=None)")
        if not last and L.neuron is None:
            raise LavaRuntimeError(f"{name}: only the last layer may be a readout; give it a neuron")
        if L.neuron is not None and L.neuron.model not in ("lmh", "lmht"):
            raise LavaRuntimeError(f"{name}: unknown neuron model {L.neuron.model!r} "
                                   "(expected 'lmh' or 'lmht')")
        prev = w.shape[0]
    return layers


def expand_table(table, n: int, name: str) -> np.ndarray:
    """A parameter table [P, C] -> [P, N]: C = 1 broadcasts, C = N is kept, C | N repeats each
    channel N/C times (channel-major flattening of [C, H, W])."""
    a = np.asarray(table, dtype=np.float32)
    if a.ndim == 0:
        a = a.reshape(1, 1)
    elif a.ndim == 1:
        a = a.reshape(1, -1)
    c = a.shape[1]
    if c == n:
        return a
    if c == 1 or n % c == 0:
        return np.repeat(a, n // c, axis=1)
    raise LavaRuntimeError(f"{name}: parameter with {c} channels cannot be laid out over {n} "
                           "neurons; give [P, 1], [P, C] with C dividing N, or [P, N]")


def _window(neuron) -> int:
    om = getattr(neuron, "omega", None)
    return 0 if om is None else int(np.asarray(om).shape[0])


def schedule(layers, timesteps: int) -> dict:
    """Offsets of the pipelined schedule: ``{"neurons": [(in_offset, out_offset)], "readout": r}``."""
    out_prev = 0    # the input payload of sample 0 step 0 is sent at global step 0
    offs = []
    for L in layers[:-1]:
        w = _window(L.neuron)
        if w and timesteps % w:
            raise LavaRuntimeError(
                f"{L.name or 'layer'}: LM-HT trained with T={w} runs at a multiple of T "
                f"(Omega per window), not T'={timesteps}; choose T' in {{{w}, {2 * w}, ...}}")
        off = out_prev + 1          # one Dense hop
        out = off + (w - 1 if w else 0)
        offs.append((off, out))
        out_prev = out
    return {"neurons": offs, "readout": out_prev + 1}


# ----------------------------------------------------------------------------------------------
# input payload
# ----------------------------------------------------------------------------------------------


def _time_major_input(x, n_in: int, timesteps: int | None):
    """[B, ...] (static, repeated T steps) or [T, B, ...] (frames) -> ([T, B, n_in] float32, T)."""
    x = np.asarray(x, dtype=np.float32)
    if x.ndim >= 2 and int(np.prod(x.shape[1:])) == n_in:
        if timesteps is None:
            raise LavaRuntimeError("a static input [B, ...] needs timesteps=T")
        flat = x.reshape(x.shape[0], n_in)
        return np.broadcast_to(flat, (timesteps,) + flat.shape), int(timesteps)
    if x.ndim >= 3 and int(np.prod(x.shape[2:])) == n_in:
        if timesteps is not None and timesteps != x.shape[0]:
            raise LavaRuntimeError(f"input has {x.shape[0]} frames but timesteps={timesteps}")
        return x.reshape(x.shape[0], x.shape[1], n_in), int(x.shape[0])
    raise LavaRuntimeError(f"input of shape {x.shape} does not match the first layer's {n_in} "
                           "inputs; give [B, n_in] (or [B, C, H, W]) or [T, B, ...]")


def fx_state_max() -> int:
    """Largest graded payload / state magnitude (24-bit signed)."""
    from lmh_deploy.lava.fixed_point import STATE_MAX

    return STATE_MAX


def default_input_quantum(x) -> float:
    """A power of two so that ``max|x| / quantum < 2**15`` (used when none is given)."""
    amax = float(np.max(np.abs(x))) if np.size(x) else 0.0
    if amax == 0.0:
        return 1.0
    return float(2.0 ** (np.floor(np.log2(amax)) - 14))


# ----------------------------------------------------------------------------------------------
# building the process graph
# ----------------------------------------------------------------------------------------------


def _neuron_process(layer, idx, n, bias, period, offset, q, fixed_point):
    """The Lava Process and ProcessModel class for one neuron layer."""
    from lmh_deploy.lava.procs import lmh as procs_lmh, lmht as procs_lmht

    spec = layer.neuron
    name = _layer_name(layer, idx)
    theta = float(np.float32(spec.theta))
    v0 = np.broadcast_to(np.asarray(spec.v0, dtype=np.float32), (n,)).copy()
    common = dict(shape=(n,), theta=theta, bias=bias, v0=v0, period=period, offset=offset, q=q,
                  name=name)
    if spec.model == "lmh":
        tables = {k: expand_table(spec.params[k], n, f"{name}.{k}") for k in procs_lmh.LMH_PARAMS}
        rows = {t.shape[0] for t in tables.values()}
        if len(rows) > 1:
            tables = {k: np.repeat(t, max(rows), axis=0) if t.shape[0] == 1 else t
                      for k, t in tables.items()}
        proc = procs_lmh.LMHProcess(**tables, **common)
        model = procs_lmh.PyLMHModelFixed if fixed_point else procs_lmh.PyLMHModelFloat
        return proc, model
    lam = expand_table(spec.params["lam"], n, f"{name}.lam")
    if _window(spec):
        proc = procs_lmht.WindowedMultiLevelProcess(
            lam=lam, levels=int(spec.levels), omega=np.asarray(spec.omega, np.float32), **common)
        model = (procs_lmht.PyWindowedMultiLevelModelFixed if fixed_point
                 else procs_lmht.PyWindowedMultiLevelModelFloat)
    else:
        proc = procs_lmht.MultiLevelProcess(lam=lam, levels=int(spec.levels), **common)
        model = procs_lmht.PyMultiLevelModelFixed if fixed_point else procs_lmht.PyMultiLevelModelFloat
    return proc, model


@dataclass
class _Built:
    source: object
    neurons: list
    spike_sinks: list
    readout_sink: object
    model_map: dict
    readout_q: float
    sched: dict
    records: list


def build_network(layers, payload: np.ndarray, timesteps: int, *, fixed_point: bool,
                  input_quantum: float, record_spikes: bool, weight_exp: int) -> _Built:
    """Create (not run) the Lava processes for ``layers`` fed by ``payload`` [n_in, steps]."""
    from lmh_deploy.lava.compat import import_lava

    import_lava()
    from lava.proc.dense.process import Dense
    from lava.proc.io.source import RingBuffer as Source

    from lmh_deploy.lava import fixed_point as fx
    from lmh_deploy.lava.procs import recorder as procs_rec

    recorder_model = procs_rec.PyRecorderModelFixed if fixed_point else procs_rec.PyRecorderModelFloat

    def recorder(n, port, name):
        rec = procs_rec.SharedRecord(n, steps)
        proc = procs_rec.Recorder(shape=(n,), record=rec, name=name)
        port.connect(proc.a_in)
        model_map[proc] = recorder_model
        records.append(rec)
        return rec

    sched = schedule(layers, timesteps)
    steps = payload.shape[1]
    source = Source(data=payload)
    port = source.s_out
    graded = True   # the input payload is analog / an integer magnitude
    neurons, sinks, model_map, records = [], [], {}, []
    q = 1.0
    for i, layer in enumerate(layers):
        # a split synapse's w_hi + w_lo (exact in float64; Dense sums in float64 and the neuron
        # adds the bias b_hi + b_lo before one rounding to float32: the reference's fl32(hi + lo))
        w = np.asarray(getattr(layer, "weight64", layer.weight), dtype=np.float64)
        bias = np.asarray(getattr(layer, "bias64", layer.bias), dtype=np.float64)
        nbits = 24 if graded else 0
        if fixed_point:
            qw = fx.quantize_weights(w * (input_quantum if i == 0 else 1.0), weight_exp)
            dense = Dense(weights=qw.w, weight_exp=qw.weight_exp, num_weight_bits=8,
                          num_message_bits=nbits, name=f"dense{i}")
            q = qw.q
        else:
            dense = Dense(weights=w, num_message_bits=nbits, name=f"dense{i}")
        port.connect(dense.s_in)
        if layer.neuron is None:
            sink = recorder(w.shape[0], dense.a_out, f"readout{i}")
            return _Built(source, neurons, sinks, sink, model_map, q, sched, records)
        off, _ = sched["neurons"][i]
        proc, model = _neuron_process(layer, i, w.shape[0], bias, timesteps, off, q, fixed_point)
        dense.a_out.connect(proc.a_in)
        model_map[proc] = model
        neurons.append(proc)
        if record_spikes:
            sinks.append(recorder(w.shape[0], proc.s_out, f"spikes{i}"))
        port = proc.s_out
        graded = int(layer.neuron.levels) > 1
    raise AssertionError("unreachable: validate_layers guarantees a readout")


# ----------------------------------------------------------------------------------------------
# DeployGraph adapter (the NIR reader produces the same Layer list)
# ----------------------------------------------------------------------------------------------


def layers_from_deploy_graph(graph) -> list:
    """A chain ``[flatten] -> linear synapse -> neuron -> ... -> linear synapse (output)`` of a
    :class:`~lmh_deploy.graph.schema.DeployGraph` -> :class:`~lmh_deploy.graph.schema.Layer` list (names = the neuron
    op names; the readout is named after the output synapse)."""
    try:
        chain = graph.layer_chain()
    except UnsupportedModelError as e:
        raise LavaRuntimeError(f"{e}; run other graphs with --runtime reference/onnx") from None
    for c in chain:
        if c.synapse.attrs.get("op") != "linear":
            raise LavaRuntimeError(f"{c.synapse.name}: the Lava runtime supports linear synapses "
                                   "only (MLP); run conv models with --runtime reference/onnx")
    return chain


# ----------------------------------------------------------------------------------------------
# any DeployGraph (conv, pooling, residual adds): one Lava process per cluster
# ----------------------------------------------------------------------------------------------


@dataclass
class _BuiltGraph:
    source: object
    procs: list
    plans: list
    records: dict        # cluster name -> SharedRecord [B*T, N]
    model_map: dict
    steps: int


def graph_steps(plans, batch: int, period: int) -> int:
    """Lava steps one run of ``batch`` samples takes: the readout's offset plus B*T."""
    return plans[-1].in_offset + batch * period + 1


def build_graph_network(graph, payload: np.ndarray, batch: int, period: int, *,
                        fixed_point: bool, record_spikes: bool = True) -> _BuiltGraph:
    """Create (not run) the Lava processes of ``graph``: a RingBuffer source sending ``payload``
    [n_in, steps] (the quantized input; in fixed point its integers in units of
    ``graph.input_quantum``), then one :class:`~lmh_deploy.lava.procs.cluster.ClusterProcess` per
    neuron and one for the readout (see :mod:`lmh_deploy.lava.cluster`). Residual branches are
    aligned by per-port delays; each hop adds one step."""
    from lmh_deploy.lava.compat import import_lava

    import_lava()
    from lava.proc.io.source import RingBuffer as Source

    from lmh_deploy.lava.cluster import ClusterStep, partition
    from lmh_deploy.lava.procs import cluster as procs_cluster
    from lmh_deploy.lava.procs.recorder import SharedRecord

    plans = partition(graph)
    shapes = graph.shapes()
    source = Source(data=payload)
    out_port = {"input": source.s_out}
    procs, records, model_map = [], {}, {}
    for plan in plans:
        step = ClusterStep(shapes, plan, period=period, batch=batch, fixed=fixed_point,
                           input_quantum=float(graph.input_quantum), graph=graph)
        rec = None
        if plan.neuron is None or record_spikes:
            rec = SharedRecord(batch * period, plan.size)
            records[plan.name] = rec
        proc = procs_cluster.ClusterProcess(
            in_sizes=[int(np.prod(shapes[s])) for s in plan.sources], size=plan.size, step=step,
            record=rec, name=f"cluster_{plan.name}")
        ports = (proc.in0, proc.in1, proc.in2, proc.in3)
        for k, src in enumerate(plan.sources):
            out_port[src].connect(ports[k])
        out_port[plan.name] = proc.s_out
        model_map[proc] = procs_cluster.PyClusterModel
        procs.append(proc)
    return _BuiltGraph(source, procs, plans, records, model_map, payload.shape[1])
