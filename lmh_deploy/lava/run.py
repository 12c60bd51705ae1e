"""Run a layered spiking network in Lava's CPU simulator (built by :mod:`lmh_deploy.lava.build`).

Every run stops the Lava runtime in ``finally`` and reaps any worker it started;
:func:`run_lava_isolated` runs in a separate process group under a hard timeout (the worker is
``python -m lmh_deploy.lava.run``). Results are aligned by the pipelined schedule (see
:mod:`lmh_deploy.lava.build`) so logits and spikes line up with the reference step for step.
"""
from __future__ import annotations

import multiprocessing
import os
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from lmh_deploy.atomic import atomic_output
from lmh_deploy.errors import LavaRuntimeError, LavaTimeoutError
from lmh_deploy.graph.schema import layers_from_dict, layers_to_dict
from lmh_deploy.lava.build import (DEFAULT_WEIGHT_EXP, _layer_name, _time_major_input, build_network,
                                   build_graph_network, default_input_quantum, graph_steps, fx_state_max, layers_from_deploy_graph,
                                   schedule, validate_layers)


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
        from lmh_deploy.graph.interpret import NumpyBackend

        xs = NumpyBackend.quantize_input(xs, input_quantum,
                                         input_bound if input_bound is not None else np.inf)
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

    from lmh_deploy.lava.compat import import_lava

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
    logits = (ro.astype(np.float64) + np.asarray(getattr(layers[-1], "bias64", layers[-1].bias), np.float64)).astype(np.float32)
    spikes, offsets = {}, {"readout": sched["readout"]}
    for i, data in enumerate(spike_data):
        name = _layer_name(layers[i], i)
        _, out_off = sched["neurons"][i]
        spikes[name] = np.rint(aligned(data, out_off)).astype(np.int32)
        offsets[name] = out_off
    return LavaRun(logits=logits, spikes=spikes, offsets=offsets, steps=steps,
                   build_s=t1 - t0, run_s=t2 - t1, fixed_point=fixed_point,
                   input_quantum=float(input_quantum) if input_quantum is not None else None)


def run_lava_deploy(graph, x, timesteps: int | None = None, *, fixed_point: bool = False,
                    record_spikes: bool = True) -> LavaRun:
    """Run any DeployGraph (conv, pooling, residual adds, every neuron model) in Lava's CPU
    simulator, one Process per neuron cluster (:func:`lmh_deploy.lava.build.build_graph_network`).

    ``x``: static ``[B, *input_shape]`` (repeated for ``timesteps`` steps, default the graph's T)
    or frames ``[T, B, *input_shape]``; quantized to the graph's input grid as the reference does.
    Float is bit-identical to :func:`lmh_deploy.graph.interpret.run_reference`; fixed point is
    Loihi-2 style (8-bit weights per op, 24-bit state, 12-bit decays). Returns :class:`LavaRun`
    (logits [T, B, K], spikes {neuron: int32 [T, B, N]})."""
    from lmh_deploy.graph.interpret import NumpyBackend

    x = np.asarray(x, dtype=np.float32)
    nd = len(graph.input_shape)
    if x.ndim == nd + 1:
        t_run = graph.check_timesteps(int(timesteps or graph.timesteps))
        xs = np.broadcast_to(x, (t_run,) + x.shape)
    elif x.ndim == nd + 2:
        t_run = graph.check_timesteps(int(x.shape[0]))
        if timesteps is not None and int(timesteps) != t_run:
            raise LavaRuntimeError(f"input has {t_run} frames but timesteps={timesteps}")
        xs = x
    else:
        raise LavaRuntimeError(f"input of shape {x.shape} does not match the graph input "
                               f"{tuple(graph.input_shape)}; give [B, ...] or [T, B, ...]")
    xs = NumpyBackend.quantize_input(xs, graph.input_quantum, graph.input_bound)
    batch = xs.shape[1]
    n_in = int(np.prod(graph.input_shape))
    from lmh_deploy.lava.cluster import partition

    steps = graph_steps(partition(graph), batch, t_run)
    payload = np.zeros((n_in, steps), dtype=np.float64)
    payload[:, : batch * t_run] = xs.reshape(t_run, batch, n_in).transpose(2, 1, 0).reshape(
        n_in, batch * t_run)
    if fixed_point:
        payload = np.rint(payload / graph.input_quantum)
        if payload.size and np.abs(payload).max() > fx_state_max():
            raise LavaRuntimeError("input payloads exceed 24 bits at the graph's input quantum")

    from lmh_deploy.lava.compat import import_lava

    import_lava()
    from lava.magma.core.run_conditions import RunSteps
    from lava.magma.core.run_configs import Loihi2SimCfg

    children_before = multiprocessing.active_children()
    t0 = time.perf_counter()
    built = build_graph_network(graph, payload, batch, t_run, fixed_point=fixed_point,
                                record_spikes=record_spikes)
    cfg = Loihi2SimCfg(select_tag="floating_pt", exception_proc_model_map=built.model_map)
    src = built.source
    t1 = t0
    try:
        src.create_runtime(run_cfg=cfg)
        t1 = time.perf_counter()
        src.run(condition=RunSteps(num_steps=steps))
        t2 = time.perf_counter()
        data = {k: r.read() for k, r in built.records.items()}
    finally:
        _shutdown(src, children_before)
        for rec in built.records.values():
            rec.close()

    def aligned(a):   # [B*T, N] sample-major -> [T, B, N]
        return a.reshape(batch, t_run, -1).transpose(1, 0, 2)

    readout = built.plans[-1].name
    logits = aligned(data.pop(readout)).astype(np.float32)
    spikes = {k: np.rint(aligned(v)).astype(np.int32) for k, v in data.items()}
    offsets = {p.name: p.out_offset for p in built.plans[:-1]}
    offsets["readout"] = built.plans[-1].in_offset
    return LavaRun(logits=logits, spikes=spikes, offsets=offsets, steps=steps, build_s=t1 - t0,
                   run_s=t2 - t1, fixed_point=fixed_point,
                   input_quantum=float(graph.input_quantum))


