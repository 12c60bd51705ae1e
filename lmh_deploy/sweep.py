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
import time
from pathlib import Path

from .errors import TimestepsError



def parse_timesteps(text: str, maximum: int = 4096) -> list[int]:
    """``"1-32"``, ``"1,2,4,8"``, ``"1-8,16,32"`` -> sorted distinct step counts.

    Raises :class:`TimestepsError` for an empty or malformed list, a reversed range or T < 1."""
    text = str(text).strip()
    if not text:
        raise TimestepsError("empty --timesteps; give a range or a list, e.g. 1-32 or 1,2,4,8")
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
            raise TimestepsError(f"malformed --timesteps {text!r}: {part!r} is not N or A-B "
                                 f"(e.g. 1-32 or 1,2,4,8)") from None
        if lo > hi:
            raise TimestepsError(f"reversed range {part!r} in --timesteps; write {hi}-{lo}")
        vals = range(lo, hi + 1)
        for v in vals:
            if v < 1 or v > maximum:
                raise TimestepsError(f"time step count {v} in --timesteps {text!r} is out of "
                                     f"range 1..{maximum}")
            out.add(v)
    return sorted(out)


def plan(path, runtimes: str, timesteps: str):
    """Validate everything before any work: returns ``(deployment, [Runtime], [T])``.

    Raises (one line each): unknown runtime, empty/malformed T list, a T the model cannot run,
    a bad checkpoint."""
    from .runtimes import parse_runtimes
    from .deployment import Deployment

    rts = parse_runtimes(runtimes)
    ts = parse_timesteps(timesteps)
    dep = Deployment(path)
    try:
        for rt in rts:
            dep.check_runtime(rt.name)
        for t in ts:
            try:
                dep.check_timesteps(t)
            except TimestepsError as e:
                raise TimestepsError(f"T={t} cannot be swept: {e}") from None
    except BaseException:
        dep.close()
        raise
    return dep, rts, ts


def run_sweep(dep, rts, ts, dataset="digits", limit=None, batch_size=256, per_t=False,
              progress=None) -> dict:
    """Run the sweep; returns ``{"meta": ..., "rows": [...]}`` (one row per runtime and T)."""
    from tqdm.auto import tqdm

    from .evaluate import accuracy_per_step, cross_entropy_per_step, load_eval_data, spike_stats

    x, y = load_eval_data(dataset, limit)
    t_max = max(ts)
    jobs = [(rt, t) for rt in rts for t in (ts if per_t else [t_max])]
    rows = []
    # progress: True = always, False = never, None = only on a terminal (tqdm's disable=None)
    bar = tqdm(jobs, desc="lmh-sweep", unit="run", leave=False,
               disable={True: False, False: True, None: None}[progress])
    for rt, t_run in bar:
        bar.set_postfix_str(f"{rt.name} T={t_run}")
        t0 = time.perf_counter()
        run = dep.run(rt, x, t_run, batch_size)
        wall = time.perf_counter() - t0
        acc = accuracy_per_step(run.logits, y)
        ce = cross_entropy_per_step(run.logits, y)
        for t in (ts if not per_t else [t_run]):
            if t > t_run:
                continue
            st = spike_stats(run.spikes, t)
            rows.append({"runtime": rt.name, "T": t, "accuracy": acc[t - 1],
                         "cross_entropy": ce[t - 1],
                         "spikes_per_sample": st["spikes_per_sample"],
                         "firing_rate": st["firing_rate"], "run_T": t_run,
                         "run_wall_time_s": wall})
    bar.close()
    meta = _meta(dep, dataset, len(y), ts, per_t)
    return {"meta": meta, "rows": rows}


def _meta(dep, dataset, samples, ts, per_t) -> dict:
    meta = {"file": str(dep.path), "dataset": dataset, "samples": samples,
            "trained_timesteps": dep.trained_timesteps, "timesteps": ts,
            "mode": "per-T runs" if per_t else f"one run at T={max(ts)}, prefixes"}
    if dep.is_checkpoint:
        g = dep.graph
        kinds = sorted({g.neuron(n).source_kind for n in g.neuron_names()})
        meta["neuron"] = ",".join(kinds)
        notes = []
        if "lmh-radical" in kinds and max(ts) > g.timesteps:
            notes.append(f"radical LM-H beyond T={g.timesteps}: the last step's parameters are held")
        if g.omega_period:
            notes.append(f"LM-HT: Omega applied per window of {g.omega_period} steps")
        meta["notes"] = notes
    return meta


def rows_to_csv(rows: list) -> str:
    layers = sorted({k for r in rows for k in r["firing_rate"]})
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["runtime", "T", "accuracy", "cross_entropy", "spikes_per_sample"] +
               [f"rate_{k}" for k in layers])
    for r in rows:
        sps = "" if r["spikes_per_sample"] is None else repr(r["spikes_per_sample"])
        w.writerow([r["runtime"], r["T"], repr(r["accuracy"]), repr(r.get("cross_entropy", "")), sps] +
                   [repr(r["firing_rate"][k]) if k in r["firing_rate"] else "" for k in layers])
    return buf.getvalue()


def plot(result: dict, path) -> None:
    """Accuracy against T, one line per runtime; trained T marked, peak annotated (Fig. 5 style)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .atomic import atomic_output

    meta, rows = result["meta"], result["rows"]
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=120)
    styles = ["-", "--", ":", "-.", (0, (5, 1)), (0, (3, 1, 1, 1))]
    markers = ["o", "s", "^", "v", "D", "x"]
    names = list(dict.fromkeys(r["runtime"] for r in rows))
    for i, name in enumerate(names):
        pts = sorted((r["T"], r["accuracy"]) for r in rows if r["runtime"] == name)
        ax.plot([p[0] for p in pts], [100 * p[1] for p in pts], linestyle=styles[i % len(styles)],
                marker=markers[i % len(markers)], markersize=3.5, linewidth=1.4,
                label=name + (" (trained module, before the fold)" if name == "torch" else ""),
                alpha=0.9)
    t_tr = meta["trained_timesteps"]
    ax.axvline(t_tr, color="gray", linestyle="--", linewidth=1)
    ax.text(t_tr, ax.get_ylim()[0], f" trained T={t_tr}", color="gray", va="bottom", fontsize=8)
    if rows:
        best = max(rows, key=lambda r: (r["accuracy"], -r["T"]))
        ax.annotate(f"peak {100 * best['accuracy']:.2f}% at T={best['T']}",
                    xy=(best["T"], 100 * best["accuracy"]), xytext=(0, 14),
                    textcoords="offset points", ha="center", fontsize=8,
                    arrowprops={"arrowstyle": "->", "linewidth": 0.8})
    ax.set_xlabel("time steps T at inference")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"{Path(meta['file']).name}: {meta.get('neuron', '')} on {meta['dataset']} "
                 f"({meta['samples']} samples)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_output(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def write_outputs(result: dict, out_dir) -> dict:
    """``sweep.csv``, ``sweep.json``, ``sweep.png`` in ``out_dir`` (each written atomically)."""
    from .atomic import atomic_write_text

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"csv": out / "sweep.csv", "json": out / "sweep.json", "png": out / "sweep.png"}
    atomic_write_text(paths["csv"], rows_to_csv(result["rows"]))
    atomic_write_text(paths["json"], json.dumps(result, indent=2) + "\n")
    plot(result, paths["png"])
    return paths
