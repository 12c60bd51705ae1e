"""Optimizer and learning-rate schedule (as in the papers: SGD, momentum 0.9, cosine annealing
over the epochs, stepped once per epoch; AdamW as an option)."""
from __future__ import annotations

import torch


def build_optimizer(params, cfg: dict) -> torch.optim.Optimizer:
    """SGD(lr, momentum, weight_decay) or AdamW(lr, weight_decay)."""
    if cfg["optimizer"] == "sgd":
        return torch.optim.SGD(params, lr=cfg["lr"], momentum=cfg["momentum"],
                               weight_decay=cfg["weight_decay"])
    if cfg["optimizer"] == "adamw":
        return torch.optim.AdamW(params, lr=cfg["lr"], weight_decay=cfg["weight_decay"])
    raise ValueError(f"unknown optimizer {cfg['optimizer']!r}")


def build_scheduler(optimizer, cfg: dict):
    """Cosine annealing: ``lr_e = lr/2 (1 + cos(pi e / epochs))`` for epoch e = 0..epochs-1."""
    return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg["epochs"])


def rescale_cosine(optimizer, scheduler, epochs: int) -> None:
    """Give a resumed cosine schedule a new length: ``lr_e = lr/2 (1 + cos(pi e / epochs))`` at
    the epoch it stands at (the scheduler's recursive update would keep the old curve's lr,
    e.g. 0 at the end of a finished run)."""
    import math

    scheduler.T_max = int(epochs)
    e = scheduler.last_epoch
    for group, base in zip(optimizer.param_groups, scheduler.base_lrs):
        group["lr"] = scheduler.eta_min + (base - scheduler.eta_min) * (1 + math.cos(math.pi * e / epochs)) / 2
    scheduler._last_lr = [g["lr"] for g in optimizer.param_groups]
