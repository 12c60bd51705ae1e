"""Verification of a checkpoint's deployed runtimes (the report behind ``lmh-verify``).

Exports the checkpoint to a temporary file and compares, layer by layer on the test split,
the deployed runtimes against the numpy reference: the fraction of identical spike counts per
layer and the max |logit difference|. Exit status 1 when any runtime differs (2 on bad input).

It also reports the **fold fidelity**: the trained module (before the fold) against the deployed
graph -- spike agreement per layer and the accuracy of each. The fold puts weights on an exact-sum
grid, so these may differ very slightly; that is reported, not failed.
"""
from __future__ import annotations

import numpy as np


def compare_runs(ref, other) -> dict:
    """Per-layer fraction of identical spike counts and max |Δ logits| of ``other`` vs ``ref``."""
    layers = {k: float(np.mean(other.spikes[k] == s)) if k in other.spikes else None
              for k, s in ref.spikes.items()}
    dl = float(np.max(np.abs(other.logits - ref.logits))) if other.logits.size else 0.0
    scale = float(np.max(np.abs(ref.logits))) or 1.0
    return {"spike_agreement": layers, "max_abs_logit_diff": dl, "max_rel_logit_diff": dl / scale,
            "identical": all(v == 1.0 for v in layers.values()) and dl <= 1e-4 * scale}


def verify(path, fmt: str, runtimes=None, timesteps=None, dataset=None, limit=None,
           batch_size=256) -> dict:
    """The report that ``lmh-verify --json`` writes."""
    from lmh_deploy.deployment import Deployment
    from lmh_deploy.evaluate import accuracy_per_step, load_eval_data
    from lmh_deploy.errors import ExportFormatError
    from lmh_deploy.runtimes import format_runtimes, get_writer, parse_runtimes

    get_writer(fmt)  # unknown format -> error before any work
    if runtimes is None:
        if not format_runtimes(fmt):
            raise ExportFormatError(f"no default runtime for format {fmt!r}; pass --runtime")
        runtimes = ",".join(format_runtimes(fmt))
    rts = parse_runtimes(runtimes)
    with Deployment(path) as dep:
        if not dep.is_checkpoint:
            raise ExportFormatError(f"{path}: lmh-verify needs the checkpoint (.pt), not an export")
        for rt in rts:
            if rt.source not in ("graph", "model", fmt):
                raise ExportFormatError(f"runtime {rt.name!r} runs {rt.source} files, not {fmt}")
        t = dep.check_timesteps(timesteps or dep.trained_timesteps)
        ckpt_ds = None
        try:
            from lmh_deploy.checkpoint import load_checkpoint

            ckpt_ds = load_checkpoint(path).get("train_config", {}).get("dataset")
        except Exception:  # noqa: BLE001 - the dataset hint is optional
            pass
        ds = dataset or ckpt_ds or "digits"
        x, y = load_eval_data(ds, limit)
        ref = dep.run("reference", x, t, batch_size)
        results = {}
        for name in ["deployed-torch"] + [r.name for r in rts if r.name != "deployed-torch"]:
            results[name] = compare_runs(ref, dep.run(name, x, t, batch_size))
            results[name]["exact_required"] = dep.check_runtime(name).exact
        trained = dep.run("torch", x, t, batch_size)
        shapes = dep.graph.shapes()
    fidelity = compare_runs(ref, trained)
    fidelity["accuracy_trained"] = accuracy_per_step(trained.logits, y)[-1]
    fidelity["accuracy_deployed"] = accuracy_per_step(ref.logits, y)[-1]
    ok = all(r["identical"] for r in results.values() if r["exact_required"])
    return {"checkpoint": str(path), "format": fmt, "timesteps": t, "dataset": ds,
            "samples": int(len(y)),
            "layers": {k: {"neurons": int(np.prod(shapes[k])), "firing_rate": float(s.mean())}
                       for k, s in ref.spikes.items()},
            "runtimes": results, "fold_fidelity": fidelity, "ok": ok}


def format_report(rep: dict) -> str:
    names = list(rep["runtimes"])
    head = f"{'layer':<12}{'neurons':>9}{'rate':>8}" + "".join(f"{n:>16}" for n in names) + \
        f"{'trained-vs-fold':>17}"
    lines = [f"{rep['checkpoint']}: {rep['format']} at T={rep['timesteps']} on {rep['samples']} "
             f"{rep['dataset']} test samples; fraction of identical spike counts vs the reference",
             head, "-" * len(head)]
    for layer, info in rep["layers"].items():
        row = f"{layer:<12}{info['neurons']:>9}{info['firing_rate']:>8.3f}"
        for n in names:
            v = rep["runtimes"][n]["spike_agreement"][layer]
            row += f"{'n/a' if v is None else f'{v:.6f}':>16}"
        row += f"{rep['fold_fidelity']['spike_agreement'][layer]:>17.6f}"
        lines.append(row)
    row = f"{'max|Δlogit|':<29}" + "".join(f"{rep['runtimes'][n]['max_abs_logit_diff']:>16.3g}"
                                          for n in names)
    lines.append(row + f"{rep['fold_fidelity']['max_abs_logit_diff']:>17.3g}")
    f = rep["fold_fidelity"]
    lines.append(f"accuracy: trained module {f['accuracy_trained']:.4f}, deployed graph "
                 f"{f['accuracy_deployed']:.4f} (fold fidelity is reported, not checked)")
    bad = [n for n, r in rep["runtimes"].items() if r["exact_required"] and not r["identical"]]
    lines.append("OK: every runtime computes the reference's spikes exactly" if rep["ok"] else
                 f"MISMATCH: {', '.join(bad)} differ from the reference")
    return "\n".join(lines)
