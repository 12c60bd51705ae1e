"""Foreign NIR files (other tools) in Lava: Lava's own ``lava.proc.lif`` LIF process where it
computes the producer's discretization exactly, our generic foreign-stage process elsewhere
(DESIGN §3 "Import", issue 15).

The checked :class:`~lmh_deploy.nir.foreign.ForeignProgram` is cut into stages (:func:`stages`):
each stateful node (LIF, IF, CubaLIF, LI, CubaLI, I, Delay) or Threshold, and the Output, with the
stateless nodes that compute its input from one source stage (loops back to the node included).
Each stage is one Lava hop (one step of latency; outputs are aligned by depth). A stage runs as
``Dense → LIF`` of Lava's own processes when Lava's float LIF computes it exactly::

    u = u(1 − du) + a_in;   v = v(1 − dv) + u + bias;   s = v > vth;   v = 0 where s

which is the foreign runtime's "decay" form with ``du = 1 − a_syn`` (``du = 1`` for LIF / IF: no
synaptic memory), ``dv = 1 − a``; the input gains (``b``: ``k·r``, ``k_s·w_in`` …) and ``1/v_th``
are folded into the Dense rows (Lava has one ``vth``), an Affine bias is a constant input
channel from its own source (zero until the layer's first step, so nothing leaks in before t = 0),
a recurrent Affine is a second Dense from the LIF back to itself. Every other stage -- conv and
pooling layers, a non-zero ``v_reset``, ``v_leak``, subtractive / delayed / multi-spike reset,
firing at ``v ≥ θ``, per-neuron decays, the NIR paper's old-current CubaLIF, LI / I / Delay --
runs in :class:`~lmh_deploy.lava.procs.foreign_node.ForeignStageProcess`, whose model steps the
stage's nodes with the pure functions of :mod:`lmh_deploy.nir.primitives` (the numpy runtime's
own code), so it agrees with ``--runtime nir`` spike for spike. A stage reading from two layers
(residual joins) or a loop across layers is a one-line error (``--runtime nir`` runs those). One
Lava run per sample (Lava's LIF has no per-sample reset); every run is stopped in ``finally``.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from lmh_deploy.errors import ForeignNirError
from lmh_deploy.nir.foreign import ForeignProgram, check_input
from lmh_deploy.nir.primitives import STATEFUL


# ---------------------------------------------------------------------------------------------
# stages: one neuron (or the Output) with the stateless nodes that compute its input
# ---------------------------------------------------------------------------------------------


@dataclass
class Stage:
    """One Lava hop: ``exit`` (a stateful node, Threshold or the Output), its ``members`` (the
    stateless nodes feeding it from ``source``, loops back to ``exit`` included) in evaluation
    order, the ``source`` stage's exit node (or the Input), ``depth`` (hops from the Input), and
    the route: ``lif`` (Lava's own Dense + LIF: a layer dict) or ``ours``
    (:class:`~lmh_deploy.lava.procs.foreign_node.ForeignStageProcess`) with the ``reason``."""

    exit: str
    members: list
    source: str
    depth: int
    inputs: dict = field(default_factory=dict)
    route: str = "ours"
    layer: dict | None = None
    reason: str = ""


def _is_identity(prog, n):
    node = prog.nodes[n]
    return node.kind == "Flatten" and tuple(node.in_shape) == tuple(node.out_shape)


def stages(prog: ForeignProgram) -> list:
    """The program cut into :class:`Stage` s (evaluation order). One-line error when a stage
    reads from more than one layer (Lava runs chains and trees of layers here) or a delayed edge
    crosses layers."""
    boundary = {n for n, v in prog.nodes.items()
                if v.kind in STATEFUL + ("Threshold",) or n == prog.outputs[0]}
    ins = {n: [(i, a) for i, (a, b) in enumerate(prog.edges) if b == n] for n in prog.nodes}
    depth = {prog.inputs[0]: 0}
    out = []
    for b in prog.order:
        if b not in boundary:
            continue
        members, todo, sources, inputs = {b}, [b], set(), {}
        while todo:
            n = todo.pop()
            inputs[n] = []
            for i, a in ins[n]:
                delayed = i in prog.delayed
                if a == b or (a in members and a not in boundary):
                    inputs[n].append((a, delayed))
                elif a in boundary or prog.nodes[a].kind == "Input":
                    if delayed:
                        raise ForeignNirError(
                            f"node {b!r}: {prog.nodes[b].kind} is on a loop through layer {a!r}; "
                            f"Lava runs loops within one layer here (run it with --runtime nir)")
                    sources.add(a)
                    inputs[n].append((None, False))
                else:
                    inputs[n].append((a, delayed))
                    if a not in members:
                        members.add(a)
                        todo.append(a)
        if len(sources) != 1:
            raise ForeignNirError(
                f"node {b!r}: {prog.nodes[b].kind} reads from {len(sources)} layers "
                f"({', '.join(sorted(sources)) or 'none'}); Lava runs chains of layers here (run "
                f"it with --runtime nir)")
        src = sources.pop()
        depth[b] = depth[src] + 1
        order = [n for n in prog.order if n in members]
        st = Stage(b, order, src, depth[b], inputs)
        _route(prog, st)
        out.append(st)
    return out


def _route(prog, st: Stage) -> None:
    """Lava's own processes where they compute the stage exactly, ours otherwise (sets
    ``st.route``, ``st.layer`` and ``st.reason``)."""
    layer = _lif_layer(prog, st)
    if isinstance(layer, str):
        st.route, st.reason = "ours", layer
    else:
        st.layer = layer
        st.route = "lif" if prog.nodes[st.exit].kind != "Output" else "dense"


def _uniform(a):
    """The one value of ``a`` (0 when empty), or None when it varies per neuron."""
    a = np.asarray(a, np.float64).ravel()
    if a.size and not np.all(a == a[0]):
        return None
    return float(a[0]) if a.size else 0.0


def _lif_layer(prog, st: Stage) -> dict:
    """The stage as Lava's ``Dense`` (+ ``LIF``): weight [n, m] float64, bias [n], neuron dict
    (du, dv) or None for a readout, rec_weight / rec_bias or None; or the reason (a string) when
    Lava's LIF does not compute it exactly."""
    r, n = prog.rules, st.exit
    node = prog.nodes[n]
    k = node.kind
    rest = [m for m in st.members if m != n and not _is_identity(prog, m)]
    syn = [m for m in rest if prog.nodes[m].kind in ("Affine", "Linear")
           and all(a is None or _is_identity(prog, a) for a, _ in st.inputs[m])]
    rec = [m for m in rest if prog.nodes[m].kind in ("Affine", "Linear")
           and st.inputs[m] == [(n, True)]]
    other = [m for m in rest if m not in syn + rec]
    if other:
        return f"{prog.nodes[other[0]].kind} node {other[0]!r}"
    if len(syn) != 1:
        return "no single Affine/Linear synapse"
    if k == "Output":
        if rec:
            return "a loop on the Output"
        p = prog.nodes[syn[0]].params
        return {"name": syn[0], "weight": np.asarray(p["weight"], np.float64),
                "bias": np.zeros(p["weight"].shape[0]) if p["bias"] is None
                else np.asarray(p["bias"], np.float64), "neuron": None}
    if k not in ("LIF", "IF", "CubaLIF"):
        return f"{k} is not a spiking neuron of Lava's LIF"
    if r.reset != "value" or r.reset_delay or r.multi_spike:
        return f"producer {r.name!r} resets otherwise than Lava's LIF (to 0 at once)"
    if r.fire != ">":
        return f"producer {r.name!r} fires at v >= v_th, Lava's LIF at v > vth"
    if k == "CubaLIF" and r.cuba_order != "new":
        return f"producer {r.name!r}'s CubaLIF reads the old current"
    p = node.params
    if np.any(p["v_reset"] != 0):
        return "v_reset != 0 (Lava's LIF resets to 0)"
    form = r.form_of(k)
    if k == "IF":
        dv, gain, du, c = 0.0, np.asarray(p["b"], np.float64), 1.0, 0.0
    else:
        if form == "euler":  # v + k((r u + v_leak) - v) = (1-k) v + k r u + k v_leak
            a = 1.0 - np.asarray(p["k"], np.float64)
            gain = np.asarray(p["k"], np.float64) * np.asarray(p["r"], np.float64)
            c = np.asarray(p["k"], np.float64) * np.asarray(p["v_leak"], np.float64)
        else:
            a, gain, c = (np.asarray(p[x], np.float64) for x in ("a", "b", "c"))
        if _uniform(a) is None:
            return "per-neuron membrane decay (Lava's LIF has one per process)"
        dv = 1.0 - _uniform(a)
        du = 1.0
        if k == "CubaLIF":
            s = p["syn"]
            if r.cuba_input == "jump":  # Norse: i jumps by w_in u -- Lava's own u update
                a_s = 1.0 - np.asarray(s["k"], np.float64)
                g_s = np.asarray(s["w_in"], np.float64)
            elif form == "euler":
                a_s = 1.0 - np.asarray(s["k"], np.float64)
                g_s = np.asarray(s["k"], np.float64) * np.asarray(s["w_in"], np.float64)
            else:
                a_s, g_s = np.asarray(s["a"], np.float64), np.asarray(s["b"], np.float64)
            if _uniform(a_s) is None:
                return "per-neuron synaptic decay (Lava's LIF has one per process)"
            du = 1.0 - _uniform(a_s)
            gain = gain * g_s
    if np.any(np.asarray(c) != 0):  # Lava's bias would also act while the pipeline fills
        return "v_leak != 0"
    thr = np.asarray(p["v_threshold"], np.float64).ravel()
    rows = (np.broadcast_to(gain, thr.shape) / thr)[:, None]
    sp = prog.nodes[syn[0]].params
    w = np.asarray(sp["weight"], np.float64)
    b = np.zeros(w.shape[0]) if sp["bias"] is None else np.asarray(sp["bias"], np.float64)
    rw = rb = None
    if rec:
        rp = prog.nodes[rec[0]].params
        rw = np.asarray(rp["weight"], np.float64) * rows
        rb = (np.zeros(rw.shape[0]) if rp["bias"] is None
              else np.asarray(rp["bias"], np.float64)) * rows[:, 0]
    return {"name": n, "weight": w * rows, "bias": b * rows[:, 0],
            "neuron": {"du": du, "dv": dv}, "rec_weight": rw, "rec_bias": rb}


