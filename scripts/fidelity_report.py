#!/usr/bin/env python
"""Fold fidelity of trained checkpoints, one grid (before: ``fold(split=False)``) vs split hi + lo
(after): test accuracy of the trained module and the deployed graph, the worst layer's fraction of
identical spikes (against the trained module in float32, and in float64: its exact arithmetic)
and the first layer's weight rounding error. Usage:
``python scripts/fidelity_report.py CKPT [CKPT ...] [--limit N] [--json PATH]``."""
from __future__ import annotations

import argparse
import json

import numpy as np
import torch


def measure(path, limit=None, split=True, timesteps=None):
    from lmh_deploy.checkpoint import load_checkpoint
    from lmh_deploy.evaluate import accuracy_per_step, load_eval_data
    from lmh_deploy.graph.fold import fold
    from lmh_deploy.graph.interpret import run_reference
    from lmh_deploy.graph.inputs import raw_input
    from lmh_deploy.deployment import load_model_checked

    ck = load_checkpoint(path)
    model = load_model_checked(path).eval()
    x, y = load_eval_data(ck["train_config"].get("dataset", "digits"), limit)
    g = fold(model, split=split)
    t = timesteps or model.timesteps
    import copy

    m64 = copy.deepcopy(model).double().eval()
    ref_l, ref_s, tr_l, tr_s, s64 = [], {}, [], {}, {}
    for i in range(0, len(y), 250):
        xb = x[i:i + 250]
        r = run_reference(g, raw_input(xb, g.meta.get("input_norm")), t)
        with torch.no_grad():
            lo, sp = model.run(torch.from_numpy(xb), timesteps=t, record=True)
            _, sp64 = m64.run(torch.from_numpy(xb).double(), timesteps=t, record=True)
        ref_l.append(r.logits)
        tr_l.append(lo.numpy())
        for k in r.spikes:
            ref_s.setdefault(k, []).append(r.spikes[k])
            tr_s.setdefault(k, []).append(sp[k].numpy())
            s64.setdefault(k, []).append(sp64[k].numpy())
    ref_l, tr_l = np.concatenate(ref_l, 1), np.concatenate(tr_l, 1)
    agree = {k: float(np.mean(np.concatenate(ref_s[k], 1) == np.concatenate(tr_s[k], 1)))
             for k in ref_s}
    agree64 = {k: float(np.mean(np.concatenate(ref_s[k], 1) == np.concatenate(s64[k], 1)))
               for k in ref_s}
    self64 = {k: float(np.mean(np.concatenate(tr_s[k], 1) == np.concatenate(s64[k], 1)))
              for k in ref_s}
    pred_r, pred_t = ref_l.mean(0).argmax(-1), tr_l.mean(0).argmax(-1)
    flipped = np.zeros(len(y), bool)
    for k in ref_s:
        a, b = np.concatenate(ref_s[k], 1), np.concatenate(tr_s[k], 1)
        flipped |= (a != b).reshape(a.shape[0], a.shape[1], -1).any((0, 2))
    we = g.meta["weight_error"]
    first = next(iter(we))
    return {"checkpoint": str(path), "split": split, "T": int(t), "samples": int(len(y)),
            "accuracy_trained": accuracy_per_step(tr_l, y)[-1],
            "accuracy_deployed": accuracy_per_step(ref_l, y)[-1],
            "predictions_changed": float(np.mean(pred_r != pred_t)),
            "images_with_a_flipped_spike": float(flipped.mean()),
            "worst_layer": min(agree, key=agree.get), "worst_agreement": min(agree.values()),
            "first_layer_weight_error": we[first], "worst_weight_error": max(we.values()),
            "worst_agreement_float64": min(agree64.values()),
            "trained_float32_vs_float64": min(self64.values()),
            "agreement": agree, "agreement_float64": agree64}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("checkpoints", nargs="+")
    p.add_argument("--limit", type=int)
    p.add_argument("--json")
    a = p.parse_args()
    rows = []
    for c in a.checkpoints:
        for split in (False, True):
            r = measure(c, a.limit, split)
            rows.append(r)
            print(f"{c} {'split' if split else 'one-grid'}: acc trained {r['accuracy_trained']:.4f} "
                  f"deployed {r['accuracy_deployed']:.4f}, predictions changed "
                  f"{r['predictions_changed']:.4f}, images with a flipped spike "
                  f"{r['images_with_a_flipped_spike']:.3f}, worst layer {r['worst_layer']} "
                  f"{r['worst_agreement']:.5f}, first-layer weight error "
                  f"{r['first_layer_weight_error']:.3g}; worst layer vs the trained module in "
                  f"float64 {r['worst_agreement_float64']:.6f} (trained float32 vs float64: "
                  f"{r['trained_float32_vs_float64']:.6f})", flush=True)
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(rows, fh, indent=1)


if __name__ == "__main__":
    main()
