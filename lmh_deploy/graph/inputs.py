"""The deployed graph's input: normalized 8-bit images -> the raw pixels a folded graph takes.

A model trained on ``x = (p / 255 - mean_c) / std_c`` is deployed with the normalization folded
into its first layer (:mod:`lmh_deploy.graph.fold`); the graph then takes
``u = (p - pixel_mean_c) / 256``, exact on the input grid 2**-8 (``DeployGraph.meta["input_norm"]``).
"""
from __future__ import annotations

import numpy as np

from lmh_deploy.errors import UnsupportedModelError


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


def input_affine(norm: dict, shape: tuple):
    """Raw-pixel deployment of a normalized input ``x = (p / s - mean_c) / std_c`` (integer pixels
    p, s = ``norm["scale"]``, 255 for 8-bit images). The deployed input is
    ``u = (p - m_c) / 256`` with m_c = round(s mean_c): exact on the grid 2**-8, |u| <= 1, and 0
    where the normalized image is m_c's normalized value. Then ``x = a_c u + d_c`` with
    ``a_c = 256 / (s std_c)`` and ``d_c = (m_c / s - mean_c) / std_c`` (0 when s mean_c is an
    integer, as for the package's data sets). Returns (a, d) as float64 [C], and m (int [C])."""
    mean = np.asarray(norm["mean"], np.float64)
    std = np.asarray(norm["std"], np.float64)
    s = float(norm.get("scale", 255.0))
    if mean.shape != (shape[0],) or std.shape != (shape[0],) or np.any(std <= 0):
        raise UnsupportedModelError(f"input_norm needs one mean and one positive std per input "
                                    f"channel ({shape[0]}), got {norm!r}")
    if s > 256:
        raise UnsupportedModelError(f"input_norm scale {s:g} > 256: raw pixels do not fit the "
                                    f"2**-8 input grid")
    m = np.round(mean * s)
    return 256.0 / (s * std), (m / s - mean) / std, m.astype(np.int64)
