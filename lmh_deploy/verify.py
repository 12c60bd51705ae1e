"""Verification of a checkpoint's deployed runtimes (the report behind ``lmh-verify``).

Exports the checkpoint to a temporary file and compares, layer by layer on the test split,
the deployed runtimes against the numpy reference: the fraction of identical spike counts per
layer and the max |logit difference|. Exit status 1 when any runtime differs (2 on bad input).

It also checks the **fold fidelity**: the trained module (before the fold) against the deployed
graph -- spike agreement per layer and the accuracy of each, at the trained T and at the swept Ts
(``fidelity_timesteps``). The fold puts weights on exact-sum grids (split hi + lo, so the deployed
weights are within ~1e-6 of the trained ones), so they differ only where float32 summation order
flips a spike sitting on the threshold; :func:`check_fidelity` fails a report whose accuracy moves
by more than ``max_accuracy_drop`` points or whose layer keeps fewer than ``min_spike_agreement``
identical spikes. Also reported: each synapse's weight rounding error (``weight_error``).
"""
from __future__ import annotations

import numpy as np

from lmh_deploy.errors import DatasetError, FoldFidelityError, MissingDependencyError


class Agreement:
    """:func:`compare_runs` accumulated over batches: per-layer identical spike counts and the
    largest |Δ logit| of runs ``other`` against reference runs ``ref`` (memory: one batch)."""

    def __init__(self):
        self.same: dict = {}
        self.total: dict = {}
        self.dl = 0.0
        self.scale = 0.0

    def add(self, ref, other) -> "Agreement":
        for k, s in ref.spikes.items():
            if k in other.spikes:
                self.same[k] = (self.same.get(k) or 0) + int(np.count_nonzero(other.spikes[k] == s))
                self.total[k] = self.total.get(k, 0) + int(np.size(s))
            else:
                self.same.setdefault(k, None)
        if np.size(other.logits):
            self.dl = max(self.dl, float(np.max(np.abs(other.logits - ref.logits))))
        if np.size(ref.logits):
            self.scale = max(self.scale, float(np.max(np.abs(ref.logits))))
        return self

    def result(self) -> dict:
        layers = {k: None if v is None else v / max(self.total[k], 1) for k, v in self.same.items()}
        scale = self.scale or 1.0
        return {"spike_agreement": layers, "max_abs_logit_diff": self.dl,
                "max_rel_logit_diff": self.dl / scale,
                "identical": all(v == 1.0 for v in layers.values()) and self.dl <= 1e-4 * scale}


def compare_runs(ref, other) -> dict:
    """Per-layer fraction of identical spike counts and max |Δ logits| of ``other`` vs ``ref``."""
    return Agreement().add(ref, other).result()


def load_model_data(dep_or_graph, ds: str, limit, data_dir=None, options=None):
    """The first ``limit`` test samples ``(x, y)`` of data set ``ds`` for the model of a
    Deployment or DeployGraph; :class:`~lmh_deploy.errors.DatasetError` when their shape is not
    the model's input shape (a model trained on other data)."""
    from lmh_deploy.evaluate import load_eval_data

    x, y = load_eval_data(ds, limit, data_dir, **dict(options or {}))
    shape = dep_or_graph.input_shape
    if shape is not None:
        got = tuple(x.shape[2:] if x.ndim == len(shape) + 2 else x.shape[1:])
        if got != tuple(shape):
            raise DatasetError(f"{ds} test inputs are {list(got)}, the model takes {list(shape)}; "
                               f"pass --dataset naming the data the model was trained on")
    return x, y


#: defaults of the fold-fidelity check (lmh-verify, lmh-export --validate)
MAX_ACCURACY_DROP = 0.5      # percentage points, |trained - deployed| test accuracy
MIN_SPIKE_AGREEMENT = 0.999  # fraction of identical spike counts, every layer


def fidelity_timesteps(trained_t: int, text: str | None) -> list:
    """The Ts the fidelity is checked at: ``text`` ("4,8", "1-32"; None: T and 2T)."""
    from lmh_deploy.sweep import parse_timesteps

    extra = parse_timesteps(text, option="--fidelity-timesteps") if text is not None else [2 * trained_t]
    return sorted(set([trained_t] + extra))


