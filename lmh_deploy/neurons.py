"""Multi-step torch neuron modules over time-major tensors ``[T, B, ...]``.

Each module is a thin shell around a step function of :mod:`lmh_deploy.neuron_math` run with
:class:`lmh_deploy.ops.TorchOps` (surrogate gradients). ``counts(x)`` returns spike counts
``s`` (0/1 or 0..L); ``forward(x)`` returns the layer output ``o = theta * s``.

``deploy_params()`` returns the evaluated constants as float32 numpy arrays of shape ``[P, C]``
(``P`` = 1 for time-invariant parameters or T for per-step ones, ``C`` = 1 for per-layer
scalars or the channel count), which is what the fold puts into the DeployGraph.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from . import neuron_math as nm
from . import timeloop as tl
from .kernels import kernels_available, lmh_counts, lmh_counts_raw, lmht_counts_raw, theta_is_pow2
from .ops import TorchOps

NEURON_KINDS = ("lif", "lmh", "lmh-radical", "lmht")


def _bcast(p: torch.Tensor, ndim: int) -> torch.Tensor:
    """A per-channel vector [C] -> [C, 1, ...] to broadcast over a per-step tensor [B, C, ...]."""
    if p.dim() == 0:
        return p
    return p.reshape(p.shape + (1,) * (ndim - 2))


def _np_pc(value: torch.Tensor, per_step: bool) -> np.ndarray:
    """Evaluated parameter -> float32 [P, C]."""
    a = value.detach().cpu().to(torch.float32).numpy()
    if per_step:
        return a.reshape(a.shape[0], -1) if a.ndim > 1 else a.reshape(-1, 1)
    return a.reshape(1, -1)


class SpikingNeuron(nn.Module):
    """Common shell: ``theta`` buffer, ``forward = theta * counts``."""

    kind = "base"
    levels = 1
    fused = True  # use the fused GPU kernels (lmh_deploy.kernels) for CUDA inputs; False: reference
    spike_sink = None  # set by lmh_deploy.spike_memory.CompactSpikes while it is active

    def __init__(self, timesteps: int, theta: float):
        super().__init__()
        if timesteps < 1:
            raise ValueError(f"timesteps must be >= 1, got {timesteps}")
        self.timesteps = int(timesteps)
        self.register_buffer("theta", torch.tensor(float(theta), dtype=torch.float32))

    def counts(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def counts_from(self, x: torch.Tensor, state=None, t0: int = 0):
        """Time-slicing hook: run steps ``t0 .. t0+len(x)-1`` from ``state`` (the state after step
        ``t0-1``; None: the initial state) -> ``(counts, final state)``. Same step function as
        :meth:`counts`; the caller detaches the state between slices."""
        raise NotImplementedError(f"{type(self).__name__} cannot carry its state between time slices")

    def fused_counts(self, x: torch.Tensor, scaled: bool = False,
                     counts_out: torch.Tensor | None = None) -> torch.Tensor:
        """The same counts (``theta * counts`` if ``scaled``) from the fused Triton kernels of
        :mod:`lmh_deploy.kernels`; :meth:`counts` and :meth:`forward` use it for CUDA inputs. On
        CPU tensors it runs in Triton's interpreter (``TRITON_INTERPRET=1``, for tests).
        ``counts_out``: a uint8 tensor shaped like ``x`` that also receives the counts."""
        raise NotImplementedError(f"{type(self).__name__} has no fused kernel")

    def _use_fused(self, x: torch.Tensor) -> bool:
        return (self.fused and x.is_cuda and type(self).fused_counts is not SpikingNeuron.fused_counts
                and kernels_available())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``o = theta * s``. Under :class:`~lmh_deploy.spike_memory.CompactSpikes` the counts are
        also handed over as uint8 so that backward can keep them instead of ``o``."""
        sink = self.spike_sink if self.levels <= 255 else None
        if self._use_fused(x):  # theta * s written by the kernel itself (and the uint8 counts)
            k8 = None if sink is None else torch.empty_like(x, dtype=torch.uint8)
            out = self.fused_counts(x, scaled=True, counts_out=k8)
        else:
            s = self.counts(x)
            out = s * self.theta
            k8 = None if sink is None else s.detach().to(torch.uint8)
        if sink is not None:
            sink.add(out, k8, self.theta)
        return out

    def extra_repr(self) -> str:
        return f"T={self.timesteps}, theta={float(self.theta):.4g}"


