"""STDS sparse training (Chen et al., 2022; LM-H paper Appendix A.2, Eqs. S1-S2).

Each conv/linear weight is the soft-thresholded image of a dense latent ``theta``::

    W = sign(theta) * max(|theta| - d, 0)                          (S1)
    d_t = D/2 * (sin(t*pi/T_d - pi/2) + 1),  t = 0..T_d, then D   (S2)

so ``dW/dtheta = 1`` where ``|theta| > d`` and 0 elsewhere; ``d`` rises from 0 to the target
width ``D`` (0.05 in the paper) over ``T_d`` optimizer updates.

Layout: the model's own ``weight`` parameters always hold the *sparse* ``W`` (so a checkpoint
is an ordinary, deployable model), and :class:`STDS` keeps ``theta``. Around each optimizer
step call ``pre_step()`` (gradient masked, ``theta`` swapped in) and ``post_step()``
(``theta`` taken back, ``t += 1``, ``W`` re-projected with the new ``d``). Resuming from a
checkpoint recovers ``theta = sign(W)(|W| + d_t)`` exactly for the surviving weights and 0
for pruned ones (:meth:`STDS.from_sparse`).
"""
from __future__ import annotations

import math

import torch
from torch import nn


def stds_width(t: int, total: int, width: float) -> float:
    """Eq. S2: ``d_t = D/2 (sin(t pi / T_d - pi/2) + 1)``, held at D for t >= T_d."""
    if total <= 0:
        return float(width)
    t = min(max(int(t), 0), int(total))
    return 0.5 * (math.sin(t * math.pi / total - math.pi / 2) + 1.0) * float(width)


def soft_threshold(theta: torch.Tensor, d: float) -> torch.Tensor:
    """Eq. S1: ``sign(theta) * relu(|theta| - d)``."""
    return torch.sign(theta) * torch.relu(theta.abs() - d)


def sparse_weights(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """The weights STDS manages: every Conv/Linear weight (BN, neuron parameters excluded)."""
    return [(f"{name}.weight", m.weight) for name, m in model.named_modules()
            if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear))]


class STDS:
    """Controller of the latent weights; see the module docstring for the call protocol."""

    def __init__(self, model: nn.Module, width: float = 0.05, total_updates: int = 1, step: int = 0,
                 latent: dict | None = None):
        if width < 0:
            raise ValueError(f"--sparsity-width must be >= 0, got {width}")
        self.width, self.total, self.t = float(width), int(total_updates), int(step)
        self.params = sparse_weights(model)
        if not self.params:
            raise ValueError("STDS found no Conv/Linear weights in the model")
        with torch.no_grad():
            self.latent = {n: (latent[n].clone() if latent else p.detach().clone()).to(p.device)
                           for n, p in self.params}
        self.project()

    @classmethod
    def from_sparse(cls, model: nn.Module, width: float, total_updates: int, step: int) -> "STDS":
        """Resume: rebuild ``theta = sign(W)(|W| + d_t)`` from the sparse weights (pruned -> 0)."""
        d = stds_width(step, total_updates, width)
        latent = {n: torch.sign(p.detach()) * (p.detach().abs() + d) for n, p in sparse_weights(model)}
        return cls(model, width, total_updates, step, latent)

    @property
    def d(self) -> float:
        return stds_width(self.t, self.total, self.width)

    @torch.no_grad()
    def project(self) -> None:
        """``W <- sign(theta) relu(|theta| - d_t)`` for every managed weight."""
        d = self.d
        for n, p in self.params:
            p.copy_(soft_threshold(self.latent[n], d))

    @torch.no_grad()
    def pre_step(self) -> None:
        """Before ``optimizer.step()``: ``grad *= 1[|theta| > d]``, parameter data <- theta."""
        d = self.d
        for n, p in self.params:
            if p.grad is not None:
                p.grad.mul_((self.latent[n].abs() > d).to(p.grad.dtype))
            p.copy_(self.latent[n])

    @torch.no_grad()
    def post_step(self) -> None:
        """After ``optimizer.step()``: theta <- parameter data, t += 1, re-project."""
        for n, p in self.params:
            self.latent[n].copy_(p)
        self.t += 1
        self.project()

    @torch.no_grad()
    def sparsity(self) -> float:
        """Fraction of exactly-zero managed weights."""
        zeros = sum(int((p == 0).sum()) for _, p in self.params)
        return zeros / sum(p.numel() for _, p in self.params)

    def metrics(self) -> dict:
        return {"sparsity": self.sparsity(), "stds_d": self.d, "stds_step": self.t}


__all__ = ["STDS", "soft_threshold", "sparse_weights", "stds_width"]
