"""Convention ``lmh-nir/1`` of the NIR files lmh-deploy writes (DESIGN §3): the names, metadata and
threshold rule shared by the writer (:mod:`lmh_deploy.nir.write`) and the readers
(:mod:`lmh_deploy.nir.read`, :mod:`lmh_deploy.nir.program`, :mod:`lmh_deploy.nir.match`).

Convention ``lmh-nir/1`` (written into the graph metadata as ``convention``)
---------------------------------------------------------------------------
* dt = 1 step. At step t every node reads ``u[t] = sum of its incoming edges``; an edge that
  closes a cycle (structurally: an edge from inside a strongly connected component into its
  unique entry node, applied recursively, :mod:`lmh_deploy.nir.program`) carries ``y_src[t-1]``
  (0 at t = 0), every other edge ``y_src[t]``.
* ``I`` is the discrete integrator ``v[t] = v[t-1] + r*u[t]``, output ``v[t]``; its state before
  the first step is ``metadata["v0"]`` (0 when absent) -- NIR has no initial state, so the
  runtime honours this key. A state with decay lambda is an ``I`` with a ``Scale(lambda - 1)``
  self-loop: ``v[t] = v[t-1] + (lambda-1) v[t-1] + x[t] = lambda v[t-1] + x[t]`` (exact for
  lambda > 1 too). ``Threshold`` is ``u > thr`` (strict).
* Decay / coupling / reset ``Scale`` values are float64 so that lambda - 1 and lambda*theta are
  the exact real numbers of the float32 source parameters (1 + (lambda-1) gives lambda back
  bit for bit). Thresholds are float32 ``nextafter(tau_k, -inf)`` where tau_k is the smallest
  float32 membrane the reference fires level k at (``m >= theta`` for binary spikes;
  ``m >= fl(k theta)`` for multi-level spikes, the cascade of DESIGN §1).
* Values between layers are spike counts; the input must be quantized by the consumer:
  ``x_q = clip(round(x/q), -B/q, B/q)*q`` with q, B in the metadata.

Temporal (streaming) form -- LIF, LM-H vanilla, M-HT/LM-HT with Omega = I (time-invariant)
----------------------------------------------------------------------------------------
LM-H, per layer (LIF: mu_D = mu_S = 0, lambda_D = 1)::

    x --> D (I, v0 = 0) --> Scale(lambda_D) --> S (I, v0 = theta/2) --> Threshold --> spikes
    D -> Scale(mu_D - 1) -> D      S -> Scale(lambda_S - 1) -> S           (delayed loops)
    S -> Scale(mu_S) -> D          spikes -> Scale(-mu_S*theta) -> D       (delayed)
    spikes -> Scale(-lambda_S*theta) -> S                                  (delayed)

``S`` holds the pre-reset membrane m_S; with v_S = m_S - theta*s this reproduces
``v_D[t] = mu_D v_D + mu_S v_S + I``, ``m_S[t] = lambda_S v_S + lambda_D v_D[t]`` exactly (in
real arithmetic). LM-HT: one ``I`` node M (v0) with a ``Scale(lambda-1)`` loop, the membrane
fanned out (NIR edges) to L ``Threshold`` nodes at k*theta, their outputs summed by a
``Scale(1)`` node (the spike count), and ``count -> Scale(-lambda*theta) -> M`` (delayed).
(DESIGN says "fan-out Linear"; a Linear acts on the last axis only and would need a reshape NIR
lacks for conv layers, so the fan-out is by edges -- same semantics, any shape.)

Float32 exactness: the sums of the temporal form round differently from
:func:`lmh_deploy.neuron_math.lmh_step`; our runtime recognises each neuron cluster (structure
+ parameters) and evaluates it with the shared step functions, bit-identical to the reference.

Unrolled form -- every model (non-causal Omega, radical / per-step parameters)
-------------------------------------------------------------------------------
A stateless graph evaluated once: T ``Input`` nodes (metadata ``step``), every synapse
repeated per step, every neuron step written out with ``Scale`` products and **two-input** sum
nodes (``Scale(1)``) in exactly the order of the reference, so any evaluator that computes a
product and a two-input sum in float32 reproduces the reference bit for bit::

    v_D[t] = (mu_D[t]*v_D[t-1] + mu_S[t]*v_S[t-1]) + I[t];  m[t] = lambda_S[t]*v_S[t-1] + lambda_D[t]*v_D[t]
    s[t] = Threshold(m[t]);  v_S[t] = m[t] + (-theta)*s[t]
    I[t] = (((Omega[t,0]*x[0] + Omega[t,1]*x[1]) + ...) + Omega[t,T-1]*x[T-1])      (LM-HT)

Initial states are ``I`` nodes with ``r = 0`` and ``metadata["v0"]`` fed by the step-0 current
(output v0 + 0*x = v0). T ``Output`` nodes carry the per-step logits.

``lossy_lif``: LIF-degenerate models as plain ``nir.LIF`` (tau = 1/(1-lambda), r = tau,
v_leak = 0, v_reset = 0) for third-party importers. What changes: **hard reset to 0 instead of
subtracting theta, and v(0) = 0 instead of theta/2**; spikes differ from the model.
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
    """NIR threshold of level k of the cascade ``s = #{k in 1..L : m >= fl(k theta)}``:
    ``nextafter(fl32(k theta), -inf)`` (``m > thr`` then holds exactly when ``m >= fl(k theta)``)."""
    tau = np.float32(np.float32(k) * np.float32(theta))
    return np.nextafter(tau, np.float32(-np.inf), dtype=np.float32)


#: graph metadata key holding the DeployGraph (:func:`lmh_deploy.graph.schema.to_dict`, JSON)
META_DEPLOY = "deploy"
