"""Lava Processes for the multi-level (M-HT / LM-HT) neuron and their floating-point and
fixed-point ProcessModels.

The models call :func:`lmh_deploy.neuron_math.lmht_step` (numpy only, never torch)::

    m[t] = lam v[t-1] + I[t];   s[t] = #{k in 1..L : m[t] >= fl(k theta)};   v[t] = m[t] - theta s[t]

with ``v = v0`` at every sample start. Graded spikes 0..L leave through an integer OutPort, so the
next ``Dense`` must have ``num_message_bits > 0`` (with 0 it treats any payload as 1).

* :class:`MultiLevelProcess` -- Omega = I (M-HT without T-GIM): ``I[t] = a_in[t] + bias``,
  streaming, no latency beyond the Dense hop.
* :class:`WindowedMultiLevelProcess` -- learned (non-causal) T-GIM Omega [Tw, Tw]: the neuron
  buffers one window of Tw inputs ``x[j] = a_in[j] + bias``, and when the window's last input
  arrives computes ``I[t] = sum_j Omega[t, j] x[j]`` (:func:`lmh_deploy.neuron_math.omega_mix`),
  runs the Tw neuron steps at once and emits their spikes over the next Tw steps, the first one in
  the same step. **Latency:** its output stream lags its input stream by ``Tw - 1`` steps; with the
  following Dense hop each windowed layer costs ``Tw`` steps (a plain layer costs 1). The
  membrane state carries over between windows of one sample (T' = k Tw, Omega per window).

Side-effect free apart from :func:`import_lava`; absolute imports (Lava re-executes this file).
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
from lmh_deploy.lava.schedule import sample_step  # noqa: E402
from lmh_deploy.timeloop import param_row  # noqa: E402
from lmh_deploy.ops import NumpyOps  # noqa: E402


class _MultiLevelProcessBase(AbstractProcess):
    """Ports and state shared by the two multi-level Processes."""

    def __init__(self, *, shape, lam, theta, levels, bias, v0, period, offset, q=1.0, name=None,
                 **extra):
        super().__init__(shape=shape, lam=lam, theta=theta, levels=levels, bias=bias, v0=v0,
                         period=period, offset=offset, q=q, name=name, **extra)
        self.a_in = InPort(shape=shape)
        self.s_out = OutPort(shape=shape)
        self.v = Var(shape=shape, init=0)


class MultiLevelProcess(_MultiLevelProcessBase):
    """Multi-level neurons of shape ``(N,)`` with Omega = I.

    Parameters: ``lam`` float table [P, N]; ``theta``; ``levels`` (L); ``bias`` [N]; ``v0`` [N];
    ``period``, ``offset`` (schedule); ``q`` (state unit, fixed-point model only).
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)


class WindowedMultiLevelProcess(_MultiLevelProcessBase):
    """Multi-level neurons with a non-causal T-GIM ``omega`` [Tw, Tw] (buffers one window).

    ``period`` must be a multiple of Tw; the output lags the input by ``Tw - 1`` steps.
    """

    def __init__(self, *, omega, **kwargs):
        omega = np.asarray(omega, dtype=np.float32)
        if omega.ndim != 2 or omega.shape[0] != omega.shape[1]:
            raise ValueError(f"omega must be a square [T, T] matrix, got shape {omega.shape}")
        if int(kwargs["period"]) % omega.shape[0]:
            raise ValueError(f"period {kwargs['period']} is not a multiple of the Omega window "
                             f"{omega.shape[0]}; run at T' = k*{omega.shape[0]}")
        super().__init__(omega=omega, **kwargs)


# ----------------------------------------------------------------------------------------------
# number formats: the same step functions over two back-ends
# ----------------------------------------------------------------------------------------------


class _FloatFormat:
    """float32 arithmetic, :class:`NumpyOps` (bit-identical to the numpy reference)."""

    ops = NumpyOps

    def setup(self, p):
        self.lam = np.asarray(p["lam"], dtype=np.float32)
        self.rows = self.lam.shape[0]
        self.theta = np.float32(p["theta"])
        self.bias = np.asarray(p["bias"], dtype=np.float64)
        self.v0 = np.asarray(p["v0"], dtype=np.float32)
        om = p["omega"]
        self.omega_rows = None if om is None else [[np.float32(w) for w in row] for row in om]

    def lam_row(self, r):
        return self.lam[r]

    def current(self, a):
        # the exact float64 sum W s + b, rounded once (a split layer's fl32(hi + lo))
        return (np.asarray(a, dtype=np.float64) + self.bias).astype(np.float32)

    def clamp(self, v):
        return v


