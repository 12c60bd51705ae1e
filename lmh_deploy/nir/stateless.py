"""The stateless nodes of a foreign NIR graph, one step on a batch (issue 15): Affine, Linear,
Scale, Conv1d / Conv2d (groups, dilation, padding), SumPool2d / AvgPool2d and Flatten, in
float32 numpy. Shared by the numpy runtime (:mod:`lmh_deploy.nir.foreign`) and the Lava foreign
stage process (:mod:`lmh_deploy.lava.procs.foreign_node`); numpy only."""
from __future__ import annotations

import numpy as np


def _conv(x, p):
    """Batched float32 convolution [B, C, *S] (Conv1d / Conv2d, groups, dilation, padding)."""
    w, stride, pad, dil, groups = p["weight"], p["stride"], p["padding"], p["dilation"], p["groups"]
    nd = w.ndim - 2
    x = np.pad(x, [(0, 0), (0, 0)] + [tuple(q) for q in pad])
    B, C = x.shape[:2]
    O, Cg = w.shape[:2]
    ks = w.shape[2:]
    outs = [(x.shape[2 + d] - dil[d] * (ks[d] - 1) - 1) // stride[d] + 1 for d in range(nd)]
    y = np.zeros((B, O, *outs), np.float32)
    og = O // groups
    for g in range(groups):
        xg = x[:, g * Cg:(g + 1) * Cg]
        wg = w[g * og:(g + 1) * og]
        if nd == 2:
            cols = np.stack([xg[:, :, i * dil[0]: i * dil[0] + stride[0] * (outs[0] - 1) + 1: stride[0],
                                j * dil[1]: j * dil[1] + stride[1] * (outs[1] - 1) + 1: stride[1]]
                             for i in range(ks[0]) for j in range(ks[1])], axis=2)
            # cols [B, Cg, K, Ho, Wo]
            y[:, g * og:(g + 1) * og] = np.einsum("bckhw,ock->bohw", cols,
                                                  wg.reshape(og, Cg, -1), optimize=True)
        else:
            cols = np.stack([xg[:, :, i * dil[0]: i * dil[0] + stride[0] * (outs[0] - 1) + 1: stride[0]]
                             for i in range(ks[0])], axis=2)
            y[:, g * og:(g + 1) * og] = np.einsum("bckl,ock->bol", cols, wg, optimize=True)
    return y + p["bias"].reshape((1, -1) + (1,) * nd)


def _pool(x, p):
    (kh, kw), (sh, sw), (ph, pw) = p["kernel"], p["stride"], p["padding"]
    x = np.pad(x, [(0, 0), (0, 0), (ph, ph), (pw, pw)])
    Ho = (x.shape[2] - kh) // sh + 1
    Wo = (x.shape[3] - kw) // sw + 1
    y = np.zeros(x.shape[:2] + (Ho, Wo), np.float32)
    for i in range(kh):
        for j in range(kw):
            y += x[:, :, i: i + sh * (Ho - 1) + 1: sh, j: j + sw * (Wo - 1) + 1: sw]
    return y / np.float32(kh * kw) if p["avg"] else y


def eval_stateless(node, u):
    """Affine / Linear / Scale / Conv / pooling / Flatten / Output on a batch ``u`` [B, ...]."""
    k, p = node.kind, node.params
    if k in ("Output", "Input"):
        return u
    if k in ("Affine", "Linear"):
        y = u @ p["weight"].T
        return y + p["bias"] if p["bias"] is not None else y
    if k == "Scale":
        return u * p["scale"]
    if k in ("Conv1d", "Conv2d"):
        return _conv(u, p)
    if k in ("SumPool2d", "AvgPool2d"):
        return _pool(u, p)
    if k == "Flatten":
        return u.reshape((u.shape[0],) + node.out_shape)
    raise AssertionError(k)  # pragma: no cover
