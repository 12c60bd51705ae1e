"""lava-dl ``netx`` export (``lmh-export --format netx``): lava-dl 0.6's HDF5 network exchange
file, the standard route to Loihi 2 through Lava (read by ``lava.lib.dl.netx.hdf5.Network``).

**Lossy by construction.** netx's reader builds chains of ``dense``/``conv`` blocks of Lava's
bit-accurate ``LIF``/``LIFReset`` (``CUBA``) neurons; no netx form keeps our models exactly:

* **reset**: CUBA resets v to 0 on a spike (hard reset); ours subtracts θ (soft reset);
* **v(0)**: CUBA starts (and restarts every ``reset_interval``) at u = v = 0; LM-H/LIF start at θ/2;
* **threshold**: CUBA fires at ``v > vThMant·2⁶`` (strict), ours at ``m ≥ θ``;
* **binary spikes**: ``LIF`` sends 0/1 whatever ``messageBits`` says, so an L-level neuron
  (LM-HT) becomes binary at θ (counts 2..L are lost); SDNN's graded messages are sigma-delta
  (ReLU) neurons, not ours;
* **two compartments** (LM-H): CUBA's current u (retention ``1 − iDecay/4096``) is the dendrite
  (μ_D clipped to [0, 1)), λ_D is folded into the weights, the voltage's retention
  ``1 − vDecay/4096`` is λ_S (clipped to [0, 1]); the soma → dendrite coupling μ_S is dropped, and
  the bias (added to v in CUBA, to the dendrite in LM-H) is put on v as its dendritic steady
  state ``λ_D·b/(1 − μ_D)``;
* **Ω** (LM-HT's non-causal T-GIM) cannot be expressed: it is replaced by its mean row sum, a
  scale folded into the weights (exact for a constant input, e.g. the first layer);
  per-step (radical) and per-channel constants are replaced by their mean;
* **fixed point**: 8-bit weights per layer scaled so that θ is an integer mantissa
  (``vThMant = ⌊127·θ/max|W|⌋``, at most 17 bits), 13-bit bias mantissas (saturated), 24-bit
  state, 12-bit decays.
  The first layer takes the data set's integer input grid (``x / input_quantum``) as graded input.

Only layer chains (flatten, linear, neuron; conv without pooling) export: netx 0.6 raises
``NotImplementedError`` for pooling, residual adds and concatenation. The readout is a ``dense``
block whose CUBA neuron has iDecay = vDecay = 4096 (v = this step's input + bias) and the largest
threshold (v is clipped to 24 bits, so it never fires), so its voltage ``v`` is the per-step logit: ``logit = v / 2⁶ · scale`` (``scale`` per file attr).

:func:`simulate_netx` is our numpy simulation of exactly these semantics (the Lava bit-accurate
LIF/Dense models), :func:`run_netx_lava` runs the file in Lava with netx's own processes.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from lmh_deploy.errors import ExportFormatError, UnsupportedModelError, require

V_SHIFT = 6                  # Loihi MSB alignment of activations, bias and threshold
DECAY_UNITY = 4096           # 12-bit decays
BIAS_MAX = 4095              # 13-bit signed bias mantissa
VTH_MAX = (1 << 17) - 1      # 17-bit threshold mantissa
STATE_MAX = (1 << 23) - 1    # 24-bit state


def _neuron_consts(spec) -> dict:
    """CUBA constants of one of our neurons: scale of the synapse input, current retention,
    voltage retention and the bias factor (the documented approximations above)."""
    p = {k: float(np.mean(v)) for k, v in spec.params.items()}   # per-step/per-channel -> mean
    gain = 1.0
    if spec.omega is not None:
        gain = float(np.mean(np.asarray(spec.omega, np.float64).sum(1)))
    if spec.model == "lmh":
        mu_d = min(max(p["mu_d"], 0.0), 1.0 - 1.0 / DECAY_UNITY)
        lam_s = min(max(p["lam_s"], 0.0), 1.0)
        gain *= p["lam_d"]
        return {"gain": gain, "u_keep": mu_d, "v_keep": lam_s, "bias_gain": 1.0 / (1.0 - mu_d)}
    lam = min(max(p["lam"], 0.0), 1.0)
    return {"gain": gain, "u_keep": 0.0, "v_keep": lam, "bias_gain": 1.0}


def netx_layers(graph) -> list:
    """The integer netx blocks of ``graph``: a list of dicts (``type``, ``shape``, ``weight``
    int [out, in], ``bias`` int [out], neuron ``iDecay``/``vDecay``/``vThMant``, ``scale``: the real
    value of one unit of v/2⁶). Non-chains raise :class:`UnsupportedModelError`."""
    try:
        chain = graph.layer_chain()
    except UnsupportedModelError as e:
        raise UnsupportedModelError(f"netx export: {e}; lava-dl 0.6's netx reader has no pooling "
                                    f"or residual blocks; export --format nir for Lava") from None
    blocks, in_scale = [], float(graph.input_quantum)    # real value of one input unit
    for i, L in enumerate(chain):
        if L.op != "linear" or L.flatten_before and i > 0:
            raise UnsupportedModelError(f"netx export: layer {L.name!r} ({L.op}) — only MLP "
                                        f"chains (flatten, linear) are written; export --format nir")
        c = _neuron_consts(L.neuron) if L.neuron is not None else \
            {"gain": 1.0, "u_keep": 0.0, "v_keep": 0.0, "bias_gain": 1.0}  # readout: v = u + b
        w = np.asarray(L.weight, np.float64) * in_scale * c["gain"]   # per input unit
        b = np.asarray(getattr(L, "bias64", L.bias), np.float64) * c["gain"] * c["bias_gain"]
        wmax = float(np.abs(w).max()) or 1.0
        if L.neuron is not None:
            vth = int(np.clip(np.floor(127.0 * float(L.neuron.theta) / wmax), 1, VTH_MAX))
            scale = float(L.neuron.theta) / vth            # real value of one weight unit
        else:
            vth, scale = VTH_MAX, wmax / 127.0
        wq = np.clip(np.rint(w / scale), -128, 127).astype(np.int64)
        bq = np.clip(np.rint(b / scale), -BIAS_MAX - 1, BIAS_MAX).astype(np.int64)
        blocks.append({"type": "dense", "shape": [int(w.shape[0])], "weight": wq, "bias": bq,
                       "iDecay": int(round(DECAY_UNITY * (1.0 - c["u_keep"]))),
                       "vDecay": int(round(DECAY_UNITY * (1.0 - c["v_keep"]))),
                       "vThMant": vth, "scale": scale})
        in_scale = 1.0                                     # binary spikes from here on
    return blocks


def write_netx(graph, path, timesteps: int | None = None, **_ignored) -> Path:
    """Write ``graph`` as a lava-dl netx HDF5 file at ``path`` (atomically): ``layer/0`` the
    input (shape, CHW reversed as netx reads it), ``layer/1..`` dense blocks (CUBA neurons),
    the readout last; file attrs ``lmh_netx`` (JSON: scales, input quantum, T, the changes)."""
    from lmh_deploy.atomic import atomic_output

    h5py = require("h5py", "nir")
    blocks = netx_layers(graph)
    path = Path(path)
    meta = {"format": "lmh-netx/1", "timesteps": int(timesteps or graph.timesteps),
            "input_quantum": float(graph.input_quantum), "input_bound": float(graph.input_bound),
            "input_shape": list(graph.input_shape),
            "input_message_bits": int(np.ceil(np.log2(graph.input_bound / graph.input_quantum + 1))) + 1,
            "readout_scale": blocks[-1]["scale"],
            "lossy": "hard reset, v(0)=0, strict threshold, binary spikes, no mu_S, Omega -> "
                     "mean row sum, 8-bit weights (see lmh_deploy/lava/netx.py)"}
    with atomic_output(path) as tmp, h5py.File(tmp, "w") as f:
        f.attrs["lmh_netx"] = json.dumps(meta)
        lay = f.create_group("layer")
        g = lay.create_group("0")
        g.create_dataset("type", data=np.array([b"input"]))
        g.create_dataset("shape", data=np.array([int(np.prod(graph.input_shape))]))
        for i, blk in enumerate(blocks, 1):
            g = lay.create_group(str(i))
            g.create_dataset("type", data=np.array([b"dense"]))
            g.create_dataset("shape", data=np.array(blk["shape"]))
            g.create_dataset("weight", data=blk["weight"].astype(np.float32))
            g.create_dataset("bias", data=blk["bias"].astype(np.float32))
            n = g.create_group("neuron")
            n.create_dataset("type", data=np.array([b"CUBA"]))
            for k in ("iDecay", "vDecay", "vThMant"):
                n.create_dataset(k, data=blk[k])
            n.create_dataset("refDelay", data=1)
            n.create_dataset("gradedSpike", data=False)
    return path


def read_netx(path) -> tuple:
    """(blocks, meta) of a file written by :func:`write_netx` (blocks as in :func:`netx_layers`)."""
    h5py = require("h5py", "nir")
    with h5py.File(path, "r") as f:
        if "lmh_netx" not in f.attrs:
            raise ExportFormatError(f"{path}: not an lmh-deploy netx file (no lmh_netx attribute)")
        meta = json.loads(f.attrs["lmh_netx"])
        blocks = []
        for i in range(1, len(f["layer"])):
            g = f["layer"][str(i)]
            blk = {"weight": g["weight"][()].astype(np.int64), "bias": g["bias"][()].astype(np.int64)}
            for k in ("iDecay", "vDecay", "vThMant"):
                blk[k] = int(g["neuron"][k][()])
            blocks.append(blk)
    return blocks, meta


def _decay(x, keep_num):
    """Lava's fixed-point decay: sign(x)·(|x|·keep_num >> 12) (truncation toward zero)."""
    y = x.astype(np.int64) * keep_num
    return np.sign(y) * (np.abs(y) >> 12)