def lava_chain(prog: ForeignProgram) -> list:
    """The Lava layers of the stages that Lava's own ``Dense`` + ``LIF`` run (layer dicts, see
    :func:`_lif_layer`); kept for inspection and tests."""
    return [st.layer for st in stages(prog) if st.route != "ours"]


def _passthrough(prog, st: Stage) -> bool:
    """The Output stage is only its source layer's output (no node computes anything)."""
    return (st.route == "ours" and st.exit == prog.outputs[0]
            and prog.nodes[st.source].kind != "Input"
            and all(m == st.exit or _is_identity(prog, m) for m in st.members))


def describe(prog: ForeignProgram) -> list:
    """One line per stage: which process runs it and, for ours, why Lava's LIF does not."""
    return [f"{st.exit}: " + ("Lava Dense + lava.proc.lif.LIF" if st.route == "lif" else
                              "Lava Dense" if st.route == "dense" else
                              f"= {st.source}" if _passthrough(prog, st) else
                              f"ForeignStageProcess ({st.reason})") for st in stages(prog)]


# ---------------------------------------------------------------------------------------------
# running
# ---------------------------------------------------------------------------------------------


def run_lava_foreign(prog: ForeignProgram, x, timesteps: int | None = None):
    """Run ``prog`` in Lava (float) -> ``(outputs [T, B, ...], {neuron node: spikes [T, B, ...]})``,
    the same contract as :func:`lmh_deploy.nir.foreign.run_foreign`. One Lava run per sample."""
    sts = stages(prog)
    x = check_input(prog, x, timesteps)
    T, B = x.shape[:2]
    watch = [n for n in prog.neuron_nodes()]
    outs, spikes = [], {n: [] for n in watch}
    for b in range(B):
        rec = _run_one(prog, sts, x[:, b].reshape(T, -1))
        outs.append(rec[prog.outputs[0]])
        for n in watch:
            spikes[n].append(rec[n])
    shape = lambda n: (T, B) + tuple(prog.nodes[n].out_shape)  # noqa: E731
    out = np.stack(outs, 1).astype(np.float32).reshape(shape(prog.outputs[0]))
    return out, {n: np.stack(v, 1).astype(np.float32).reshape(shape(n)) for n, v in spikes.items()}