def fold_fidelity(dep, x, y, ts, batch_size=64, progress: bool | None = False) -> dict:
    """Trained module vs deployed graph (numpy reference) at every T in ``ts``, streamed over
    batches of ``batch_size`` samples (memory: one batch's spikes, whatever ``len(y)``):
    ``{T: {"spike_agreement": {layer: frac}, "accuracy_trained", "accuracy_deployed", ...}}``.
    ``progress``: a tqdm bar over the samples (True always, None only on a terminal)."""
    from tqdm.auto import tqdm

    from lmh_deploy.evaluate import accuracy_per_step

    out = {}
    for t in ts:
        t = dep.check_timesteps(t)
        agree, lt, ld = Agreement(), [], []
        with tqdm(total=len(y), desc=f"fold fidelity T={t}", unit="sample", leave=False,
                  disable={True: False, False: True, None: None}[progress]) as bar:
            for ref, trained in zip(dep.batches("reference", x, t, batch_size),
                                    dep.batches("torch", x, t, batch_size)):
                agree.add(ref, trained)
                ld.append(ref.logits)
                lt.append(trained.logits)
                bar.update(int(ref.logits.shape[1]))
        f = agree.result()
        f["accuracy_trained"] = accuracy_per_step(np.concatenate(lt, 1), y)[-1]
        f["accuracy_deployed"] = accuracy_per_step(np.concatenate(ld, 1), y)[-1]
        out[int(t)] = f
    return out


def check_fidelity(fid: dict, max_accuracy_drop: float = MAX_ACCURACY_DROP,
                   min_spike_agreement: float = MIN_SPIKE_AGREEMENT) -> list:
    """One line per violation in a :func:`fold_fidelity` result (empty: the fold is faithful)."""
    bad, layers = [], []
    for t, f in sorted(fid.items()):
        drop = 100.0 * abs(f["accuracy_trained"] - f["accuracy_deployed"])
        if drop > max_accuracy_drop:
            bad.append(f"at T={t} the deployed accuracy {100 * f['accuracy_deployed']:.2f}% differs "
                       f"from the trained {100 * f['accuracy_trained']:.2f}% by {drop:.2f} points "
                       f"> --max-accuracy-drop {max_accuracy_drop:g}")
        layers += [(a, t, layer) for layer, a in f["spike_agreement"].items()
                   if a is not None and a < min_spike_agreement]
    for a, t, layer in sorted(layers, key=lambda r: r[0]):  # the worst layer first
        bad.append(f"at T={t} layer {layer} keeps {_percent(a, min_spike_agreement)} identical "
                   f"spikes < --min-spike-agreement {100 * min_spike_agreement:g}%")
    return bad


def _percent(a: float, bound: float) -> str:
    """``a`` in percent with the fewest decimals (3 to 8) that tell it from ``bound``."""
    for d in range(3, 9):
        if f"{100 * a:.{d}f}" != f"{100 * bound:.{d}f}":
            break
    return f"{100 * a:.{d}f}%"


def fidelity_error(bad: list) -> FoldFidelityError:
    """The one-line error of failed fidelity checks (the first violation and how many more)."""
    more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
    return FoldFidelityError(f"fold fidelity check failed: {bad[0]}{more}; retrain, or relax the "
                             f"threshold if this model is known to sit on its thresholds")


def weight_error_summary(graph) -> dict:
    """``{"first_layer": (name, err), "worst": (name, err), "per_synapse": {...}}`` from the fold's
    ``meta["weight_error"]`` (max |w_deployed - w| / max |w| per synapse)."""
    we = dict(graph.meta.get("weight_error", {}))
    if not we:
        return {}
    first = next(iter(we))
    worst = max(we, key=we.get)
    return {"first_layer": [first, we[first]], "worst": [worst, we[worst]], "per_synapse": we}


