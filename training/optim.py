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