class _FixedFormat:
    """Loihi-2-style integers: 12-bit decays/Omega (:class:`Q12`), 24-bit saturated state."""

    ops = fx.FixedOps

    def setup(self, p):
        q = float(p["q"])
        lam = np.asarray(p["lam"], dtype=np.float64)
        self.lams = [fx.decay_q12(lam[r]) for r in range(lam.shape[0])]
        self.rows = len(self.lams)
        self.theta = np.int64(fx.to_units(p["theta"], q))
        self.bias = fx.to_units(p["bias"], q)
        self.v0 = fx.saturate(fx.to_units(p["v0"], q))
        om = p["omega"]
        self.omega_rows = None if om is None else [[fx.coupling_q12(w) for w in row] for row in om]

    def lam_row(self, r):
        return self.lams[r]

    def current(self, a):
        return np.asarray(a, dtype=np.int64) + self.bias

    def clamp(self, v):
        return fx.saturate(v)


def _as_dict(proc_params, keys):
    """proc_params (Lava's ProcessParameters has no ``get``) -> plain dict, None where absent."""
    out = {}
    for k in keys:
        try:
            out[k] = proc_params[k]
        except KeyError:
            out[k] = None
    return out


_KEYS = ("shape", "lam", "theta", "levels", "bias", "v0", "period", "offset", "q", "omega")


class _MultiLevelModelBase(SampleScheduledModel):
    """Streaming multi-level neuron (Omega = I): one ``lmht_step`` per Lava step."""

    fmt_cls = _FloatFormat

    def __init__(self, proc_params):
        super().__init__(proc_params)
        p = _as_dict(proc_params, _KEYS)
        self._levels = int(p["levels"])
        self._fmt = self.fmt_cls()
        self._fmt.setup(p)
        self._state = self._fmt.v0.copy()

    def _params(self, i):
        f = self._fmt
        return nm.LMHTParams(lam=f.lam_row(param_row(i, f.rows)), theta=f.theta,
                             levels=self._levels)

    def _neuron_step(self, current, i):
        s, v = nm.lmht_step(self._fmt.ops, self._state, current, self._params(i))
        self._state = self._fmt.clamp(v)
        self.v = self._state.astype(self.v.dtype)
        return np.asarray(s).astype(np.int32)

    def _reset(self):
        self._state = self._fmt.v0.copy()

    def _step(self, a, i):
        return self._neuron_step(self._fmt.current(a), i)


class _WindowedModelBase(_MultiLevelModelBase):
    """Buffers Tw inputs, mixes them with Omega (``omega_mix``), runs Tw steps, emits them over
    the next Tw Lava steps (first one immediately): output lags input by Tw - 1 steps."""

    def __init__(self, proc_params):
        super().__init__(proc_params)
        self._window = len(self._fmt.omega_rows)
        self._inputs = []
        self._pending = []

    def run_spk(self):
        a = self.a_in.recv()
        i = sample_step(self.time_step, self._offset, self._period)
        if i >= 0:
            self._inputs.append(self._fmt.current(a))
            if len(self._inputs) == self._window:
                start = i - self._window + 1          # step of the window's first input
                if start == 0:
                    self._reset()
                mixed = nm.omega_mix(self._inputs, self._fmt.omega_rows)
                self._inputs = []
                self._pending = [self._neuron_step(cur, start + j) for j, cur in enumerate(mixed)]
        self.s_out.send(self._pending.pop(0) if self._pending else self._zeros)


@implements(proc=MultiLevelProcess, protocol=LoihiProtocol)
@requires(CPU)
@tag("floating_pt")
class PyMultiLevelModelFloat(_MultiLevelModelBase):
    """float32 multi-level neuron (Omega = I)."""

    fmt_cls = _FloatFormat
    a_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)
    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int32, precision=24)
    v: np.ndarray = LavaPyType(np.ndarray, np.float32)


@implements(proc=MultiLevelProcess, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class PyMultiLevelModelFixed(_MultiLevelModelBase):
    """Fixed-point multi-level neuron (Omega = I)."""

    fmt_cls = _FixedFormat
    a_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int32, precision=24)
    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int32, precision=24)
    v: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=24)


@implements(proc=WindowedMultiLevelProcess, protocol=LoihiProtocol)
@requires(CPU)
@tag("floating_pt")
class PyWindowedMultiLevelModelFloat(_WindowedModelBase):
    """float32 windowed multi-level neuron (learned Omega)."""

    fmt_cls = _FloatFormat
    a_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)
    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int32, precision=24)
    v: np.ndarray = LavaPyType(np.ndarray, np.float32)


@implements(proc=WindowedMultiLevelProcess, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class PyWindowedMultiLevelModelFixed(_WindowedModelBase):
    """Fixed-point windowed multi-level neuron (learned Omega, 12-bit Omega entries)."""

    fmt_cls = _FixedFormat
    a_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int32, precision=24)
    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int32, precision=24)
    v: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=24)