def simulate_netx(path, x, timesteps: int | None = None) -> tuple:
    """Our numpy simulation of the file under netx's semantics (Lava's bit-accurate ``Dense`` and
    ``LIF`` models, fresh state per sample), x ``[B, ...]`` in data units.
    Returns (logits [T, B, K] float32, spikes {block index: int [T, B, N]})."""
    blocks, meta = read_netx(path)
    T = int(timesteps or meta["timesteps"])
    xq = np.rint(np.asarray(x, np.float64).reshape(len(x), -1) / meta["input_quantum"]).astype(np.int64)
    B = xq.shape[0]
    u = [np.zeros((B, len(b["bias"])), np.int64) for b in blocks]
    v = [np.zeros_like(a) for a in u]
    logits, spikes = [], {i: [] for i in range(len(blocks) - 1)}
    for _ in range(T):
        s = xq
        for i, b in enumerate(blocks):
            a = s @ b["weight"].T
            du = b["iDecay"] - 1 + 1                          # du + ds_offset
            u[i] = _decay(u[i], DECAY_UNITY - du) + (a << V_SHIFT)
            u[i] = np.where(u[i] > STATE_MAX + 1, u[i] - 2 * (STATE_MAX + 1), u[i])
            u[i] = np.where(u[i] <= -(STATE_MAX + 1), u[i] + 2 * (STATE_MAX + 1), u[i])
            v[i] = np.clip(_decay(v[i], DECAY_UNITY - b["vDecay"]) + u[i] + (b["bias"] << V_SHIFT),
                           -STATE_MAX, STATE_MAX)
            s = (v[i] > (b["vThMant"] << V_SHIFT)).astype(np.int64)
            v[i] = np.where(s > 0, 0, v[i])
            if i < len(blocks) - 1:
                spikes[i].append(s)
        logits.append(v[-1] / 2.0 ** V_SHIFT * meta["readout_scale"])
    return (np.stack(logits).astype(np.float32), {k: np.stack(a) for k, a in spikes.items()})


