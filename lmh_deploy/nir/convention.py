"""Convention ``lmh-nir/1``: the names, metadata and threshold rule shared by the NIR writer
(:mod:`lmh_deploy.nir.write`, where the convention is described in full) and the readers
(:mod:`lmh_deploy.nir.program`, :mod:`lmh_deploy.nir.match`).
"""
from __future__ import annotations

import numpy as np

FORMAT_TAG = "lmh-nir"
FORMAT_VERSION = 1
CONVENTION = (
    "lmh-nir/1: dt = 1 step; edges into a node are summed; an edge from inside a strongly "
    "connected component into its unique entry node carries a one-step delay (recursively); "
    "I: v[t] = v[t-1] + r*u[t], v[-1] = metadata v0 (default 0); a decay lambda is an I with a "
    "Scale(lambda-1) self-loop; Threshold fires on u > thr, thr = nextafter(k*theta, -inf) "
    "(the papers fire at >=); multi-level spikes = sum of L Thresholds; outputs are spike "
    "counts; inputs quantized x_q = clip(round(x/q), -B/q, B/q)*q; unrolled form: one "
    "evaluation, Input/Output metadata 'step' = t")

FORMS = ("auto", "temporal", "unrolled")




def binary_threshold(theta) -> np.float32:
    """NIR threshold of ``s = [m >= theta]``: ``nextafter(theta, -inf)`` (float32)."""
    th = np.float32(theta)
    return np.nextafter(th, np.float32(-np.inf), dtype=np.float32)


def level_threshold(theta, k: int) -> np.float32:
    """NIR threshold of level k of ``s = clip(floor(fl(m/theta)), 0, L)``: ``nextafter(tau_k,
    -inf)`` with tau_k the smallest float32 m where ``floor(fl32(m/theta)) >= k`` (m > thr then
    holds exactly when the reference emits at least k)."""
    th = np.float32(theta)
    ninf, pinf = np.float32(-np.inf), np.float32(np.inf)

    def ok(m):
        return np.floor(np.float32(m) / th) >= k

    m = np.float32(np.float32(k) * th)
    while ok(np.nextafter(m, ninf, dtype=np.float32)):
        m = np.nextafter(m, ninf, dtype=np.float32)
    while not ok(m):
        m = np.nextafter(m, pinf, dtype=np.float32)
    return np.nextafter(m, ninf, dtype=np.float32)
