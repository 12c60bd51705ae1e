"""Run a layered spiking network in Lava's CPU simulator (lava-nc 0.10 on Python 3.11).

The builder takes a plain list of :class:`LavaLayer` (weight matrix, bias, neuron spec); the NIR
reader and the DeployGraph adapter (:func:`layers_from_deploy_graph`) both produce that list.

Process graph (one Lava run for the whole batch)::

    RingBuffer(input payload) -> Dense(W_1) -> neuron_1 -> Dense(W_2) -> neuron_2 -> ...
                                 -> Dense(W_K) -> RingBuffer sink (per-step readout currents)
    each neuron_l.s_out -> RingBuffer sink (spike record)

* Neurons are :mod:`lmh_deploy.lava.procs_lmh` (LM-H, LIF, radical LM-H) and
  :mod:`lmh_deploy.lava.procs_lmht` (multi-level; windowed when Omega != I) Processes whose
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

Every run stops the Lava runtime in ``finally`` and reaps any worker it started; see
:func:`run_lava_isolated` for a run in a separate process group under a hard timeout.
"""
from __future__ import annotations

import multiprocessing
import os
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from ..atomic import atomic_output
from ..errors import LmhError

DEFAULT_WEIGHT_EXP = 6


class LavaRuntimeError(LmhError, ValueError):
    """A layer list the Lava builder cannot run (the message names the layer and the fix)."""


@dataclass
class LavaLayer:
    """One synapse (+ neuron) layer.

    ``weight`` [out, in] and ``bias`` [out]: ``I = W s + b`` (s: spike counts of the previous
    layer, or the input for the first layer). ``neuron``: an object with the fields of
    :class:`lmh_deploy.deploy_graph.NeuronSpec` (``model`` "lmh" | "lmht", ``theta``, ``levels``,
    ``v0``, ``params`` {name: [P, C]}, ``omega`` [T, T] | None), or ``None`` for the readout
    (which must be the last layer and only the last).
    """

    weight: np.ndarray
    bias: np.ndarray
    neuron: object = None
    name: str = ""


@dataclass
class LavaRun:
    """Result: per-step logits [T, B, K] (float32), spike counts {name: int32 [T, B, N]},
    and the schedule and timing figures."""

    logits: np.ndarray
    spikes: dict
    offsets: dict = field(default_factory=dict)   # neuron name -> first output step; "readout"
    steps: int = 0                                # Lava steps run
    build_s: float = 0.0                          # process construction + compile + start
    run_s: float = 0.0                            # simulation (all steps)
    fixed_point: bool = False
    input_quantum: float | None = None

    @property
    def step_ms(self) -> float:
        return 1000.0 * self.run_s / max(self.steps, 1)

    @property
    def mean_logits(self) -> np.ndarray:
        return self.logits.mean(0)


# ----------------------------------------------------------------------------------------------
# validation and parameter layout
# ----------------------------------------------------------------------------------------------


def _layer_name(layer: LavaLayer, idx: int) -> str:
    return layer.name or f"layer{idx}"


def validate_layers(layers) -> list:
    """Check shapes and kinds; returns the list. Raises :class:`LavaRuntimeError`."""
    layers = list(layers)
    if not layers:
        raise LavaRuntimeError("no layers given; pass at least a readout LavaLayer")
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
    from ..lava.fixed_point import STATE_MAX

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
    from ..lava import procs_lmh, procs_lmht

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
    from ..lava.compat import import_lava

    import_lava()
    from lava.proc.dense.process import Dense
    from lava.proc.io.source import RingBuffer as Source

    from ..lava import fixed_point as fx
    from ..lava import procs_io

    recorder_model = procs_io.PyRecorderModelFixed if fixed_point else procs_io.PyRecorderModelFloat

    def recorder(n, port, name):
        rec = procs_io.SharedRecord(n, steps)
        proc = procs_io.Recorder(shape=(n,), record=rec, name=name)
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
        w = np.asarray(layer.weight, dtype=np.float64)
        bias = np.asarray(layer.bias, dtype=np.float32)
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
# running
# ----------------------------------------------------------------------------------------------


def _shutdown(proc, children_before, stop_timeout_s: float = 20.0) -> None:
    """``proc.stop()`` with a time limit, then terminate (by pid) any worker this run started."""
    t = threading.Thread(target=_safe_stop, args=(proc,), daemon=True)
    t.start()
    t.join(stop_timeout_s)
    before = {c.pid for c in children_before}
    for child in multiprocessing.active_children():
        if child.pid not in before:
            child.join(2.0)
            if child.is_alive():
                child.terminate()
                child.join(2.0)
            if child.is_alive():
                child.kill()
                child.join(1.0)


