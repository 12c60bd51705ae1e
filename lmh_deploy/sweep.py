"""Accuracy (and spike cost) against the number of time steps T, per runtime (issue 5).

Efficiency: every model here is causal at the granularity it runs at -- an LM-H / LIF step
depends only on earlier steps, radical LM-H holds its last step's parameters beyond the trained T
(DESIGN §1), and LM-HT applies Omega per window of its trained T -- so the first T' steps of one
run at T_max are exactly the run at T' (for LM-HT, T' a multiple of the window). The sweep
therefore runs each runtime once at the largest T and reads every T' from the per-step outputs
(``per_t=True`` re-exports and re-runs at every T instead; the tests check both agree).
Accuracy at T' is that of the mean logits over the first T' steps.
"""
from __future__ import annotations

import csv
import io
import json
import math
import re
import time
from pathlib import Path

import numpy as np

from .errors import TimestepsError



def parse_timesteps(text: str, maximum: int = 4096, option: str = "--timesteps") -> list[int]:
    """``"1-32"``, ``"1,2,4,8"``, ``"1-8,16,32"`` -> sorted distinct step counts.

    Raises :class:`TimestepsError` (naming ``option``) for an empty or malformed list, a
    reversed range or T outside 1..``maximum``."""
    text = str(text).strip()
    if not text:
        raise TimestepsError(f"empty {option}; give a range or a list, e.g. 1-32 or 1,2,4,8")
    out = set()
    for part in text.split(","):
        part = part.strip()
        try:
            if "-" in part:
                a, b = part.split("-")
                lo, hi = int(a), int(b)
            else:
                lo = hi = int(part)
        except ValueError:
            raise TimestepsError(f"malformed {option} {text!r}: {part!r} is not N or A-B "
                                 f"(e.g. 1-32 or 1,2,4,8)") from None
        if lo > hi:
            fix = f"write {hi}-{lo}" if hi >= 1 else "write A-B with 1 <= A <= B"
            raise TimestepsError(f"reversed range {part!r} in {option}; {fix}")
        vals = range(lo, hi + 1)
        for v in vals:
            if v < 1 or v > maximum:
                raise TimestepsError(f"time step count {v} in {option} {text!r} is out of "
                                     f"range 1..{maximum}")
            out.add(v)
    return sorted(out)


def plan(path, runtimes: str | None, timesteps: str):
    """Validate everything before any work: returns ``(deployment, [Runtime], [T])``.
    ``runtimes`` None: torch,reference,onnx for a checkpoint, the file's own runtime otherwise.

    Raises (one line each): unknown runtime, empty/malformed T list, a T the model cannot run,
    a bad checkpoint."""
    from .runtimes import parse_runtimes
    from .deployment import Deployment

    ts = parse_timesteps(timesteps)
    dep = Deployment(path)
    try:
        if runtimes is None:  # default: a checkpoint against its exports; a file in its runtime
            runtimes = "torch,reference,onnx" if dep.is_checkpoint else dep.file_runtime.name
        rts = parse_runtimes(runtimes)
        for rt in rts:
            dep.check_runtime(rt.name)
        for t in sorted(ts, reverse=True):  # the largest first: its fix covers the others
            try:
                dep.check_timesteps(t)
            except TimestepsError as e:
                raise TimestepsError(f"T={t} cannot be swept: {e}") from None
    except BaseException:
        dep.close()
        raise
    return dep, rts, ts