def _run_one(prog, sts, xs):
    """One sample ``xs`` [T, n_in] through the stages -> {stage exit: [T, size]}."""
    from lmh_deploy.lava.compat import import_lava

    import_lava()
    from lava.magma.core.run_conditions import RunSteps
    from lava.magma.core.run_configs import Loihi2SimCfg
    from lava.proc.dense.process import Dense
    from lava.proc.io.source import RingBuffer as Source
    from lava.proc.lif.process import LIF

    from lmh_deploy.lava.procs import foreign_node
    from lmh_deploy.lava.procs import recorder as procs_io

    T = xs.shape[0]
    steps = T + max(st.depth for st in sts) + 1
    payload = np.zeros((xs.shape[1], steps))
    payload[:, :T] = xs.T
    records, model_map, extra = [], {}, []
    size = lambda n: int(np.prod(prog.nodes[n].out_shape))  # noqa: E731

    def recorder(n, port, name):
        rec = procs_io.SharedRecord(n, steps)
        proc = procs_io.Recorder(shape=(n,), record=rec, name=name)
        port.connect(proc.a_in)
        model_map[proc] = procs_io.PyRecorderModelFloat
        records.append(rec)
        return rec

    def const_source(bias, offset, target_port, name):
        if not np.any(bias):
            return
        ones = np.zeros((1, steps))
        ones[0, offset:] = 1.0
        src = Source(data=ones)
        d = Dense(weights=np.asarray(bias, np.float64).reshape(-1, 1), num_message_bits=24,
                  name=name)
        src.s_out.connect(d.s_in)
        d.a_out.connect(target_port)
        extra.append(src)

    source = Source(data=payload)
    ports = {prog.inputs[0]: source.s_out}
    sinks, host_bias = {}, {}
    for i, st in enumerate(sts):
        port, n = ports[st.source], st.exit
        if st.route in ("lif", "dense"):
            layer = st.layer
            dense = Dense(weights=layer["weight"], num_message_bits=24, name=f"dense{i}")
            port.connect(dense.s_in)
            if st.route == "dense":
                sinks[n] = (recorder(layer["weight"].shape[0], dense.a_out, f"out{i}"), st.depth)
                host_bias[n] = layer["bias"]
                continue
            nd = layer["neuron"]
            proc = LIF(shape=(size(n),), du=nd["du"], dv=nd["dv"], vth=1.0, name=f"lif{i}")
            dense.a_out.connect(proc.a_in)
            const_source(layer["bias"], st.depth - 1, proc.a_in, f"bias{i}")
            if layer.get("rec_weight") is not None:
                rd = Dense(weights=layer["rec_weight"], num_message_bits=24, name=f"rec{i}")
                proc.s_out.connect(rd.s_in)
                rd.a_out.connect(proc.a_in)
                const_source(layer["rec_bias"], st.depth - 1, proc.a_in, f"recbias{i}")
        elif _passthrough(prog, st):
            sinks[n] = sinks[st.source]  # the Output is the source layer's output
            continue
        else:
            stage = {"nodes": {m: prog.nodes[m] for m in st.members}, "order": st.members,
                     "inputs": st.inputs, "exit": n, "rules": prog.rules,
                     "in_shape": tuple(prog.nodes[st.source].out_shape)}
            proc = foreign_node.ForeignStageProcess(
                stage=stage, in_size=size(st.source), size=size(n), first=st.depth, steps=T,
                name=f"stage{i}")
            port.connect(proc.a_in)
            model_map[proc] = foreign_node.PyForeignStageModel
        ports[n] = proc.s_out
        sinks[n] = (recorder(size(n), proc.s_out, f"rec{i}"), st.depth)
    cfg = Loihi2SimCfg(select_tag="floating_pt", exception_proc_model_map=model_map)
    try:
        source.run(condition=RunSteps(num_steps=steps), run_cfg=cfg)
        res = {}
        for n, (rec, off) in sinks.items():
            res[n] = rec.read()[:, off: off + T].T.copy() + host_bias.get(n, 0.0)
    finally:
        source.stop()
        for r in records:
            r.close()
    return res
