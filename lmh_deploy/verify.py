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
           batch_size=256, data_dir=None, data_options=None, progress=False) -> dict:
    """The report that ``lmh-verify --json`` writes; ``dataset`` defaults to the checkpoint's
    training data set (else digits), read from ``data_dir`` with the loader's ``data_options``."""
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
        from lmh_deploy.evaluate import resolve_dataset

        ds = resolve_dataset(path, dataset)
        opts = dict(data_options or {})
        if ds == "dvscifar10":
            opts.setdefault("frames", t)
        x, y = load_eval_data(ds, limit, data_dir, **opts)
        ref = dep.run("reference", x, t, batch_size)
        results = {}
        for name in ["deployed-torch"] + [r.name for r in rts if r.name != "deployed-torch"]:
            run = dep.run(name, x, t, batch_size, progress=progress)
            results[name] = compare_runs(ref, run)
            results[name]["exact_required"] = dep.check_runtime(name).exact
            results[name]["accuracy"] = accuracy_per_step(run.logits, y)[-1]
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
    if all("accuracy" in rep["runtimes"][n] for n in names):
        lines.append(f"{'accuracy':<29}" + "".join(f"{rep['runtimes'][n]['accuracy']:>16.4f}"
                                                   for n in names)
                     + f"{f['accuracy_trained']:>17.4f}")
    lines.append(f"accuracy: trained module {f['accuracy_trained']:.4f}, deployed graph "
                 f"{f['accuracy_deployed']:.4f} (fold fidelity is reported, not checked)")
    bad = [n for n, r in rep["runtimes"].items() if r["exact_required"] and not r["identical"]]
    lines.append("OK: every runtime computes the reference's spikes exactly" if rep["ok"] else
                 f"MISMATCH: {', '.join(bad)} differ from the reference")
    return "\n".join(lines)


# -- validation of a freshly written export (lmh-export's default) ---------------------------------
from lmh_deploy.errors import ExportFormatError, ExportValidationError  # noqa: E402


def validation_sample(graph, dataset: str | None = None, n: int = 32, data_dir=None, seed: int = 0,
                      options=None, strict: bool = False):
    """A sample batch for :func:`validate_export`: the first ``n`` test samples of ``dataset``
    (read from ``data_dir`` with the loader's ``options``) when it can be read, else ``n`` seeded
    random inputs on the graph's input grid in ``[0, input_bound]`` (``[n, *input_shape]``
    float32; exact on the grid). ``strict``: a data set that cannot be read raises (the
    loader's one-line error) instead of falling back to random inputs."""
    if dataset:
        try:
            from lmh_deploy.evaluate import load_eval_data

            x, _ = load_eval_data(dataset, n, data_dir, **dict(options or {}))
            if x.ndim == len(graph.input_shape) + 1:
                return x
        except Exception:  # noqa: BLE001 - e.g. CIFAR without --data-dir: random inputs instead
            if strict:
                raise
    q, b = float(graph.input_quantum), float(graph.input_bound)
    steps = max(1, int(min(b, 1.0) / q))
    k = np.random.default_rng(seed).integers(0, steps + 1, size=(n, *graph.input_shape))
    return (k * q).astype(np.float32)


def validate_export(graph, path, fmt: str, x, timesteps: int | None = None,
                    runtime: str | None = None) -> dict:
    """Run the file ``path`` (format ``fmt``) just written from ``graph`` on ``x`` in the format's
    exact runtime and compare it with the reference interpreter on ``graph``.

    Returns ``{"runtime", "samples", "timesteps", "spike_agreement" (min over the layers the file
    exposes; None when it exposes none), "layers_compared", "max_abs_logit_diff", "identical"}``.
    Raises :class:`ExportValidationError` when the file differs (spikes not all identical or
    |Δ logit| > 1e-4 of the largest logit), so the caller can discard the file. One rule with the
    fold-fidelity checks (thresholds are extended there)."""
    from lmh_deploy.graph.interpret import run_reference
    from lmh_deploy.runtimes import format_runtimes, get_runtime

    names = [runtime] if runtime else [n for n in format_runtimes(fmt) if get_runtime(n).exact]
    if not names:
        raise ExportFormatError(f"no runtime validates {fmt} files; pass --no-validate")
    rt = get_runtime(names[0])
    t = int(timesteps or graph.timesteps)
    ref = run_reference(graph, x, t)
    got = rt.run_fn()(rt.load_fn()(path), x, t)
    cmp = compare_runs(ref, got)
    agree = [v for v in cmp["spike_agreement"].values() if v is not None]
    rep = {"runtime": rt.name, "samples": int(x.shape[0]), "timesteps": t,
           "spike_agreement": min(agree) if agree else None, "layers_compared": len(agree),
           "max_abs_logit_diff": cmp["max_abs_logit_diff"],
           "identical": all(v == 1.0 for v in agree) and cmp["max_rel_logit_diff"] <= 1e-4}
    if not rep["identical"]:
        raise ExportValidationError(
            f"validation failed: {rt.name} on the written {fmt} file differs from the reference "
            f"({format_validation(rep)}); no file written. Report this (or --no-validate to keep it)")
    return rep


def format_validation(rep: dict) -> str:
    s = rep["spike_agreement"]
    spikes = ("spikes not in the file (export --with-spikes to compare them)" if s is None else
              f"spike agreement {100 * s:.4f} % over {rep['layers_compared']} layers")
    return (f"{rep['runtime']} vs reference on {rep['samples']} samples at T={rep['timesteps']}: "
            f"{spikes}, max |Δ logit| {rep['max_abs_logit_diff']:.3g}")