def _safe_stop(proc) -> None:
    try:
        if proc.runtime is not None:
            proc.stop()
    except Exception:  # noqa: BLE001 - a failed stop must not mask the run's own error
        pass


def run_lava(layers, x, timesteps: int | None = None, *, fixed_point: bool = False,
             input_quantum: float | None = None, input_bound: float | None = None,
             record_spikes: bool = True, weight_exp: int = DEFAULT_WEIGHT_EXP) -> LavaRun:
    """Run ``layers`` on a batch ``x`` in Lava's CPU simulator.

    ``x``: static ``[B, n_in]`` / ``[B, C, H, W]`` (repeated for ``timesteps`` steps) or frames
    ``[T, B, ...]``. If ``input_quantum`` is given the input is first rounded to it and clipped to
    ``±input_bound`` (as the DeployGraph runtimes do: ``clip(round(x/q), -bound/q, bound/q) * q``).
    Fixed point sends ``round(x / input_quantum)`` as integer payloads (``input_quantum`` defaults
    to :func:`default_input_quantum`).

    Returns :class:`LavaRun` with ``logits`` [T, B, K] and ``spikes`` {layer name: [T, B, N]}.
    """
    layers = validate_layers(layers)
    n_in = int(np.asarray(layers[0].weight).shape[1])
    xs, t_run = _time_major_input(x, n_in, timesteps)
    if input_quantum is not None:
        qf = np.float32(input_quantum)
        lim = np.float32((input_bound if input_bound is not None else np.inf) / input_quantum)
        xs = (np.clip(np.round(xs / qf), -lim, lim) * qf).astype(np.float32)
    batch = xs.shape[1]
    sched = schedule(layers, t_run)
    steps = batch * t_run + sched["readout"]
    payload = np.zeros((n_in, steps), dtype=np.float64)
    payload[:, : batch * t_run] = xs.transpose(2, 1, 0).reshape(n_in, batch * t_run)
    if fixed_point:
        if input_quantum is None:
            input_quantum = default_input_quantum(xs)
        ints = np.rint(payload / input_quantum)
        if ints.size and np.abs(ints).max() > fx_state_max():
            raise LavaRuntimeError(f"input payloads up to {np.abs(ints).max():.0f} exceed 24 bits "
                                   f"at input_quantum={input_quantum:g}; choose a larger quantum")
        payload = ints.astype(np.int32)

    from ..lava.compat import import_lava

    import_lava()
    from lava.magma.core.run_conditions import RunSteps
    from lava.magma.core.run_configs import Loihi2SimCfg

    children_before = multiprocessing.active_children()
    t0 = time.perf_counter()
    built = build_network(layers, payload, t_run, fixed_point=fixed_point,
                          input_quantum=float(input_quantum or 1.0), record_spikes=record_spikes,
                          weight_exp=weight_exp)
    cfg = Loihi2SimCfg(select_tag="fixed_pt" if fixed_point else "floating_pt",
                       exception_proc_model_map=built.model_map)
    src = built.source
    try:
        src.create_runtime(run_cfg=cfg)
        t1 = time.perf_counter()
        src.run(condition=RunSteps(num_steps=steps))
        t2 = time.perf_counter()
        readout = built.readout_sink.read()
        spike_data = [s.read() for s in built.spike_sinks]
    finally:
        _shutdown(src, children_before)
        for rec in built.records:
            rec.close()

    # align: sample b, step i of a stream that starts at global step `off` is column off + b*T + i
    def aligned(data, off):
        cols = data[:, off: off + batch * t_run]                      # [N, B*T]
        return cols.reshape(cols.shape[0], batch, t_run).transpose(2, 1, 0)   # [T, B, N]

    ro = aligned(readout, sched["readout"])
    if fixed_point:  # integer currents in units of q
        ro = ro * built.readout_q
    # float: W s + b is exact in float64 (exact-sum grids), rounded once as the reference does
    logits = (ro.astype(np.float64) + np.asarray(layers[-1].bias, dtype=np.float32)).astype(np.float32)
    spikes, offsets = {}, {"readout": sched["readout"]}
    for i, data in enumerate(spike_data):
        name = _layer_name(layers[i], i)
        _, out_off = sched["neurons"][i]
        spikes[name] = np.rint(aligned(data, out_off)).astype(np.int32)
        offsets[name] = out_off
    return LavaRun(logits=logits, spikes=spikes, offsets=offsets, steps=steps,
                   build_s=t1 - t0, run_s=t2 - t1, fixed_point=fixed_point,
                   input_quantum=float(input_quantum) if input_quantum is not None else None)


