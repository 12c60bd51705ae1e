"""Foreign NIR files (other tools) in Lava, with Lava's own ``lava.proc.lif`` LIF process.

A checked :class:`~lmh_deploy.nir.foreign.ForeignProgram` that is a chain ``Input → Affine/Linear →
neuron → … → Output`` (neurons LIF, IF or CubaLIF, optional recurrent ``Affine`` loop on a neuron,
1-D Flatten) becomes ``RingBuffer → Dense → LIF → Dense → …``. Lava's float LIF computes::

    u = u(1 − du) + a_in;   v = v(1 − dv) + u + bias;   s = v > vth;   v = 0 where s

which is the foreign runtime's "decay" form with ``du = 1 − a_syn`` (``du = 1`` for LIF / IF: no
synaptic memory), ``dv = 1 − a``; the input gains (``b``: ``k·r``, ``k_s·w_in`` …) and ``1/v_th``
are folded into the Dense rows (Lava has one ``vth``), an Affine bias is a constant input
channel from its own source (zero until the layer's first step, so nothing leaks in before t = 0).
Each Dense hop adds one step of latency; outputs are aligned by depth. Anything Lava's LIF cannot
compute exactly this way -- a non-zero ``v_reset``, subtractive / delayed / multi-spike reset,
per-neuron decays, conv / pooling layers, the NIR paper's old-current CubaLIF -- is a one-line
error naming the node (run it with ``--runtime nir``). Firing at ``v ≥ θ`` (SpikingJelly) runs with a
warning (only spikes exactly on the threshold can differ). One Lava run per sample (Lava's LIF
has no per-sample reset); every run is stopped in ``finally``.
"""
from __future__ import annotations

import warnings

import numpy as np

from lmh_deploy.errors import ForeignNirError
from lmh_deploy.nir.foreign import ForeignProgram, check_input


def _uniform(a, node, what):
    a = np.asarray(a, np.float64).ravel()
    if a.size and not np.all(a == a[0]):
        raise ForeignNirError(f"node {node}: per-neuron {what} has no form in Lava's LIF (one "
                              f"decay per process); run it with --runtime nir")
    return float(a[0]) if a.size else 0.0


def lava_chain(prog: ForeignProgram) -> list:
    """The program as Lava layers: dicts (weight [n, m] float64, bias [n], neuron dict or None,
    rec_weight / rec_bias or None, name). One-line errors for what Lava's LIF cannot run."""
    r = prog.rules
    if r.reset != "value" or r.reset_delay or r.multi_spike:
        raise ForeignNirError(f"producer {r.name!r}: its reset rule is not Lava's LIF (hard "
                              f"reset to 0); run it with --runtime nir")
    if r.fire != ">":
        warnings.warn(f"producer {r.name!r} fires at v >= v_th, Lava's LIF at v > vth: spikes "
                      f"exactly on the threshold differ", RuntimeWarning, stacklevel=3)
    if any(v.kind == "CubaLIF" for v in prog.nodes.values()) and r.cuba_order != "new":
        raise ForeignNirError(f"producer {r.name!r}: its CubaLIF current update is not Lava's "
                              f"(u = u(1 - du) + a_in, then v from the new u); run it with "
                              f"--runtime nir")
    outs = {n: [b for a, b in prog.edges if a == n] for n in prog.nodes}
    ins = {n: [a for a, b in prog.edges if b == n] for n in prog.nodes}
    cur = prog.inputs[0]
    layers, pending = [], None
    while True:
        nxt = [b for b in outs[cur] if not (prog.nodes[b].kind in ("Affine", "Linear")
                                            and outs[b] == [cur] and ins[b] == [cur])]
        if len(nxt) != 1:
            raise ForeignNirError(f"node {cur!r}: {prog.nodes[cur].kind} feeds {len(nxt)} nodes; "
                                  f"Lava runs chains (run it with --runtime nir)")
        n = nxt[0]
        node = prog.nodes[n]
        k = node.kind
        if k == "Flatten" and len(node.in_shape) == 1:
            cur = n
            continue
        if k in ("Affine", "Linear"):
            if pending is not None:
                raise ForeignNirError(f"node {n!r}: two synapses in a row; Lava needs a neuron "
                                      f"between Dense layers")
            p = node.params
            pending = (np.asarray(p["weight"], np.float64),
                       np.zeros(p["weight"].shape[0]) if p["bias"] is None
                       else np.asarray(p["bias"], np.float64), n)
            cur = n
            continue
        if k == "Output":
            if pending is not None:
                layers.append({"name": pending[2], "weight": pending[0], "bias": pending[1],
                               "neuron": None})
            return layers
        if k not in ("LIF", "IF", "CubaLIF"):
            raise ForeignNirError(f"node {n!r}: {k} has no Lava LIF form here (Lava runs Affine/"
                                  f"Linear + LIF/IF/CubaLIF chains); run it with --runtime nir")
        if pending is None:
            raise ForeignNirError(f"node {n!r}: {k} is not fed by an Affine/Linear node")
        w, b, _ = pending
        pending = None
        p = node.params
        if np.any(p["v_reset"] != 0):
            raise ForeignNirError(f"node {n!r}: {k} resets to v_reset != 0; Lava's LIF resets to 0")
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
            dv = 1.0 - _uniform(a, repr(n), "membrane decay")
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
                du = 1.0 - _uniform(a_s, repr(n), "synaptic decay")
                gain = gain * g_s
        thr = np.asarray(p["v_threshold"], np.float64).ravel()
        rows = (np.broadcast_to(gain, thr.shape) / thr)[:, None]
        rec = [m for m in outs[n] if prog.nodes[m].kind in ("Affine", "Linear")
               and outs[m] == [n] and ins[m] == [n]]
        rw = rb = None
        if rec:
            rp = prog.nodes[rec[0]].params
            rw = np.asarray(rp["weight"], np.float64) * rows
            rb = (np.zeros(rw.shape[0]) if rp["bias"] is None
                  else np.asarray(rp["bias"], np.float64)) * rows[:, 0]
        layers.append({"name": n, "weight": w * rows, "bias": b * rows[:, 0],
                       "neuron": {"du": du, "dv": dv, "leak": np.broadcast_to(c, thr.shape) / thr},
                       "rec_weight": rw, "rec_bias": rb})
        cur = n


