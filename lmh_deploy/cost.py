"""What a deployed spiking network costs: synapses, synaptic operations (SOPs), dense MACs and an
energy estimate, per layer and per T (issue 19). One job: counting. (What it needs on Loihi 2:
:mod:`lmh_deploy.lava.resources`.)

Everything here is a pure function of a small description of the network (:class:`NetDesc`:
neuron populations and the projections between them, shapes only, plus the weights for the
fixed-point check) and of recorded spike counts ``{population: [T, B, *shape]}``. Only
:func:`describe` reads a :class:`~lmh_deploy.graph.schema.DeployGraph`.

Counting conventions
--------------------
* **Projection** = one synaptic op (conv, linear, or an identity shortcut into a residual add)
  from a *source* (a population, or the analog input) to its *target* (the population it drives,
  directly or through an ``add``; ``None`` for the readout). A ``k x k`` sum pool between them is
  folded in, as on a chip (pool + conv = one conv with a k-times larger kernel and stride): a
  neuron reaches what its pooled cell reaches; rows/columns a pool truncates reach nothing.
* **Synapses** = connections between real neurons = ``sum_i fanout(i) = sum_j fanin(j)``, conv
  weight sharing accounted: ``fanout(c, y, x) = (C_out/groups) * n_y(y) * n_x(x)`` with ``n_y(y)``
  the output rows whose window covers row ``y`` (exact at borders, with padding and stride;
  padding taps are no synapses). ``weights``: distinct parameters (``prod(weight.shape)``).
* **SOPs** per sample = ``sum_t sum_i s_i[t] * fanout(i)``, averaged over the batch. An LM-HT
  count ``s in 0..L`` costs what ``s`` binary spikes cost (what the binary reparameterization
  over L*T steps executes); ``events`` counts messages (``[s > 0] * fanout``), what a chip with
  graded spikes (Loihi 2) processes. **Firing rate** = mean count per neuron and step (<= L).
* **Analog input (direct encoding).** Layers fed by the analog input do dense MACs (``macs`` =
  their connections), counted **at every step** (``T * macs``) although a static image repeats:
  the Lava deployment does re-send the image through the first ``Dense`` each step, and it is
  the convention of the SpikingJelly / syops counters most SNN papers report. Holding that
  constant current instead (the numpy reference computes it once) is the lower bound
  ``analog_macs_once``. Event frames change every step: per step is then the only count.
* **Not counted:** neuron state updates, spike routing, memory traffic, the readout's mean.
* **Energy** (an *estimate*, not a measurement): ``E_SNN = E_AC * SOPs + E_MAC * analog MACs``
  with the 45 nm figures of Horowitz, "Computing's energy problem (and what we can do about it)",
  ISSCC 2014 (32-bit float add 0.9 pJ, multiply 3.7 pJ: MAC 4.6 pJ) that most SNN papers use.
  The same network as a ReLU ANN does every layer's MACs once per sample:
  ``E_ANN = E_MAC * sum(macs) + E_AC * (pool and residual adds)``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

#: pJ per accumulate / multiply-accumulate, 45 nm, 32-bit float (Horowitz, ISSCC 2014)
E_AC_PJ = 0.9
E_MAC_PJ = 4.6
ENERGY_SOURCE = ("Horowitz, 'Computing's energy problem (and what we can do about it)', ISSCC "
                 "2014, 45 nm: 32-bit float add 0.9 pJ (AC), multiply 3.7 pJ + add = 4.6 pJ (MAC)")


@dataclass(frozen=True)
class Population:
    """A spiking neuron layer: ``shape`` per sample, largest spike count ``levels`` (1 binary),
    threshold ``theta`` in the units of its input current."""

    name: str
    shape: tuple
    levels: int = 1
    theta: float = 1.0
    model: str = "lmh"

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))


@dataclass(frozen=True)
class Projection:
    """One synaptic op (see the module docstring).

    ``kind``: ``"conv"`` (weight ``[O, C/groups, k, k]``), ``"linear"`` (weight ``[O, F]``) or
    ``"identity"`` (an elementwise shortcut, one synapse per element). ``source``: the population
    whose counts it reads, ``None`` for the analog input; ``source_shape`` its per-sample shape;
    ``pool``: a ``pool x pool`` sum pool (stride ``pool``) between source and op (1: none);
    ``in_shape``: what the op reads (after the pool, before any flatten); ``out_shape``: what it
    writes; ``target``: the population it drives (``None``: the readout). ``weight`` and
    ``current_bound`` (largest ``|output|``, the fold's exact-sum bound) serve only the
    fixed-point check."""

    name: str
    kind: str
    source: str | None
    source_shape: tuple
    in_shape: tuple
    out_shape: tuple
    weight_shape: tuple | None = None
    stride: int = 1
    padding: int = 0
    groups: int = 1
    pool: int = 1
    target: str | None = None
    weight: np.ndarray | None = field(default=None, repr=False, compare=False)
    current_bound: float | None = None

    @property
    def analog(self) -> bool:
        return self.source is None


@dataclass(frozen=True)
class NetDesc:
    """Populations and projections of one network; ``input_quantum`` is the unit of the analog
    input as the fixed-point (Lava) model sends it."""

    populations: tuple
    projections: tuple
    input_shape: tuple
    input_quantum: float = 1.0

    def population(self, name: str) -> Population:
        for p in self.populations:
            if p.name == name:
                return p
        raise KeyError(f"no population {name!r}")


# -- the one adapter from the DeployGraph ---------------------------------------------------


def describe(graph) -> NetDesc:
    """The :class:`NetDesc` of a :class:`~lmh_deploy.graph.schema.DeployGraph`.

    The only reader of the graph: values back through ``flatten`` / ``sumpool`` to their
    population (or the input), synapses / shortcuts forward through ``add`` to their neuron; a
    split synapse (``<s>_hi`` + ``<s>_lo``) is one projection ``<s>`` (w_hi + w_lo).
    :class:`~lmh_deploy.errors.UnsupportedModelError` for an op it cannot place."""
    from lmh_deploy.errors import UnsupportedModelError

    shapes = graph.shapes()
    # value name -> ("pop", population | None, pool) for spike / analog values, ("cur",) currents
    origin = {"input": ("pop", None, 1)}
    pops, projs, consumers = [], [], {}
    for op in graph.ops:
        for i in op.inputs:
            consumers.setdefault(i, []).append(op)

    def target_of(name):
        cur = name
        while True:
            nxt = consumers.get(cur, [])
            if cur == graph.output or not nxt:
                return None
            if len(nxt) != 1 or nxt[0].kind not in ("add", "neuron"):
                raise UnsupportedModelError(f"the current {cur!r} feeds {[o.name for o in nxt]}: "
                                            f"expected one add or neuron")
            if nxt[0].kind == "neuron":
                return nxt[0].name
            cur = nxt[0].name

    def source(op):
        o = origin[op.inputs[0]]
        if o[0] != "pop":
            raise UnsupportedModelError(f"op {op.name!r} reads the current {op.inputs[0]!r}: "
                                        f"a synapse must read spikes or the input")
        return o[1], o[2]

    split_of = {o.inputs[0]: o for o in graph.ops if o.attrs.get("split")}
    split_lo = {o.inputs[1] for o in split_of.values()}
    for op in graph.ops:
        if op.kind == "neuron":
            spec = graph.neuron(op.name)
            pops.append(Population(op.name, tuple(shapes[op.name]), int(spec.levels),
                                   float(spec.theta), spec.model))
            origin[op.name] = ("pop", op.name, 1)
        elif op.kind == "flatten":
            origin[op.name] = origin[op.inputs[0]]
        elif op.kind == "sumpool":
            src, pool = source(op)
            origin[op.name] = ("pop", src, pool * int(op.attrs["kernel"]))
        elif op.kind in ("synapse", "scale", "add"):
            origin[op.name] = ("cur",)
        else:
            raise UnsupportedModelError(f"op {op.name!r} of kind {op.kind!r} has no cost rule")
        if op.kind in ("synapse", "scale") and op.name not in split_lo:
            src, pool = source(op)
            src_shape = tuple(graph.input_shape) if src is None else tuple(shapes[src])
            in_shape = src_shape[:1] + tuple(d // pool for d in src_shape[1:])
            name = split_of[op.name].name if op.name in split_of else op.name
            common = dict(name=name, source=src, source_shape=src_shape, in_shape=in_shape,
                          out_shape=tuple(shapes[op.name]), pool=pool, target=target_of(name))
            if op.kind == "scale":
                projs.append(Projection(kind="identity", **common))
            else:
                w = graph.synapse_weights(name)[0] if name != op.name else op.arrays["weight"]
                projs.append(Projection(
                    kind=op.attrs["op"], weight_shape=tuple(w.shape),
                    stride=int(op.attrs.get("stride", 1)), padding=int(op.attrs.get("padding", 0)),
                    groups=int(op.attrs.get("groups", 1)), weight=w,
                    current_bound=op.attrs.get("out_bound"), **common))
    return NetDesc(tuple(pops), tuple(projs), tuple(graph.input_shape), float(graph.input_quantum))


# -- connectivity ---------------------------------------------------------------------------


def axis_fanout(n_in: int, n_out: int, k: int, stride: int, padding: int) -> np.ndarray:
    """For each input index ``i`` along one axis: the number of outputs ``o in [0, n_out)`` whose
    window ``[o*stride - padding, o*stride - padding + k)`` contains ``i``. int64 ``[n_in]``."""
    i = np.arange(n_in)[:, None]
    o = np.arange(n_out)[None, :]
    d = i + padding - o * stride
    return ((d >= 0) & (d < k)).sum(1).astype(np.int64)


def axis_fanin(n_in: int, n_out: int, k: int, stride: int, padding: int) -> np.ndarray:
    """For each output ``o`` along one axis: its window's taps that fall on real inputs
    (``0 <= o*stride - padding + j < n_in``, ``j in [0, k)``). int64 ``[n_out]``."""
    o = np.arange(n_out)[:, None]
    pos = o * stride - padding + np.arange(k)[None, :]
    return ((pos >= 0) & (pos < n_in)).sum(1).astype(np.int64)


def _grid_fanout(p: Projection) -> np.ndarray:
    """Fan-out of each element of ``p.in_shape`` (the grid the op reads)."""
    if p.kind == "identity":
        return np.ones(p.in_shape, np.int64)
    if p.kind == "linear":
        return np.full(p.in_shape, p.weight_shape[0], np.int64)
    if p.kind == "conv":
        o, _, kh, kw = p.weight_shape
        c, h, w = p.in_shape
        _, ho, wo = p.out_shape
        fy = axis_fanout(h, ho, kh, p.stride, p.padding)
        fx = axis_fanout(w, wo, kw, p.stride, p.padding)
        per = (o // p.groups) * np.outer(fy, fx)
        return np.broadcast_to(per, (c, h, w)).astype(np.int64)
    raise ValueError(f"unknown projection kind {p.kind!r}")


def fanout(p: Projection) -> np.ndarray:
    """Synapses leaving each source neuron through ``p``: int64 array of ``p.source_shape``
    (a pooled neuron reaches what its pool cell reaches; truncated rows/columns reach nothing)."""
    g = _grid_fanout(p)
    if p.pool == 1:
        return g
    k = p.pool
    c, h, w = p.source_shape
    out = np.zeros((c, h, w), np.int64)
    hp, wp = g.shape[1] * k, g.shape[2] * k
    out[:, :hp, :wp] = np.repeat(np.repeat(g, k, axis=1), k, axis=2)
    return out


def fanin(p: Projection) -> np.ndarray:
    """Synapses arriving at each output of ``p`` from real source neurons: int64 array of
    ``p.out_shape`` (zero-padding taps excluded; a pooled input counts its ``pool**2`` neurons)."""
    k2 = p.pool * p.pool
    if p.kind == "identity":
        return np.full(p.out_shape, k2, np.int64)
    if p.kind == "linear":
        return np.full(p.out_shape, k2 * p.weight_shape[1], np.int64)
    if p.kind == "conv":
        _, cg, kh, kw = p.weight_shape
        _, h, w = p.in_shape
        o, ho, wo = p.out_shape
        fy = axis_fanin(h, ho, kh, p.stride, p.padding)
        fx = axis_fanin(w, wo, kw, p.stride, p.padding)
        return np.broadcast_to(k2 * cg * np.outer(fy, fx), (o, ho, wo)).astype(np.int64)
    raise ValueError(f"unknown projection kind {p.kind!r}")


def synapses(p: Projection) -> int:
    """Connections of ``p`` between real neurons (= ``fanout(p).sum()`` = ``fanin(p).sum()``)."""
    return int(fanout(p).sum())


def grid_macs(p: Projection) -> int:
    """Multiply-accumulates of one dense evaluation of ``p`` on the grid it reads (after the
    pool; zero-padding taps excluded): ``synapses(p) / pool**2``."""
    return synapses(p) // (p.pool * p.pool)


def pool_adds(p: Projection) -> int:
    """Additions of one dense evaluation of ``p``'s sum pool (``k*k - 1`` per pooled cell)."""
    if p.pool == 1:
        return 0
    return int(np.prod(p.in_shape)) * (p.pool * p.pool - 1)


def n_weights(p: Projection) -> int:
    """Distinct parameters of ``p`` (conv: shared over positions; identity: one factor)."""
    return 1 if p.weight_shape is None else int(np.prod(p.weight_shape))


# -- activity -------------------------------------------------------------------------------


def _counts(spikes: dict, pop: Population, steps: int | None) -> np.ndarray:
    """``pop``'s counts over the first ``steps`` steps as ``[T, B, *pop.shape]`` (runtimes that
    record flat layers, such as Lava, give ``[T, B, N]``)."""
    s = np.asarray(spikes[pop.name])
    s = s[:steps] if steps else s
    return s.reshape(s.shape[:2] + tuple(pop.shape))


def sops(p: Projection, counts: np.ndarray) -> float:
    """Synaptic operations per sample of ``p`` for counts ``[T, B, *source_shape]``:
    ``(1/B) sum_{t,b,i} s[t,b,i] * fanout(i)`` (graded counts weighted by their value)."""
    c = np.asarray(counts, np.float64)
    per_neuron = c.sum(0).reshape(c.shape[1], -1).sum(0)  # summed over T and B
    return float(per_neuron @ fanout(p).reshape(-1).astype(np.float64)) / c.shape[1]


def events(p: Projection, counts: np.ndarray) -> float:
    """Synaptic events per sample of ``p``: ``(1/B) sum [s > 0] * fanout`` (one per message)."""
    return sops(p, (np.asarray(counts) > 0).astype(np.float64))


def firing_rate(counts: np.ndarray) -> float:
    """Mean spike count per neuron and step of counts ``[T, B, ...]``."""
    return float(np.asarray(counts, np.float64).mean())


# -- report ---------------------------------------------------------------------------------


def cost_report(desc: NetDesc, spikes: dict, timesteps: int | None = None,
                frames: bool = False) -> dict:
    """Per-projection, per-population and total counts over the first ``timesteps`` steps of
    ``spikes`` (``{population: [T, B, *shape]}``; all steps if None). ``frames``: the input
    changes every step (event frames) rather than a static image repeated (direct encoding).

    Returns a JSON-able dict: ``layers`` (one row per projection), ``populations``, ``totals``
    (per sample, and SOPs per step), ``energy`` (:func:`energy`), ``conventions``.
    Raises ``KeyError`` naming a population missing from ``spikes``."""
    missing = [p.name for p in desc.populations if p.name not in spikes]
    if missing:
        raise KeyError(f"no recorded spikes for {missing}")
    counts = {p.name: _counts(spikes, p, timesteps) for p in desc.populations}
    t_run = next(iter(counts.values())).shape[0] if counts else int(timesteps or 1)
    if timesteps and t_run < timesteps:
        raise ValueError(f"asked for {timesteps} steps but the spikes hold {t_run}")
    rates = {k: firing_rate(c) for k, c in counts.items()}
    layers = []
    for p in desc.projections:
        fo, fi = fanout(p), fanin(p)
        n_out = int(np.prod(p.out_shape))
        once = grid_macs(p) if p.analog and p.kind != "identity" else 0
        spiking = not p.analog
        layers.append({
            "name": p.name, "kind": p.kind, "source": p.source or "input (analog)",
            "target": p.target or "readout", "pool": p.pool, "neurons": n_out,
            "synapses": int(fo.sum()), "weights": n_weights(p), "fan_in_mean": float(fi.mean()),
            "fan_in_max": int(fi.max()), "fan_out_mean": float(fo.mean()),
            "fan_out_max": int(fo.max()), "firing_rate": rates.get(p.target),
            "sops": sops(p, counts[p.source]) if spiking else 0.0,
            "events": events(p, counts[p.source]) if spiking else 0.0,
            "macs": once * t_run, "macs_once": once * (t_run if frames else 1),
            "analog_adds": 0 if spiking else pool_adds(p) * t_run,
            # the ReLU ANN: MACs once; a shortcut is an addition, not a MAC
            "ann_macs": 0 if p.kind == "identity" else grid_macs(p),
            "ann_adds": pool_adds(p) + (n_out if p.kind == "identity" else 0)})
    populations = []
    for pop in desc.populations:
        c = counts[pop.name]
        fo = sum((fanout(p) for p in desc.projections if p.source == pop.name),
                 np.zeros(pop.shape, np.int64))
        populations.append({"name": pop.name, "shape": list(pop.shape), "neurons": pop.size,
                            "levels": pop.levels, "firing_rate": rates[pop.name],
                            "spikes_per_sample": float(c.sum(dtype=np.float64) / c.shape[1]),
                            "fan_out_mean": float(fo.mean())})
    sums = {"synapses": "synapses", "weights": "weights", "sops_per_sample": "sops",
            "events_per_sample": "events", "analog_macs_per_sample": "macs",
            "analog_macs_once": "macs_once", "analog_adds_per_sample": "analog_adds",
            "ann_macs_per_sample": "ann_macs", "ann_adds_per_sample": "ann_adds"}
    totals = {"timesteps": int(t_run), "neurons": sum(p.size for p in desc.populations),
              "readout_units": sum(r["neurons"] for r in layers if r["target"] == "readout"),
              "spikes_per_sample": sum(r["spikes_per_sample"] for r in populations),
              **{k: sum(r[v] for r in layers) for k, v in sums.items()}}
    totals["sops_per_step"] = totals["sops_per_sample"] / t_run
    return {"layers": layers, "populations": populations, "totals": totals,
            "energy": energy(totals), "conventions": CONVENTIONS}


CONVENTIONS = {  # the module docstring in short, for JSON reports
    "sops": "per sample: sum of spike count x fan-out (graded counts weighted by their value)",
    "events": "as sops, counting a graded message once",
    "analog_macs": "layers fed by the analog input: dense MACs at every step; "
                   "analog_macs_once: computed once and held",
    "synapses": "connections between real neurons (conv sharing and padding accounted)",
    "energy": "an estimate: " + ENERGY_SOURCE + "; neuron updates, routing, memory not counted"}


def energy(totals: dict, e_ac: float = E_AC_PJ, e_mac: float = E_MAC_PJ) -> dict:
    """Energy estimate in pJ per sample from :func:`cost_report` totals (see module docstring):
    ``snn_pj = e_ac*(sops + analog adds) + e_mac*analog_macs``, ``snn_once_pj`` the same with the
    analog layer once, ``ann_pj = e_mac*ann_macs + e_ac*ann_adds``; ``ratio = ann_pj / snn_pj``."""
    adds = totals.get("analog_adds_per_sample", 0)
    snn = e_ac * (totals["sops_per_sample"] + adds) + e_mac * totals["analog_macs_per_sample"]
    once = e_ac * (totals["sops_per_sample"] + adds) + e_mac * totals["analog_macs_once"]
    ann = e_mac * totals["ann_macs_per_sample"] + e_ac * totals["ann_adds_per_sample"]
    return {"snn_pj": snn, "snn_once_pj": once, "ann_pj": ann,
            "ann_over_snn": ann / snn if snn else math.inf,
            "e_ac_pj": e_ac, "e_mac_pj": e_mac, "source": ENERGY_SOURCE, "estimate": True}


__all__ = ["E_AC_PJ", "E_MAC_PJ", "ENERGY_SOURCE", "NetDesc", "Population", "Projection",
           "axis_fanin", "axis_fanout", "cost_report", "describe", "energy", "events", "fanin",
           "fanout", "firing_rate", "grid_macs", "n_weights", "pool_adds", "sops", "synapses"]
