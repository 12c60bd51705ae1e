"""Evaluation during training: test accuracy of the mean logits and per step (shared by the
training loop and the hybrid ANN stage, :mod:`.extensions`)."""
from __future__ import annotations

import torch
from torch.utils.data import DataLoader


def _to_device(x, y, device, frames: bool):
    x = x.to(device, non_blocking=True)
    if frames:  # [B, T, ...] -> time-major [T, B, ...]
        x = x.transpose(0, 1)
    return x, y.to(device, non_blocking=True)


def accuracy_per_t(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Correct counts ``[T]`` of the cumulative mean logits: prediction after step t is
    ``argmax_k (1/t) sum_{u<=t} logits[u, :, k]``."""
    t = logits.shape[0]
    cum = logits.cumsum(0) / torch.arange(1, t + 1, device=logits.device, dtype=logits.dtype).view(-1, 1, 1)
    return (cum.argmax(-1) == target.unsqueeze(0)).sum(1)


@torch.no_grad()
def evaluate(model, dataset, cfg: dict, frames: bool = False) -> dict:
    """Test accuracy of the mean logits, and per step of the cumulative mean (``[T]``)."""
    device = torch.device(cfg["device"])
    model.eval()
    loader = DataLoader(dataset, batch_size=cfg["eval_batch_size"], shuffle=False,
                        num_workers=cfg["num_workers"])
    correct = None
    n = 0
    for x, y in loader:
        x, y = _to_device(x, y, device, frames)
        c = accuracy_per_t(model(x), y).cpu()
        correct = c if correct is None else correct + c
        n += y.shape[0]
    per_t = [float(v) / n for v in correct]
    return {"test_accuracy": per_t[-1], "test_accuracy_per_t": per_t, "test_samples": n}