def run_lava_foreign(prog: ForeignProgram, x, timesteps: int | None = None):
    """Run ``prog`` in Lava (float) -> ``(outputs [T, B, ...], {neuron node: spikes [T, B, n]})``,
    the same contract as :func:`lmh_deploy.nir.foreign.run_foreign`."""
    layers = lava_chain(prog)
    x = check_input(prog, x, timesteps)
    T, B = x.shape[:2]
    outs, spikes = [], {l["name"]: [] for l in layers if l["neuron"] is not None}
    for b in range(B):
        o, s = _run_one(layers, x[:, b].reshape(T, -1))
        outs.append(o)
        for k, v in s.items():
            spikes[k].append(v)
    out = np.stack(outs, 1).astype(np.float32)
    return out.reshape((T, B) + tuple(prog.nodes[prog.outputs[0]].out_shape)), \
        {k: np.stack(v, 1).astype(np.float32) for k, v in spikes.items()}


def _run_one(layers, xs):
    from lmh_deploy.lava.compat import import_lava

    import_lava()
    from lava.magma.core.run_conditions import RunSteps
    from lava.magma.core.run_configs import Loihi2SimCfg
    from lava.proc.dense.process import Dense
    from lava.proc.io.source import RingBuffer as Source
    from lava.proc.lif.process import LIF

    from lmh_deploy.lava.procs import recorder as procs_io

    T = xs.shape[0]
    depth = len(layers)
    steps = T + depth + 1
    payload = np.zeros((xs.shape[1], steps))
    payload[:, :T] = xs.T
    records, model_map, sinks = [], {}, []

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

    extra = []
    source = Source(data=payload)
    port, readout = source.s_out, None
    for i, layer in enumerate(layers):
        w = layer["weight"]
        dense = Dense(weights=w, num_message_bits=24, name=f"dense{i}")
        port.connect(dense.s_in)
        if layer["neuron"] is None:
            readout = (recorder(w.shape[0], dense.a_out, f"readout{i}"), layer["bias"], i + 1)
            break
        nd = layer["neuron"]
        lif = LIF(shape=(w.shape[0],), du=nd["du"], dv=nd["dv"], vth=1.0,
                  bias_mant=np.asarray(nd["leak"], np.float64), name=f"lif{i}")
        dense.a_out.connect(lif.a_in)
        const_source(layer["bias"], i, lif.a_in, f"bias{i}")   # reaches the LIF at step i + 2
        if layer.get("rec_weight") is not None:
            rd = Dense(weights=layer["rec_weight"], num_message_bits=24, name=f"rec{i}")
            lif.s_out.connect(rd.s_in)
            rd.a_out.connect(lif.a_in)
            const_source(layer["rec_bias"], i, lif.a_in, f"recbias{i}")
        sinks.append((layer["name"], recorder(w.shape[0], lif.s_out, f"spikes{i}"), i + 1))
        port = lif.s_out
    cfg = Loihi2SimCfg(select_tag="floating_pt", exception_proc_model_map=model_map)
    try:
        source.run(condition=RunSteps(num_steps=steps), run_cfg=cfg)
        spk = {name: rec.read()[:, off: off + T].T.copy() for name, rec, off in sinks}
        if readout is not None:
            rec, bias, off = readout
            out = rec.read()[:, off: off + T].T + bias
        else:
            out = spk[layers[-1]["name"]]
    finally:
        source.stop()
        for r in records:
            r.close()
    return out, spk
