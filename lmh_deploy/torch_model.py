"""Runtime ``torch``: the trained :class:`~lmh_deploy.models.SpikingNet` itself, in eval mode.

This is the model *before* the fold (BN not folded, theta not folded, weights not on the exact-sum
grid); comparing it with the deployed graph measures the fold's fidelity.
"""
from __future__ import annotations

import numpy as np

from lmh_deploy.graph.interpret import GraphRun


def run_trained_model(model, x, timesteps: int | None = None) -> GraphRun:
    """``model.run(x, T, record=True)`` without gradients; numpy logits and spike counts."""
    import torch

    model.eval()
    with torch.no_grad():
        xt = torch.as_tensor(np.asarray(x, dtype=np.float32))
        logits, spikes = model.run(xt, timesteps, record=True)
    return GraphRun(logits.cpu().numpy(), {k: v.cpu().numpy() for k, v in spikes.items()})
