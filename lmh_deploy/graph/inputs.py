"""The deployed graph's input: normalized 8-bit images -> the raw pixels a folded graph takes.

A model trained on ``x = (p / 255 - mean_c) / std_c`` is deployed with the normalization folded
into its first layer (:mod:`lmh_deploy.graph.fold`); the graph then takes
``u = (p - pixel_mean_c) / 256``, exact on the input grid 2**-8 (``DeployGraph.meta["input_norm"]``).
"""
from __future__ import annotations

import numpy as np


def raw_input(x, input_norm: dict | None):
    """Normalized images ``x = (p / scale - mean_c) / std_c`` (float, ``[..., C, H, W]``) -> the
    raw pixels a graph with ``meta["input_norm"]`` takes: ``u = (p - pixel_mean_c) / 256``
    (float32, exact), p recovered as ``round((x std_c + mean_c) scale)`` clipped to 0..scale.
    ``input_norm`` None: ``x`` unchanged."""
    if not input_norm:
        return x
    x = np.asarray(x, np.float64)
    c = len(input_norm["mean"])
    shp = (c, 1, 1) if x.ndim >= 3 and x.shape[-3] == c else (-1,)
    mean = np.asarray(input_norm["mean"], np.float64).reshape(shp)
    std = np.asarray(input_norm["std"], np.float64).reshape(shp)
    s = float(input_norm.get("scale", 255.0))
    pix = np.asarray(input_norm["pixel_mean"], np.float64).reshape(shp)
    p = np.clip(np.round((x * std + mean) * s), 0, s)
    return ((p - pix) / 256.0).astype(np.float32)