class LMHNeuron(SpikingNeuron):
    """LM-H (Eq. 4); ``radical=True`` gives per-step parameters of shape [T] (Eq. 7).

    Raw learnables ``x_mu_d, x_mu_s, x_lam_s, x_lam_d`` start at 0 (a soft-reset IF neuron):
    ``mu = sigmoid(x) - 0.5``, ``lambda = sigmoid(x) + 0.5``. Beyond the trained T a radical
    neuron holds the last step's parameters.
    """

    kind = "lmh"

    def __init__(self, timesteps: int, channels: int | None = None, radical: bool = False,
                 theta: float = 1.0):
        super().__init__(timesteps, theta)
        self.radical = bool(radical)
        self.channels = channels
        shape = ((timesteps,) if radical else ()) + ((channels,) if channels else ())
        for name in ("x_mu_d", "x_mu_s", "x_lam_s", "x_lam_d"):
            self.register_parameter(name, nn.Parameter(torch.zeros(shape)))
        if radical:
            self.kind = "lmh-radical"

    def evaluated(self):
        """(mu_d, mu_s, lam_s, lam_d) after the sigmoid maps."""
        return (nm.mu_map(TorchOps, self.x_mu_d), nm.mu_map(TorchOps, self.x_mu_s),
                nm.lam_map(TorchOps, self.x_lam_s), nm.lam_map(TorchOps, self.x_lam_d))

    def _step_params(self, values, t: int, ndim: int) -> nm.LMHParams:
        if self.radical:
            values = [v[min(t, self.timesteps - 1)] for v in values]
        mu_d, mu_s, lam_s, lam_d = (_bcast(v, ndim) for v in values)
        return nm.LMHParams(mu_d=mu_d, mu_s=mu_s, lam_s=lam_s, lam_d=lam_d, theta=self.theta)

    def raw(self):
        """The raw learnables ``(x_mu_d, x_mu_s, x_lam_s, x_lam_d)`` (the fused kernels map them)."""
        return self.x_mu_d, self.x_mu_s, self.x_lam_s, self.x_lam_d

    def fused_counts(self, x: torch.Tensor, scaled: bool = False,
                     counts_out: torch.Tensor | None = None) -> torch.Tensor:
        return lmh_counts_raw(x, *self.raw(), self.theta, per_step=self.radical, scaled=scaled,
                              counts_out=counts_out)

    def counts(self, x: torch.Tensor) -> torch.Tensor:
        if self._use_fused(x):
            return self.fused_counts(x)
        values = self.evaluated()
        state = nm.lmh_initial_state(torch.zeros_like(x[0]), self.theta)
        out, _ = tl.run_lmh(TorchOps, x.unbind(0), lambda t: self._step_params(values, t, x.dim() - 1),
                            state)
        return torch.stack(out)

    def counts_from(self, x: torch.Tensor, state=None, t0: int = 0):
        values = self.evaluated()
        if state is None:
            state = nm.lmh_initial_state(torch.zeros_like(x[0]), self.theta)
        out, state = tl.run_lmh(TorchOps, x.unbind(0),
                                lambda t: self._step_params(values, t, x.dim() - 1), state, t0)
        return torch.stack(out), state

    def deploy_params(self) -> dict:
        mu_d, mu_s, lam_s, lam_d = self.evaluated()
        r = self.radical
        return {"mu_d": _np_pc(mu_d, r), "mu_s": _np_pc(mu_s, r), "lam_s": _np_pc(lam_s, r),
                "lam_d": _np_pc(lam_d, r)}


class LIFNeuron(SpikingNeuron):
    """LIF baseline: LM-H with mu_D = mu_S = 0, lambda_D = 1, lambda_S = decay (fixed).

    Same soft reset, ``>= theta`` firing and initial state ``v(0) = theta/2`` as LM-H, so an
    LM-H vs LIF comparison isolates the learnable dynamics.
    """

    kind = "lif"

    def __init__(self, timesteps: int, decay: float = 0.5, theta: float = 1.0):
        super().__init__(timesteps, theta)
        self.register_buffer("decay", torch.tensor(float(decay), dtype=torch.float32))

    def evaluated(self):
        zero = torch.zeros((), dtype=torch.float32, device=self.decay.device)
        return zero, zero, self.decay, zero + 1.0

    def fused_counts(self, x: torch.Tensor, scaled: bool = False,
                     counts_out: torch.Tensor | None = None) -> torch.Tensor:
        return lmh_counts(x, *self.evaluated(), self.theta, per_step=False, scaled=scaled,
                          counts_out=counts_out)

    def counts(self, x: torch.Tensor) -> torch.Tensor:
        if self._use_fused(x):
            return self.fused_counts(x)
        mu_d, mu_s, lam_s, lam_d = self.evaluated()
        p = nm.LMHParams(mu_d=mu_d, mu_s=mu_s, lam_s=lam_s, lam_d=lam_d, theta=self.theta)
        state = nm.lmh_initial_state(torch.zeros_like(x[0]), self.theta)
        out, _ = tl.run_lmh(TorchOps, x.unbind(0), lambda t: p, state)
        return torch.stack(out)

    def counts_from(self, x: torch.Tensor, state=None, t0: int = 0):
        mu_d, mu_s, lam_s, lam_d = self.evaluated()
        p = nm.LMHParams(mu_d=mu_d, mu_s=mu_s, lam_s=lam_s, lam_d=lam_d, theta=self.theta)
        if state is None:
            state = nm.lmh_initial_state(torch.zeros_like(x[0]), self.theta)
        out, state = tl.run_lmh(TorchOps, x.unbind(0), lambda t: p, state)
        return torch.stack(out), state

    def deploy_params(self) -> dict:
        mu_d, mu_s, lam_s, lam_d = self.evaluated()
        return {"mu_d": _np_pc(mu_d, False), "mu_s": _np_pc(mu_s, False),
                "lam_s": _np_pc(lam_s, False), "lam_d": _np_pc(lam_d, False)}