def run_lava_graph(graph, x, timesteps: int | None = None, *, fixed_point: bool = False,
                   isolate: bool = False, timeout_s: float = 300.0):
    """Run a DeployGraph in Lava: the runtime-registry signature ``(graph, x, timesteps) ->
    GraphRun`` (logits [T, B, K], spikes {neuron name: float32 counts [T, B, ...]}).
    ``isolate=True`` runs in a separate process group killed after ``timeout_s``
    (:func:`run_lava_isolated`)."""
    from lmh_deploy.graph.interpret import GraphRun

    if isolate:
        run = run_graph_isolated(graph, x, timesteps, timeout_s=timeout_s,
                                 fixed_point=fixed_point)
    else:
        run = run_lava_deploy(graph, x, timesteps, fixed_point=fixed_point)
    shapes = graph.shapes()
    spikes = {k: v.astype(np.float32).reshape(v.shape[:2] + tuple(shapes[k]))
              for k, v in run.spikes.items()}
    return GraphRun(run.logits, spikes)


def run_lava_graph_fixed(graph, x, timesteps: int | None = None):
    """:func:`run_lava_graph` with the Loihi-2-style fixed-point models (not exact: 8-bit weights)."""
    return run_lava_graph(graph, x, timesteps, fixed_point=True)


# ----------------------------------------------------------------------------------------------
# isolated run: a separate process group under a hard timeout
# ----------------------------------------------------------------------------------------------


def save_layers(path, layers, x, timesteps, options: dict) -> None:
    """Write layers (:func:`lmh_deploy.graph.schema.layers_to_dict`), input and options to an
    ``.npz`` (no pickles), atomically."""
    import json

    arrays = {"x": np.asarray(x, np.float32)}
    meta = {"entry": "lmh_deploy.lava.run:_layers_job", "timesteps": timesteps, "options": options, "layers": layers_to_dict(layers, arrays)}
    arrays["meta"] = np.array(json.dumps(meta))
    with atomic_output(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **arrays)


def load_layers(path):
    """Inverse of :func:`save_layers`: ``(layers, x, timesteps, options)``."""
    import json

    with np.load(path, allow_pickle=False) as z:
        meta = json.loads(str(z["meta"]))
        arrays = {k: z[k] for k in z.files}
    return layers_from_dict(meta["layers"], arrays), arrays["x"], meta["timesteps"], meta["options"]


def run_lava_isolated(layers, x, timesteps: int | None = None, *, timeout_s: float = 300.0,
                      **options) -> LavaRun:
    """:func:`run_lava` (a layer chain) in an isolated worker (:mod:`lmh_deploy.lava.isolate`); past
    ``timeout_s`` the whole group is killed and :class:`LavaTimeoutError` raised."""
    from lmh_deploy.lava.isolate import isolated

    layers = validate_layers(layers)
    return isolated(lambda path: save_layers(path, layers, x, timesteps, options), timeout_s, LavaRun)


def save_graph_job(path, graph, x, timesteps, options: dict) -> None:
    """A DeployGraph job (:func:`lmh_deploy.graph.schema.to_dict`, no pickles), atomically."""
    import json

    from lmh_deploy.graph.schema import to_dict

    arrays = {"x": np.asarray(x, np.float32)}
    meta = {"entry": "lmh_deploy.lava.run:_graph_job", "timesteps": timesteps, "options": options,
            "graph": to_dict(graph, arrays)}
    arrays["meta"] = np.array(json.dumps(meta))
    with atomic_output(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **arrays)


def run_graph_isolated(graph, x, timesteps: int | None = None, *, timeout_s: float = 300.0,
                       **options) -> LavaRun:
    """:func:`run_lava_deploy` in an isolated worker under a hard timeout (:mod:`lmh_deploy.lava.isolate`)."""
    from lmh_deploy.lava.isolate import isolated

    return isolated(lambda path: save_graph_job(path, graph, x, timesteps, options), timeout_s, LavaRun)




def _graph_job(path) -> LavaRun:
    """Worker entry of a :func:`save_graph_job` file."""
    import json

    from lmh_deploy.graph.schema import from_dict

    with np.load(path, allow_pickle=False) as z:
        meta = json.loads(str(z["meta"]))
        arrays = {k: z[k] for k in z.files}
    return run_lava_deploy(from_dict(meta["graph"], arrays), arrays["x"], meta["timesteps"],
                           **meta["options"])


def _layers_job(path) -> LavaRun:
    """Worker entry of a :func:`save_layers` file."""
    layers, x, timesteps, options = load_layers(path)
    return run_lava(layers, x, timesteps, **options)
