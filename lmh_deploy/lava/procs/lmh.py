"""Lava Process for the LM-H neuron (two compartments; LIF and radical LM-H as its cases) and its
floating-point and fixed-point ProcessModels.

The models call :func:`lmh_deploy.neuron_math.lmh_step` (numpy only, never torch)::

    v_D[t] = mu_D v_D[t-1] + mu_S v_S[t-1] + I[t]
    m_S[t] = lam_S v_S[t-1] + lam_D v_D[t]
    s[t]   = [m_S[t] >= theta];   v_S[t] = m_S[t] - theta s[t]

with ``I[t] = a_in[t] + bias`` (``a_in`` from a Dense process) and ``v_D = 0, v_S = v0`` at the
start of every sample (see :mod:`lmh_deploy.lava.schedule`). Parameter tables are ``[P, N]``:
P = 1 (time-invariant) or P = T (radical LM-H, Eq. 7; the last row is held beyond T).
Spikes leave through an integer OutPort (0/1).

Side-effect free apart from :func:`import_lava` (Lava imports every module of this package when
it searches ProcessModels), and imports are absolute for the same reason.
"""
from lmh_deploy.lava.compat import import_lava

import_lava()

import numpy as np  # noqa: E402
from lava.magma.core.decorator import implements, requires, tag  # noqa: E402
from lava.magma.core.model.py.ports import PyInPort, PyOutPort  # noqa: E402
from lava.magma.core.model.py.type import LavaPyType  # noqa: E402
from lava.magma.core.process.ports.ports import InPort, OutPort  # noqa: E402
from lava.magma.core.process.process import AbstractProcess  # noqa: E402
from lava.magma.core.process.variable import Var  # noqa: E402
from lava.magma.core.resources import CPU  # noqa: E402
from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol  # noqa: E402

from lmh_deploy import neuron_math as nm  # noqa: E402
from lmh_deploy.lava import fixed_point as fx  # noqa: E402
from lmh_deploy.lava.procs.model_base import SampleScheduledModel  # noqa: E402
from lmh_deploy.timeloop import param_row  # noqa: E402
from lmh_deploy.ops import NumpyOps  # noqa: E402

LMH_PARAMS = ("mu_d", "mu_s", "lam_s", "lam_d")


class LMHProcess(AbstractProcess):
    """LM-H neurons of shape ``(N,)``.

    Parameters: ``mu_d, mu_s, lam_s, lam_d`` float tables [P, N]; ``theta`` (float); ``bias`` [N]
    (the synapse bias, added to the Dense input); ``v0`` [N] (v_S at each sample start);
    ``period`` (steps per sample), ``offset`` (global step of the first valid input);
    ``q`` (real value of one state unit, used by the fixed-point model only).
    """

    def __init__(self, *, shape, mu_d, mu_s, lam_s, lam_d, theta, bias, v0, period, offset,
                 q=1.0, name=None):
        super().__init__(shape=shape, mu_d=mu_d, mu_s=mu_s, lam_s=lam_s, lam_d=lam_d,
                         theta=theta, bias=bias, v0=v0, period=period, offset=offset, q=q,
                         name=name)
        self.a_in = InPort(shape=shape)
        self.s_out = OutPort(shape=shape)
        self.v_d = Var(shape=shape, init=0)
        self.v_s = Var(shape=shape, init=0)


class _LMHModelBase(SampleScheduledModel):
    """Subclasses define ``_setup`` (from the process parameters), ``_reset``, ``_step``."""

    def __init__(self, proc_params):
        super().__init__(proc_params)
        self._setup(proc_params)


@implements(proc=LMHProcess, protocol=LoihiProtocol)
@requires(CPU)
@tag("floating_pt")
class PyLMHModelFloat(_LMHModelBase):
    """float32 LM-H: ``lmh_step`` with :class:`NumpyOps` (bit-identical to the numpy reference)."""

    a_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)
    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int32, precision=24)
    v_d: np.ndarray = LavaPyType(np.ndarray, np.float32)
    v_s: np.ndarray = LavaPyType(np.ndarray, np.float32)

    def _setup(self, p):
        self._tables = [np.asarray(p[k], dtype=np.float32) for k in LMH_PARAMS]
        self._theta = np.float32(p["theta"])
        self._bias = np.asarray(p["bias"], dtype=np.float64)
        self._v0 = np.asarray(p["v0"], dtype=np.float32)

    def _reset(self):
        self.v_d = np.zeros_like(self._v0)
        self.v_s = self._v0.copy()

    def _step(self, a, i):
        r = param_row(i, self._tables[0].shape[0])
        mu_d, mu_s, lam_s, lam_d = (t[r] for t in self._tables)
        p = nm.LMHParams(mu_d=mu_d, mu_s=mu_s, lam_s=lam_s, lam_d=lam_d, theta=self._theta)
        # the exact float64 sum W s + b, rounded once (a split layer's fl32(hi + lo))
        current = (np.asarray(a, dtype=np.float64) + self._bias).astype(np.float32)
        s, (self.v_d, self.v_s) = nm.lmh_step(NumpyOps, (self.v_d, self.v_s), current, p)
        return s


@implements(proc=LMHProcess, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class PyLMHModelFixed(_LMHModelBase):
    """Loihi-2-style LM-H: ``lmh_step`` with :class:`FixedOps` and 12-bit :class:`Q12`
    coefficients (mu as couplings, lambda as decays), 24-bit saturated state, integer input."""

    a_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int32, precision=24)
    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int32, precision=24)
    v_d: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=24)
    v_s: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=24)

    def _setup(self, p):
        q = float(p["q"])
        mu_d, mu_s, lam_s, lam_d = (np.asarray(p[k], dtype=np.float64) for k in LMH_PARAMS)
        self._rows = [(fx.coupling_q12(mu_d[r]), fx.coupling_q12(mu_s[r]),
                       fx.decay_q12(lam_s[r]), fx.decay_q12(lam_d[r]))
                      for r in range(mu_d.shape[0])]
        self._theta = np.int64(fx.to_units(p["theta"], q))
        self._bias = fx.to_units(p["bias"], q)
        self._v0 = fx.saturate(fx.to_units(p["v0"], q))
        self._vd = np.zeros_like(self._v0)
        self._vs = self._v0.copy()

    def _reset(self):
        self._vd = np.zeros_like(self._v0)
        self._vs = self._v0.copy()

    def _step(self, a, i):
        mu_d, mu_s, lam_s, lam_d = self._rows[param_row(i, len(self._rows))]
        p = nm.LMHParams(mu_d=mu_d, mu_s=mu_s, lam_s=lam_s, lam_d=lam_d, theta=self._theta)
        current = np.asarray(a, dtype=np.int64) + self._bias
        s, (vd, vs) = nm.lmh_step(fx.FixedOps, (self._vd, self._vs), current, p)
        self._vd, self._vs = fx.saturate(vd), fx.saturate(vs)
        self.v_d, self.v_s = self._vd.astype(np.int32), self._vs.astype(np.int32)
        return s