def run_sweep(dep, rts, ts, dataset=None, limit=None, batch_size=256, per_t=False,
              progress=None, data_dir=None, data_options=None) -> dict:
    """Run the sweep on the test split of ``dataset`` (default: the file's training data set, else
    digits; read from ``data_dir`` with the loader's ``data_options``); returns
    ``{"meta": ..., "rows": [...]}`` (one row per runtime and T)."""
    from tqdm.auto import tqdm

    from .evaluate import SpikeTally, accuracy_per_step, cross_entropy_per_step, load_eval_data

    from .evaluate import resolve_dataset

    dataset = resolve_dataset(dep.path, dataset)
    opts = dict(data_options or {})
    if dataset == "dvscifar10":
        opts.setdefault("frames", max(ts))
    x, y = load_eval_data(dataset, limit, data_dir, **opts)
    desc, frames = _cost_desc(dep, x)
    t_max = max(ts)
    jobs = [(rt, t) for rt in rts for t in (ts if per_t else [t_max])]
    rows = []
    # progress: True = always, False = never, None = only on a terminal (tqdm's disable=None)
    bar = tqdm(jobs, desc="lmh-sweep", unit="run", leave=False,
               disable={True: False, False: True, None: None}[progress])
    for rt, t_run in bar:
        bar.set_postfix_str(f"{rt.name} T={t_run}")
        prefixes = [t for t in (ts if not per_t else [t_run]) if t <= t_run]
        t0 = time.perf_counter()
        logits = []
        tallies = {t: SpikeTally(t) for t in prefixes}
        costs = {t: _CostMean() for t in prefixes}
        for run in dep.batches(rt, x, t_run, batch_size):  # memory: one batch's spikes
            logits.append(run.logits)
            for t in prefixes:
                tallies[t].add(run.spikes)
                costs[t].add(_cost(desc, run.spikes, t, frames), run.logits.shape[1])
        wall = time.perf_counter() - t0
        logits = np.concatenate(logits, 1)
        acc = accuracy_per_step(logits, y)
        ce = cross_entropy_per_step(logits, y)
        for t in prefixes:
            st = tallies[t].stats()
            rows.append({"runtime": rt.name, "T": t, "accuracy": acc[t - 1],
                         "cross_entropy": ce[t - 1],
                         "spikes_per_sample": st["spikes_per_sample"],
                         **costs[t].mean(),
                         "firing_rate": st["firing_rate"], "run_T": t_run,
                         "run_wall_time_s": wall})
    bar.close()
    meta = _meta(dep, dataset, len(y), ts, per_t)
    return {"meta": meta, "rows": rows}


def _cost_desc(dep, x):
    """The :func:`lmh_deploy.cost.describe` of the swept model and whether ``x`` is frames."""
    from .cost import describe

    graph, _ = dep.structure()
    return describe(graph), x.ndim == len(graph.input_shape) + 2


def _cost(desc, spikes, t, frames) -> dict:
    """SOPs per sample and the energy estimates (pJ, :mod:`lmh_deploy.cost`) over the first ``t``
    steps; None when the run recorded no spikes."""
    from .cost import cost_report

    if not spikes:
        return {"sops_per_sample": None, "snn_energy_pj": None, "ann_energy_pj": None}
    r = cost_report(desc, spikes, t, frames)
    return {"sops_per_sample": r["totals"]["sops_per_sample"],
            "snn_energy_pj": r["energy"]["snn_pj"], "ann_energy_pj": r["energy"]["ann_pj"]}


class _CostMean:
    """Per-sample cost figures of :func:`_cost` averaged over batches, weighted by batch size
    (each figure is a mean over samples, so this is the whole set's figure)."""

    def __init__(self):
        self.sums, self.n = {}, 0

    def add(self, figures: dict, samples: int) -> None:
        for k, v in figures.items():
            self.sums[k] = None if v is None else (self.sums.get(k) or 0.0) + v * samples
        self.n += int(samples)

    def mean(self) -> dict:
        return {k: None if v is None else v / self.n for k, v in self.sums.items()}


def _meta(dep, dataset, samples, ts, per_t) -> dict:
    meta = {"file": str(dep.path), "dataset": dataset, "samples": samples,
            "trained_timesteps": dep.trained_timesteps, "timesteps": ts,
            "mode": "per-T runs" if per_t else f"one run at T={max(ts)}, prefixes"}
    if dep.is_checkpoint:
        g = dep.graph
        kinds = sorted({g.neuron(n).source_kind for n in g.neuron_names()})
        meta["neuron"] = ",".join(kinds)
        meta["model"] = f"{', '.join(kinds)} {g.meta.get('arch') or ''}".strip()
        notes = []
        if "lmh-radical" in kinds and max(ts) > g.timesteps:
            notes.append(f"radical LM-H beyond T={g.timesteps}: the last step's parameters are held")
        if g.omega_period:
            notes.append(f"LM-HT: Omega applied per window of {g.omega_period} steps")
        meta["notes"] = notes
    return meta


