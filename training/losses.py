"""Losses over per-step logits ``[T, B, K]``."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def ce_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """CE of the mean logits: ``CE(mean_t logits[t], y)``."""
    return F.cross_entropy(logits.mean(0), target)


def tet_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """TET (as in the LM-H / LM-HT reference code, no MSE term): ``mean_t CE(logits[t], y)``."""
    t, b, k = logits.shape
    return F.cross_entropy(logits.reshape(t * b, k), target.repeat(t))


LOSSES = {"ce": ce_loss, "tet": tet_loss}


def get_loss(name: str):
    return LOSSES[name]