def verify(path, fmt: str, runtimes=None, timesteps=None, dataset=None, limit=None,
           batch_size=256, data_dir=None, data_options=None, progress=False,
           fidelity_ts: str | None = None, max_accuracy_drop: float = MAX_ACCURACY_DROP,
           min_spike_agreement: float = MIN_SPIKE_AGREEMENT) -> dict:
    """The report that ``lmh-verify --json`` writes; ``dataset`` defaults to the checkpoint's
    training data set (else digits), read from ``data_dir`` with the loader's ``data_options``.
    ``ok`` is False when a runtime differs from the reference or the fold fidelity check fails
    (``fidelity_failures``; thresholds ``max_accuracy_drop`` points, ``min_spike_agreement``, at
    the trained T and ``fidelity_ts``). Spikes are compared batch by batch (memory: one batch).
    :class:`~lmh_deploy.errors.DatasetError` when the data set's inputs do not fit the model."""
    from lmh_deploy.deployment import Deployment
    from lmh_deploy.evaluate import accuracy_per_step
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
        x, y = load_model_data(dep, ds, limit, data_dir, opts)
        names = ["deployed-torch"] + [r.name for r in rts if r.name != "deployed-torch"]
        agree = {name: Agreement() for name in names + ["torch"]}
        logits = {name: [] for name in names + ["torch", "reference"]}
        fired, neurons = {}, {}
        from tqdm.auto import tqdm

        n = len(y)
        with tqdm(total=n, desc="lmh-verify", unit="sample", leave=False,
                  disable={True: False, False: True, None: None}[progress]) as bar:
            streams = [dep.batches(n, x, t, batch_size) for n in ["reference"] + names + ["torch"]]
            for ref, *runs in zip(*streams):  # memory: one batch's spikes per runtime
                logits["reference"].append(ref.logits)
                for k, s in ref.spikes.items():
                    fired[k] = fired.get(k, 0.0) + float(np.sum(s, dtype=np.float64))
                    neurons[k] = neurons.get(k, 0) + int(np.size(s))
                for name, run in zip(names + ["torch"], runs):
                    agree[name].add(ref, run)
                    logits[name].append(run.logits)
                bar.update(int(ref.logits.shape[1]))
        logits = {k: np.concatenate(v, 1) for k, v in logits.items()}
        results = {}
        for name in names:
            results[name] = agree[name].result()
            results[name]["exact_required"] = dep.check_runtime(name).exact
            results[name]["accuracy"] = accuracy_per_step(logits[name], y)[-1]
        shapes = dep.graph.shapes()
        fidelity = agree["torch"].result()
        fidelity["accuracy_trained"] = accuracy_per_step(logits["torch"], y)[-1]
        fidelity["accuracy_deployed"] = accuracy_per_step(logits["reference"], y)[-1]
        sweep = {int(t): fidelity}
        # the trained T and the swept Ts (as lmh-export checks), besides this run's T
        sweep.update(fold_fidelity(dep, x, y, [u for u in fidelity_timesteps(
            dep.trained_timesteps, fidelity_ts) if u != t], batch_size, progress))
        weights = weight_error_summary(dep.graph)
    failures = check_fidelity(sweep, max_accuracy_drop, min_spike_agreement)
    exact = all(r["identical"] for r in results.values() if r["exact_required"])
    return {"checkpoint": str(path), "format": fmt, "timesteps": t, "dataset": ds,
            "samples": int(len(y)),
            "layers": {k: {"neurons": int(np.prod(shapes[k])),
                           "firing_rate": fired[k] / max(neurons[k], 1)} for k in fired},
            "runtimes": results, "fold_fidelity": fidelity,
            "fold_fidelity_sweep": {str(k): v for k, v in sorted(sweep.items())},
            "fidelity_thresholds": {"max_accuracy_drop": max_accuracy_drop,
                                    "min_spike_agreement": min_spike_agreement},
            "fidelity_failures": failures, "weight_error": weights,
            "runtimes_exact": exact, "ok": exact and not failures}


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
                 f"{f['accuracy_deployed']:.4f}")
    for t, g in rep.get("fold_fidelity_sweep", {}).items():
        worst = min((v for v in g["spike_agreement"].values() if v is not None), default=1.0)
        lines.append(f"fold fidelity at T={t}: accuracy trained {g['accuracy_trained']:.4f} / "
                     f"deployed {g['accuracy_deployed']:.4f}; worst layer {worst:.6f} identical spikes")
    we = rep.get("weight_error") or {}
    if we:
        (n1, e1), (nw, ew) = we["first_layer"], we["worst"]
        lines.append(f"weight rounding error (max |w_deployed - w| / max |w|): first layer {n1} "
                     f"{e1:.3g}, worst {nw} {ew:.3g}")
    bad = [n for n, r in rep["runtimes"].items() if r["exact_required"] and not r["identical"]]
    lines.append("OK: every runtime computes the reference's spikes exactly"
                 if rep.get("runtimes_exact", rep["ok"]) else
                 f"MISMATCH: {', '.join(bad)} differ from the reference")
    th = rep.get("fidelity_thresholds", {})
    if rep.get("fidelity_failures"):
        lines.append(str(fidelity_error(rep["fidelity_failures"])))
    elif th:
        lines.append(f"OK: fold fidelity within --max-accuracy-drop {th['max_accuracy_drop']:g} "
                     f"points and --min-spike-agreement {100 * th['min_spike_agreement']:g}%")
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
            x, _ = load_model_data(graph, dataset, n, data_dir, options)
            if x.ndim == len(graph.input_shape) + 1:
                return x
        except Exception:  # noqa: BLE001 - e.g. CIFAR without --data-dir: random inputs instead
            if strict:
                raise
    q, b = float(graph.input_quantum), float(graph.input_bound)
    steps = max(1, int(min(b, 1.0) / q))
    k = np.random.default_rng(seed).integers(0, steps + 1, size=(n, *graph.input_shape))
    return (k * q).astype(np.float32)


