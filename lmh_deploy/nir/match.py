"""Recognise neuron clusters of a NIR program that :mod:`lmh_deploy.neuron_math` can run exactly.

A top-level component that matches the LM-H motif (two ``I`` nodes) or the soft-reset
multi-level motif (one ``I`` node, L thresholds) *with parameters that are exactly
representable* is evaluated by the shared step functions (the reference's float32 order);
anything else is evaluated node by node with the generic semantics.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lmh_deploy.nir.convention import binary_threshold, level_threshold


@dataclass
class Fused:
    """A neuron cluster evaluated by neuron_math: model "lmh" (params mu_d, mu_s, lam_s, lam_d)
    or "lmht" (lam); full-shape float32 arrays; ``v0`` the initial state(s)."""

    model: str
    entry: str
    spikes: str
    nodes: frozenset
    params: dict
    theta: np.float32
    levels: int
    v0: tuple


def _exact32(x64: np.ndarray):
    """float32 array equal to ``x64`` or None when x64 is not exactly a float32 array."""
    x32 = x64.astype(np.float32)
    return x32 if np.array_equal(x32.astype(np.float64), x64) else None


def match(prog, comp: frozenset, entry: str) -> Fused | None:
    """The :class:`Fused` cluster of component ``comp`` (entered at ``entry``) of the
    :class:`~lmh_deploy.nir.program.NirProgram` ``prog``, or None when it is no exact motif."""
    nodes = prog.nodes
    ins = {n: [a for a, b in prog.edges if b == n] for n in comp}
    outs = {n: [b for a, b in prog.edges if a == n] for n in comp}
    leaving = {n for n in comp for b in outs[n] if b not in comp}
    if len(leaving) != 1:
        return None
    spk = next(iter(leaving))
    kinds = {n: nodes[n].kind for n in comp}
    if any(k not in ("I", "Scale", "Threshold") for k in kinds.values()):
        return None
    i_nodes = sorted(n for n in comp if kinds[n] == "I")
    if any(not np.all(nodes[n].params["r"] == 1) for n in i_nodes):
        return None

    def scale_between(a, b):
        c = [n for n in comp if kinds[n] == "Scale" and ins[n] == [a] and outs[n] == [b]]
        return c[0] if len(c) == 1 else None

    def s64(n):
        return nodes[n].params["scale64"]

    def thresholds_of(src):
        thr = [n for n in comp if kinds[n] == "Threshold" and ins[n] == [src]]
        if kinds[spk] == "Threshold":
            return thr if thr == [spk] else None
        if (kinds[spk] == "Scale" and sorted(ins[spk]) == sorted(thr) and thr
                and np.all(s64(spk) == 1) and all(outs[t] == [spk] for t in thr)):
            return thr
        return None

    def theta_from(reset, lam32):
        th = -s64(reset) / lam32.astype(np.float64)
        th32 = _exact32(th)
        if th32 is None or th32.size == 0 or not np.all(th32 == th32.flat[0]):
            return None
        t = np.float32(th32.flat[0])
        if not np.array_equal(lam32.astype(np.float64) * np.float64(t), -s64(reset)):
            return None
        return t

    if len(i_nodes) == 1 and entry == i_nodes[0]:
        m = entry
        loop = scale_between(m, m)
        lam = np.ones(nodes[m].out_shape, np.float32) if loop is None else _exact32(1.0 + s64(loop))
        reset = scale_between(spk, m)
        thr = thresholds_of(m)
        if lam is None or reset is None or not thr:
            return None
        if comp != frozenset({m, reset, spk, *thr} | ({loop} if loop else set())):
            return None
        theta = theta_from(reset, lam)
        if theta is None:
            return None
        vals = sorted(thr, key=lambda n: float(nodes[n].params["threshold"].flat[0]))
        for k, n in enumerate(vals, 1):
            if not np.all(nodes[n].params["threshold"] == level_threshold(theta, k)):
                return None
        return Fused("lmht", m, spk, comp, {"lam": lam}, theta, len(thr), (nodes[m].params["v0"],))
    if len(i_nodes) == 2 and entry in i_nodes and kinds[spk] == "Threshold":
        d = entry
        s = [n for n in i_nodes if n != d][0]
        parts = {"dl": scale_between(d, d), "sl": scale_between(s, s), "cpl": scale_between(d, s),
                 "fb": scale_between(s, d), "rs": scale_between(spk, s), "rd": scale_between(spk, d)}
        if any(v is None for v in parts.values()) or ins[spk] != [s]:
            return None
        if comp != frozenset({d, s, spk, *parts.values()}):
            return None
        mu_d, lam_s = _exact32(1.0 + s64(parts["dl"])), _exact32(1.0 + s64(parts["sl"]))
        lam_d, mu_s = _exact32(s64(parts["cpl"])), _exact32(s64(parts["fb"]))
        if any(v is None for v in (mu_d, lam_s, lam_d, mu_s)):
            return None
        theta = theta_from(parts["rs"], lam_s)
        if theta is None or not np.array_equal(-(mu_s.astype(np.float64) * np.float64(theta)),
                                               s64(parts["rd"])):
            return None
        if not np.all(nodes[spk].params["threshold"] == binary_threshold(theta)):
            return None
        return Fused("lmh", d, spk, comp, {"mu_d": mu_d, "mu_s": mu_s, "lam_s": lam_s,
                                            "lam_d": lam_d}, theta, 1,
                     (nodes[d].params["v0"], nodes[s].params["v0"]))
    return None