# ----------------------------------------------------------------------------------------------
# DeployGraph adapter (the NIR reader produces the same LavaLayer list)
# ----------------------------------------------------------------------------------------------


def layers_from_deploy_graph(graph) -> list:
    """A chain ``[flatten] -> linear synapse -> neuron -> ... -> linear synapse (output)`` of a
    :class:`~lmh_deploy.deploy_graph.DeployGraph` -> :class:`LavaLayer` list (names = the neuron
    op names; the readout is named after the output synapse)."""
    from ..errors import UnsupportedModelError

    try:
        chain = graph.layer_chain()
    except UnsupportedModelError as e:
        raise LavaRuntimeError(f"{e}; run other graphs with --runtime reference/onnx") from None
    for c in chain:
        if c.synapse.attrs.get("op") != "linear":
            raise LavaRuntimeError(f"{c.synapse.name}: the Lava runtime supports linear synapses "
                                   "only (MLP); run conv models with --runtime reference/onnx")
    layers = [LavaLayer(c.synapse.arrays["weight"], c.synapse.arrays["bias"], c.neuron, c.name)
              for c in chain]
    return layers


def run_lava_graph(graph, x, timesteps: int | None = None, *, fixed_point: bool = False,
                   isolate: bool = False, timeout_s: float = 300.0):
    """Run a DeployGraph in Lava: the runtime-registry signature ``(graph, x, timesteps) ->
    GraphRun`` (logits [T, B, K], spikes {neuron name: float32 counts [T, B, N]}).

    The input is quantized exactly as the reference does (``graph.input_quantum``, ``input_bound``).
    ``isolate=True`` runs in a separate process group killed after ``timeout_s``
    (:func:`run_lava_isolated`).
    """
    from ..interpreter import GraphRun

    x = np.asarray(x, dtype=np.float32)
    static = x.ndim == len(graph.input_shape) + 1
    t_run = graph.check_timesteps(int(timesteps or graph.timesteps) if static else x.shape[0])
    options = dict(fixed_point=fixed_point, input_quantum=float(graph.input_quantum),
                   input_bound=float(graph.input_bound))
    layers = layers_from_deploy_graph(graph)
    if isolate:
        run = run_lava_isolated(layers, x, t_run if static else None, timeout_s=timeout_s,
                                **options)
    else:
        run = run_lava(layers, x, t_run if static else None, **options)
    return GraphRun(run.logits, {k: v.astype(np.float32) for k, v in run.spikes.items()})


def run_lava_graph_fixed(graph, x, timesteps: int | None = None):
    """:func:`run_lava_graph` with the Loihi-2-style fixed-point models (not exact: 8-bit weights)."""
    return run_lava_graph(graph, x, timesteps, fixed_point=True)


# ----------------------------------------------------------------------------------------------
# isolated run: a separate process group under a hard timeout
# ----------------------------------------------------------------------------------------------


class LavaTimeoutError(LmhError, TimeoutError):
    """An isolated Lava run exceeded its time limit (its whole process group was killed)."""


_SPEC_FIELDS = ("model", "source_kind", "theta", "levels", "v0")


def save_layers(path, layers, x, timesteps, options: dict) -> None:
    """Write layers, input and options to an ``.npz`` (no pickles), atomically."""
    import json

    arrays, meta = {"x": np.asarray(x, np.float32)}, {"timesteps": timesteps, "options": options,
                                                      "layers": []}
    for i, L in enumerate(layers):
        arrays[f"{i}.weight"] = np.asarray(L.weight, np.float32)
        arrays[f"{i}.bias"] = np.asarray(L.bias, np.float32)
        entry = {"name": L.name, "neuron": None}
        if L.neuron is not None:
            n = L.neuron
            entry["neuron"] = {k: (getattr(n, k, "") if k in ("model", "source_kind")
                                   else float(getattr(n, k)) if k != "levels" else int(n.levels))
                               for k in _SPEC_FIELDS}
            entry["neuron"]["params"] = sorted(n.params)
            for k, v in n.params.items():
                arrays[f"{i}.p.{k}"] = np.asarray(v, np.float32)
            if getattr(n, "omega", None) is not None:
                arrays[f"{i}.omega"] = np.asarray(n.omega, np.float32)
        meta["layers"].append(entry)
    arrays["meta"] = np.array(json.dumps(meta))
    with atomic_output(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **arrays)