def validate_fold(path, dataset: str | None = None, limit: int | None = 1000,
                  fidelity_ts: str | None = None, max_accuracy_drop: float | None = None,
                  min_spike_agreement: float | None = None, batch_size: int = 64,
                  data_dir=None, data_options=None, progress: bool | None = False) -> dict:
    """The fold-fidelity part of export validation: trained module (checkpoint ``path``) vs
    deployed graph on the first ``limit`` test samples of ``dataset`` (default: the checkpoint's),
    at the trained T and the swept Ts (:func:`fidelity_timesteps`). Returns ``{T: figures}``;
    raises :class:`~lmh_deploy.errors.FoldFidelityError` (:func:`check_fidelity`)."""
    from lmh_deploy.deployment import Deployment
    from lmh_deploy.evaluate import trained_dataset

    ds = dataset or trained_dataset(path)
    if ds is None:  # a model never trained on a data set has no accuracy to keep
        raise DatasetError(f"{path} records no training data set; pass --dataset to check it")
    with Deployment(path) as dep:
        x, y = load_model_data(dep, ds, limit, data_dir, data_options)
        ts = fidelity_timesteps(dep.trained_timesteps, fidelity_ts)
        fid = fold_fidelity(dep, x, y, ts, batch_size, progress)
    bad = check_fidelity(fid, MAX_ACCURACY_DROP if max_accuracy_drop is None else max_accuracy_drop,
                         MIN_SPIKE_AGREEMENT if min_spike_agreement is None else min_spike_agreement)
    if bad:
        raise fidelity_error(bad)
    return fid


def validate_export(graph, path, fmt: str, x, timesteps: int | None = None,
                    runtime: str | None = None, fidelity: dict | None = None) -> dict:
    """Run the file ``path`` (format ``fmt``) just written from ``graph`` on ``x`` in the format's
    exact runtime and compare it with the reference interpreter on ``graph``.

    Returns ``{"runtime", "samples", "timesteps", "spike_agreement" (min over the layers the file
    exposes; None when it exposes none), "layers_compared", "max_abs_logit_diff", "identical"}``.
    Raises :class:`ExportValidationError` when the file differs (spikes not all identical or
    |Δ logit| > 1e-4 of the largest logit), so the caller can discard the file. ``fidelity``
    (keyword arguments of :func:`validate_fold`, with ``path`` the checkpoint): also check the
    fold fidelity (trained module vs deployed graph; :class:`FoldFidelityError`), reported under
    ``"fold_fidelity"`` -- one validation rule for lmh-export and lmh-verify."""
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
    if fidelity is not None:
        try:
            rep["fold_fidelity"] = validate_fold(**fidelity)
        except (DatasetError, MissingDependencyError) as e:
            if fidelity.get("dataset") or fidelity.get("data_dir"):
                raise  # named by the user: a data set that cannot be read is an error
            # the checkpoint's own data set is not on this machine (a deployment host): the file
            # is still checked against the reference; say what was not checked and how to
            rep["fold_fidelity_skipped"] = f"fold fidelity not checked: {e}"
    return rep


def format_validation(rep: dict) -> str:
    s = rep["spike_agreement"]
    spikes = ("spikes not in the file (export --with-spikes to compare them)" if s is None else
              f"spike agreement {100 * s:.4f} % over {rep['layers_compared']} layers")
    return (f"{rep['runtime']} vs reference on {rep['samples']} samples at T={rep['timesteps']}: "
            f"{spikes}, max |Δ logit| {rep['max_abs_logit_diff']:.3g}")