def rows_to_csv(rows: list) -> str:
    layers = sorted({k for r in rows for k in r["firing_rate"]},
                    key=lambda k: [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", k)])
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    cost = ["sops_per_sample", "snn_energy_pj"]
    w.writerow(["runtime", "T", "accuracy", "cross_entropy", "spikes_per_sample"] + cost +
               [f"rate_{k}" for k in layers])
    for r in rows:
        opt = ["" if r.get(k) is None else repr(r[k]) for k in ["spikes_per_sample"] + cost]
        w.writerow([r["runtime"], r["T"], repr(r["accuracy"]), repr(r.get("cross_entropy", ""))] + opt +
                   [repr(r["firing_rate"][k]) if k in r["firing_rate"] else "" for k in layers])
    return buf.getvalue()


FIGURE_FORMATS = ("png", "pdf", "svg")
NO_FIGURE = "no figure: matplotlib is not installed (pip install 'lmh-deploy[plot]')"


def wilson_interval(k: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """95 % Wilson score interval of a proportion k/n (Wilson 1927):
    ``(p + z^2/2n -/+ z sqrt(p(1-p)/n + z^2/4n^2)) / (1 + z^2/n)``, p = k/n. ``(0, 1)`` for n = 0."""
    if n <= 0:
        return 0.0, 1.0
    p = k / n
    den = 1 + z * z / n
    mid = (p + z * z / (2 * n)) / den
    half = z * (p * (1 - p) / n + z * z / (4 * n * n)) ** 0.5 / den
    return max(0.0, mid - half), min(1.0, mid + half)


def _curves(rows, key):
    """Runtime groups whose ``key`` curves agree exactly: ``[([names], [(T, value)])]``."""
    groups = []
    for name in dict.fromkeys(r["runtime"] for r in rows):
        pts = sorted((r["T"], r[key]) for r in rows if r["runtime"] == name and r.get(key) is not None)
        if not pts:
            continue
        for names, other in groups:
            if other == pts:
                names.append(name)
                break
        else:
            groups.append(([name], pts))
    return groups


def _label(names):
    if len(names) == 1:
        return names[0] + (" (trained module, before the fold)" if names[0] == "torch" else "")
    return f"identical in {len(names)} runtimes ({', '.join(names)})"


def _series(ax, groups, styles, markers, **kw):
    for i, (names, pts) in enumerate(groups):
        ax.plot([p[0] for p in pts], [p[1] for p in pts], linestyle=styles[i % 4],
                marker=markers[i % 4], markersize=3.5, linewidth=1.4, label=_label(names), **kw)


def plot(result: dict, path, fmt: str = "png") -> None:
    """Up to three panels against T at inference, runtimes whose curves agree exactly drawn once
    and labelled "identical in N runtimes", trained T marked:
    (1) test accuracy with its 95 % Wilson interval; (2) spikes per sample (all layers);
    (3) cost: SOPs per sample (left axis) and the energy estimate in nJ per sample (right axis,
    :mod:`lmh_deploy.cost`, 45 nm figures, an estimate) with the same network as a ReLU ANN as a
    dotted reference line. Panels (2)/(3) are left out when the rows carry no spikes / no SOPs.
    Title: model, data set, trained T. ``fmt``: png, pdf, svg. Raises ImportError without
    matplotlib."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .atomic import atomic_output

    meta, rows = result["meta"], result["rows"]
    n = int(meta["samples"])
    spikes = _curves(rows, "spikes_per_sample")
    sops = _curves(rows, "sops_per_sample")
    panels = 1 + bool(spikes) + bool(sops)
    fig, axes = plt.subplots(1, panels, figsize=(6.4 + 5.0 * (panels - 1), 4.4), dpi=120,
                             squeeze=False)
    ax = axes[0, 0]
    styles, markers = ["-", "--", ":", "-."], ["o", "s", "^", "D"]
    for i, (names, pts) in enumerate(_curves(rows, "accuracy")):
        ts = [p[0] for p in pts]
        acc = [100 * p[1] for p in pts]
        lo_hi = [wilson_interval(round(p[1] * n), n) for p in pts]
        line, = ax.plot(ts, acc, linestyle=styles[i % 4], marker=markers[i % 4], markersize=3.5,
                        linewidth=1.4, label=_label(names))
        ax.fill_between(ts, [100 * a for a, _ in lo_hi], [100 * b for _, b in lo_hi],
                        color=line.get_color(), alpha=0.15, linewidth=0)
    ax.fill_between([], [], [], color="gray", alpha=0.15, label="95 % Wilson interval")
    t_tr = meta["trained_timesteps"]
    ax.axvline(t_tr, color="gray", linestyle="--", linewidth=1, label=f"trained T = {t_tr}")
    lo = min(100 * wilson_interval(round(r["accuracy"] * n), n)[0] for r in rows) if rows else 0
    ax.set_ylim(max(0, 10 * math.floor((lo - 0.5) / 10)), 100.5)  # whole 10-point bands: no zoom
    ax.set_xlabel("time steps T at inference")
    ax.set_ylabel(f"test accuracy (%, {n} samples)")
    ax.set_title("accuracy", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7.5, loc="lower right")
    col = 1
    def count_panel(ax, curves, ylabel, title):
        """A panel of per-sample counts against T (from 0, trained T marked)."""
        _series(ax, curves, styles, markers)
        ax.axvline(t_tr, color="gray", linestyle="--", linewidth=1)
        ax.set_xlabel("time steps T at inference")
        ax.set_ylabel(ylabel)
        ax.set_title(title, fontsize=9)
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        return ax

    if spikes:
        count_panel(axes[0, col], spikes, "spikes per sample (all layers)",
                    "activity").legend(fontsize=7.5, loc="upper left")
        col += 1
    if sops:
        ax3 = count_panel(axes[0, col], sops, "SOPs per sample (spike count x fan-out)",
                          "cost (energy: 45 nm estimate, 0.9 pJ/AC, 4.6 pJ/MAC)")
        energy = _curves(rows, "snn_energy_pj")
        ax4 = ax3.twinx()
        for i, (names, pts) in enumerate(energy):  # one legend entry: the curves follow the SOPs
            ax4.plot([p[0] for p in pts], [p[1] / 1000 for p in pts], linestyle="none",
                     marker="x", markersize=4, color="C3",
                     label="SNN energy estimate (right axis)" if i == 0 else "_")
        ann = [r["ann_energy_pj"] for r in rows if r.get("ann_energy_pj") is not None]
        if ann:
            ax4.axhline(ann[0] / 1000, color="black", linestyle=":", linewidth=1.2,
                        label=f"same network as ReLU ANN: {ann[0] / 1000:.3g} nJ (right axis)")
        ax4.set_ylabel("energy estimate per sample (nJ)")
        ax4.set_ylim(bottom=0, top=max(ax4.get_ylim()[1], 1.08 * ann[0] / 1000 if ann else 0))
        h3, l3 = ax3.get_legend_handles_labels()
        h4, l4 = ax4.get_legend_handles_labels()
        ax3.legend(h3 + h4, l3 + l4, fontsize=7.5, loc="upper left")
    model = meta.get("model") or meta.get("neuron") or Path(meta["file"]).stem
    fig.suptitle(f"{model} on {meta['dataset']}, trained at T = {t_tr}", fontsize=10)
    fig.tight_layout()
    with atomic_output(path) as tmp:
        fig.savefig(tmp, format=fmt)
    plt.close(fig)


def write_outputs(result: dict, out_dir, figure_format: str = "png") -> dict:
    """``sweep.csv``, ``sweep.json`` and ``sweep.<figure_format>`` in ``out_dir``, all or nothing
    (:func:`lmh_deploy.atomic.atomic_dir`: a failure, a full disk or a kill leaves none of them).
    Without matplotlib the figure is skipped: ``paths["figure"]`` is None."""
    from .atomic import atomic_dir
    from .errors import LmhError

    if figure_format not in FIGURE_FORMATS:
        raise LmhError(f"unknown figure format {figure_format!r}; choose {', '.join(FIGURE_FORMATS)}")
    out = Path(out_dir)
    try:
        import matplotlib  # noqa: F401
        have_plot = True
    except ImportError:
        have_plot = False
    names = {"csv": "sweep.csv", "json": "sweep.json", "figure": f"sweep.{figure_format}"}
    with atomic_dir(out) as tmp:
        (tmp / names["csv"]).write_text(rows_to_csv(result["rows"]), encoding="utf-8")
        (tmp / names["json"]).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        if have_plot:
            plot(result, tmp / names["figure"], figure_format)
    paths = {k: out / v for k, v in names.items()}
    if not have_plot:
        paths["figure"] = None
    return paths