def load_layers(path):
    """Inverse of :func:`save_layers`: ``(layers, x, timesteps, options)``."""
    import json

    from ..deploy_graph import NeuronSpec

    with np.load(path, allow_pickle=False) as z:
        meta = json.loads(str(z["meta"]))
        layers = []
        for i, e in enumerate(meta["layers"]):
            spec = None
            if e["neuron"] is not None:
                n = e["neuron"]
                spec = NeuronSpec(model=n["model"], source_kind=n["source_kind"],
                                  theta=np.float32(n["theta"]), levels=int(n["levels"]),
                                  v0=np.float32(n["v0"]),
                                  params={k: z[f"{i}.p.{k}"] for k in n["params"]},
                                  omega=z[f"{i}.omega"] if f"{i}.omega" in z.files else None)
            layers.append(LavaLayer(z[f"{i}.weight"], z[f"{i}.bias"], spec, e["name"]))
        return layers, z["x"], meta["timesteps"], meta["options"]


def run_lava_isolated(layers, x, timesteps: int | None = None, *, timeout_s: float = 300.0,
                      **options) -> LavaRun:
    """:func:`run_lava` in a child interpreter in its own process group; past ``timeout_s`` the
    whole group (the child and every Lava worker it forked) is killed and
    :class:`LavaTimeoutError` raised. Nothing is left running either way."""
    import signal
    import subprocess
    import sys
    import tempfile

    layers = validate_layers(layers)
    with tempfile.TemporaryDirectory(prefix="lmh-lava-") as d:
        src, dst = os.path.join(d, "in.npz"), os.path.join(d, "out.npz")
        save_layers(src, layers, x, timesteps, options)
        proc = subprocess.Popen([sys.executable, "-m", "lmh_deploy.runtimes.lava_runtime",
                                 src, dst], start_new_session=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            _, err = proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            # SIGTERM first: the child kills and reaps its Lava workers (no orphans left as
            # zombies); whatever is still alive after a grace period dies with the group.
            proc.send_signal(signal.SIGTERM)
            try:
                proc.communicate(timeout=5.0)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.communicate()
            raise LavaTimeoutError(f"the Lava run exceeded {timeout_s:g} s and was killed; "
                                   "use fewer samples or a larger timeout") from None
        finally:
            if proc.poll() is None:  # interrupted (e.g. KeyboardInterrupt): leave nothing behind
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        try:  # workers of a finished child are gone with it; reap stragglers of the group
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        if proc.returncode != 0 or not os.path.exists(dst):
            last = (err or "").strip().splitlines()[-1:] or ["no output"]
            raise LavaRuntimeError(f"the isolated Lava run failed (exit {proc.returncode}): "
                                   f"{last[0]}")
        with np.load(dst, allow_pickle=False) as z:
            import json

            meta = json.loads(str(z["meta"]))
            spikes = {k: z[f"spikes.{k}"] for k in meta["spike_names"]}
            return LavaRun(logits=z["logits"], spikes=spikes, offsets=meta["offsets"],
                           steps=meta["steps"], build_s=meta["build_s"], run_s=meta["run_s"],
                           fixed_point=meta["fixed_point"], input_quantum=meta["input_quantum"])


def _worker_main(argv) -> int:
    """``python -m lmh_deploy.runtimes.lava_runtime IN.npz OUT.npz`` (used by
    :func:`run_lava_isolated`): run and write the result atomically."""
    import json
    import signal

    def on_term(signum, frame):  # kill and reap our Lava workers, then leave at once
        for child in multiprocessing.active_children():
            child.kill()
        for child in multiprocessing.active_children():
            child.join(1.0)
        os._exit(128 + signum)

    signal.signal(signal.SIGTERM, on_term)
    src, dst = argv
    layers, x, timesteps, options = load_layers(src)
    run = run_lava(layers, x, timesteps, **options)
    arrays = {"logits": run.logits, **{f"spikes.{k}": v for k, v in run.spikes.items()}}
    arrays["meta"] = np.array(json.dumps({
        "spike_names": list(run.spikes), "offsets": run.offsets, "steps": run.steps,
        "build_s": run.build_s, "run_s": run.run_s, "fixed_point": run.fixed_point,
        "input_quantum": run.input_quantum}))
    with atomic_output(dst) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **arrays)
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(_worker_main(sys.argv[1:]))