class LMHTNeuron(SpikingNeuron):
    """M-HT / LM-HT with L levels (Eq. 8-12) and a learnable TxT T-GIM.

    ``lambda = sigmoid(a) + 0.5`` (a = 0 -> 1), ``Omega[t, j] = 2 sigmoid(M[t, j]) / T``
    (M = 0 -> 1/T). Direct training: theta = 2/L, v(0) = 0. Hybrid: theta = QCFS threshold,
    v(0) = theta/2 (``v0_frac=0.5``), and ``gain = L`` on the first layer's input.
    Runs at T' = k*T with Omega applied per window (state carried across windows).
    ``learn_omega=False`` keeps Omega = I (M-HT without T-GIM, streamable).
    """

    kind = "lmht"

    def __init__(self, timesteps: int, levels: int = 2, channels: int | None = None,
                 theta: float | None = None, v0_frac: float = 0.0, learn_omega: bool = True):
        if levels < 1:
            raise ValueError(f"LM-HT needs levels >= 1, got {levels}")
        super().__init__(timesteps, 2.0 / levels if theta is None else theta)
        self.levels = int(levels)
        self.channels = channels
        self.v0_frac = float(v0_frac)
        self.learn_omega = bool(learn_omega)
        self.a = nn.Parameter(torch.zeros((channels,) if channels else ()))
        if learn_omega:
            self.M = nn.Parameter(torch.zeros(timesteps, timesteps))
        self.register_buffer("gain", torch.tensor(1.0))

    def omega(self) -> torch.Tensor | None:
        """Evaluated Omega [T, T], or None for Omega = I."""
        return nm.omega_map(TorchOps, self.M, self.timesteps) if self.learn_omega else None

    def lam(self) -> torch.Tensor:
        return nm.lam_map(TorchOps, self.a)

    def fused_counts(self, x: torch.Tensor, scaled: bool = False,
                     counts_out: torch.Tensor | None = None) -> torch.Tensor:
        return lmht_counts_raw(x, self.a, self.M if self.learn_omega else None, self.theta,
                               self.levels, self.v0_frac, self.gain, self.timesteps, scaled=scaled,
                               counts_out=counts_out, theta_pow2=self._theta_pow2())

    def _theta_pow2(self) -> bool:
        """Whether theta is an exact power of two (the kernels then multiply by 1/theta instead
        of dividing: the same bits). Read once per value of the buffer (one device sync)."""
        key = (self.theta.data_ptr(), self.theta._version)
        if getattr(self, "_pow2_key", None) != key:
            self._pow2_key, self._pow2 = key, theta_is_pow2(float(self.theta))
        return self._pow2

    def counts(self, x: torch.Tensor) -> torch.Tensor:
        if self._use_fused(x):
            return self.fused_counts(x)
        xs = list((x * self.gain).unbind(0))
        omega = self.omega()
        rows = tl.omega_rows(omega)
        p = nm.LMHTParams(lam=_bcast(self.lam(), x.dim() - 1), theta=self.theta, levels=self.levels)
        v = torch.zeros_like(xs[0]) + self.v0_frac * self.theta
        out, _ = tl.run_lmht(TorchOps, xs, lambda t: p, v, rows)
        return torch.stack(out)

    def counts_from(self, x: torch.Tensor, state=None, t0: int = 0):
        """A learned T-GIM mixes whole windows of T steps, so a slice must start at a multiple
        of T and span whole windows (slice length k a multiple of T); Omega = I has no limit."""
        xs = list((x * self.gain).unbind(0))
        omega = self.omega()
        if omega is not None:
            if t0 % self.timesteps or len(xs) % self.timesteps:
                raise ValueError(f"LM-HT with a learned T-GIM mixes whole windows of T={self.timesteps} "
                                 f"steps; use a slice length that is a multiple of {self.timesteps} "
                                 f"(or learn_omega=False)")
        rows = tl.omega_rows(omega)
        p = nm.LMHTParams(lam=_bcast(self.lam(), x.dim() - 1), theta=self.theta, levels=self.levels)
        v = torch.zeros_like(xs[0]) + self.v0_frac * self.theta if state is None else state
        out, v = tl.run_lmht(TorchOps, xs, lambda t: p, v, rows)
        return torch.stack(out), v

    def deploy_params(self) -> dict:
        omega = self.omega()
        return {"lam": _np_pc(self.lam(), False),
                "omega": None if omega is None else omega.detach().cpu().float().numpy()}

    def extra_repr(self) -> str:
        return super().extra_repr() + f", L={self.levels}, omega={'learned' if self.learn_omega else 'I'}"