def import_netx():
    """``lava.lib.dl.netx.hdf5`` on Python 3.11 without torchvision: lava-dl's ``slayer`` package
    ``__init__`` imports its object-detection module (torchvision); netx needs only
    ``slayer.neuron``, so the package is registered without running its ``__init__``."""
    import importlib
    import os
    import sys
    import types

    from lmh_deploy.lava.compat import import_lava

    import_lava()
    name = "lava.lib.dl.slayer"
    if name not in sys.modules:
        try:
            dl = importlib.import_module("lava.lib.dl")
        except ImportError as e:
            from lmh_deploy.errors import LavaUnavailableError
            raise LavaUnavailableError(f"lava-dl is not installed ({e}): run scripts/setup.sh") from e
        pkg = types.ModuleType(name)
        pkg.__path__ = [os.path.join(list(dl.__path__)[0], "slayer")]
        pkg.__package__ = name
        sys.modules[name] = pkg
    return importlib.import_module("lava.lib.dl.netx.hdf5")


def run_netx_lava(path, x, timesteps: int | None = None) -> np.ndarray:
    """Run the file in Lava with netx's own processes (``hdf5.Network``, bit-accurate ``LIFReset``
    neurons reset every T steps so samples stream back to back; a ``RingBuffer`` feeds the integer
    input grid, a ``Monitor`` reads the readout voltage). Returns logits [T, B, K] float32.
    Always stops Lava in ``finally``; run it under a hard timeout."""
    hdf5 = import_netx()
    from lava.magma.core.run_conditions import RunSteps
    from lava.magma.core.run_configs import Loihi2SimCfg
    from lava.proc.io.source import RingBuffer
    from lava.proc.monitor.process import Monitor

    _, meta = read_netx(path)
    T = int(timesteps or meta["timesteps"])
    xq = np.rint(np.asarray(x, np.float64).reshape(len(x), -1) / meta["input_quantum"]).astype(np.int32)
    B = xq.shape[0]
    net = hdf5.Network(net_config=str(path), input_message_bits=meta["input_message_bits"],
                       reset_interval=T, reset_offset=1)
    depth = len(net)
    steps = B * T + depth
    data = np.zeros((xq.shape[1], steps), np.int32)
    data[:, :B * T] = np.repeat(xq.T, T, axis=1)
    src = RingBuffer(data=data)
    src.s_out.connect(net.inp)
    mon = Monitor()
    mon.probe(net.layers[-1].neuron.v, steps)
    try:
        net.run(condition=RunSteps(num_steps=steps), run_cfg=Loihi2SimCfg(select_tag="fixed_pt"))
        v = np.asarray(mon.get_data()[net.layers[-1].neuron.name]["v"], np.float64)  # [steps, K]
    finally:
        net.stop()
    v = v[depth:depth + B * T].reshape(B, T, -1).transpose(1, 0, 2)
    return (v / 2.0 ** V_SHIFT * meta["readout_scale"]).astype(np.float32)