class ReparamLMHTNeuron(SpikingNeuron):
    """A binary LM-HT neuron with a given Omega' [T', T'] and per-step decays lambda'[t] --
    the result of :func:`lmh_deploy.reparam.binarize_lmht`. Same step function, L = 1."""

    kind = "lmht"

    def __init__(self, omega: torch.Tensor, lam_per_step: torch.Tensor, theta: float,
                 v0_frac: float = 0.0):
        super().__init__(omega.shape[0], theta)
        self.levels = 1
        self.v0_frac = float(v0_frac)
        self.register_buffer("omega_fixed", omega.clone().float())
        self.register_buffer("lam_steps", lam_per_step.clone().float())

    def counts(self, x: torch.Tensor) -> torch.Tensor:
        t_total = self.timesteps
        if x.shape[0] != t_total:
            raise ValueError(f"this reparameterized neuron runs exactly {t_total} steps, got {x.shape[0]}")
        xs = list(x.unbind(0))
        v = torch.zeros_like(xs[0]) + self.v0_frac * self.theta
        out, _ = tl.run_lmht(TorchOps, xs, lambda t: nm.LMHTParams(
            lam=_bcast(self.lam_steps[t], x.dim() - 1), theta=self.theta, levels=1), v,
            tl.omega_rows(self.omega_fixed), blocked=False)
        return torch.stack(out)


class QCFS(nn.Module):
    """QCFS activation: ``a = (vt/T_q) clip(floor(x T_q / vt + 1/2), 0, T_q)``, learnable vt,
    straight-through floor (hybrid stage 1)."""

    kind = "qcfs"

    def __init__(self, tq: int = 8, threshold: float = 8.0):
        super().__init__()
        self.tq = int(tq)
        self.threshold = nn.Parameter(torch.tensor(float(threshold)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.clamp(x / self.threshold, 0.0, 1.0) * self.tq + 0.5
        y = y + (torch.floor(y) - y).detach()  # straight-through floor
        return y * (self.threshold / self.tq)


def make_neuron(cfg: dict, timesteps: int, channels: int) -> nn.Module:
    """Build one neuron layer from the model config's ``neuron`` section.

    cfg keys: ``kind`` (lif | lmh | lmh-radical | lmht | qcfs), ``per_channel`` (bool),
    ``levels`` (LM-HT), ``theta`` (optional), ``lif_decay``, ``v0_frac`` (LM-HT),
    ``learn_omega`` (LM-HT), ``tq`` (QCFS).
    """
    kind = cfg["kind"]
    ch = channels if cfg.get("per_channel") else None
    if kind == "lif":
        return LIFNeuron(timesteps, decay=cfg.get("lif_decay", 0.5), theta=cfg.get("theta", 1.0))
    if kind in ("lmh", "lmh-radical"):
        return LMHNeuron(timesteps, channels=ch, radical=kind == "lmh-radical",
                         theta=cfg.get("theta", 1.0))
    if kind == "lmht":
        return LMHTNeuron(timesteps, levels=cfg.get("levels", 2), channels=ch,
                          theta=cfg.get("theta"), v0_frac=cfg.get("v0_frac", 0.0),
                          learn_omega=cfg.get("learn_omega", True))
    if kind == "qcfs":
        return QCFS(tq=cfg.get("tq", 8), threshold=cfg.get("theta", 8.0))
    raise ValueError(f"unknown neuron kind {kind!r}; choose one of {', '.join(NEURON_KINDS + ('qcfs',))}")
