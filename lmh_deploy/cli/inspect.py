"""``lmh-inspect FILE [--dataset D] [--limit N] [--timesteps T|RANGE] [--runtime R]
[--json PATH] [--csv PATH]``: what a model costs (issue 19).

Runs a checkpoint (``.pt``) or an exported file (``.onnx`` exported ``--with-spikes``, ``.nir``)
on the test split -- in the reference interpreter by default, or the named runtime -- records every
layer's spike counts, and prints per layer: neurons, synapses, fan-in / fan-out, firing rate, SOPs
per sample, the analog layer's MACs; totals per sample for each T; the 45 nm energy estimate beside
the same network as a ReLU ANN; and a Loihi 2 resource estimate with the fixed-point fit. Every
counting rule is in :mod:`lmh_deploy.cost`.
"""
from __future__ import annotations

import csv
import io
import json
import sys

from lmh_deploy.cli.common import positive_int, run_cli
from lmh_deploy.cli.options import add_data_args, add_progress, data_options, make_parser

CSV_FIELDS = ["T", "layer", "kind", "source", "target", "pool", "neurons", "synapses", "weights",
              "fan_in_mean", "fan_out_mean", "fan_out_max", "firing_rate", "sops", "events",
              "macs", "ann_macs", "accuracy", "snn_pj", "ann_pj"]


def build_parser() -> OneLineParser:
    from lmh_deploy.runtimes import RUNTIMES

    p = make_parser("lmh-inspect", "Synaptic operations, an energy estimate and a Loihi 2 "
                    "resource estimate of a model, per layer and per T.")
    p.add_argument("file", help="checkpoint (model.pt) or exported file (.onnx with spikes, .nir)")
    p.add_argument("--limit", type=positive_int, metavar="N", help="first N test samples only")
    p.add_argument("--timesteps", "-T", metavar="T|RANGE",
                   help="T, or ranges and lists such as 1-8 or 1,2,4,8 (default: the trained / "
                        "exported T); one run at the largest, smaller T read from its prefix")
    p.add_argument("--runtime", metavar="R",
                   help=f"one of {', '.join(RUNTIMES)} (default: reference for a checkpoint, the "
                        "file's runtime for an exported file)")
    p.add_argument("--batch-size", type=positive_int, default=256, metavar="B")
    p.add_argument("--json", metavar="PATH", help="write the full report as JSON (atomically)")
    p.add_argument("--csv", metavar="PATH",
                   help="write one row per (T, layer) plus a TOTAL row per T (atomically)")
    add_progress(p)
    add_data_args(p)
    return p


def inspect_file(path, dataset=None, limit=None, timesteps=None, runtime=None,
                 batch_size=256, data_dir=None, data_options=None,
                 progress: bool | None = False) -> dict:
    """Run ``path`` and return the report ``lmh-inspect --json`` writes: ``per_T`` (accuracy,
    totals, energy and layer rows for each T), ``populations`` and ``loihi`` at the largest T.
    ``progress``: a tqdm bar over the samples (True always, False never, None on a terminal).

    Raises :class:`~lmh_deploy.errors.LmhError` subclasses (one line) for a bad file, runtime or
    T, and when the run records no spikes (an ONNX file exported without ``--with-spikes``)."""
    from lmh_deploy import cost
    from lmh_deploy.deployment import Deployment
    from lmh_deploy.lava.resources import loihi_estimate
    from lmh_deploy.errors import LmhError
    from lmh_deploy.evaluate import accuracy_per_step, load_eval_data
    from lmh_deploy.sweep import parse_timesteps

    with Deployment(path) as dep:
        name = runtime or ("reference" if dep.is_checkpoint else dep.file_runtime.name)
        rt = dep.check_runtime(name)
        ts = parse_timesteps(timesteps) if timesteps else [dep.trained_timesteps]
        for t in ts:
            dep.check_timesteps(t)
        graph, exact_weights = dep.structure()
        desc = cost.describe(graph)
        from lmh_deploy.cli.options import resolve_dataset

        dataset = resolve_dataset(path, dataset)
        opts = dict(data_options or {})
        if dataset == "dvscifar10":
            opts.setdefault("frames", max(ts))
        x, y = load_eval_data(dataset, limit, data_dir, **opts)
        frames = x.ndim == len(graph.input_shape) + 2
        run = dep.run(rt, x, max(ts), batch_size, progress=progress)
        trained = dep.trained_timesteps
    if desc.populations and not run.spikes:
        raise LmhError(f"{path}: the {rt.name} run recorded no spikes; re-export with "
                       f"lmh-export --with-spikes, or inspect the checkpoint")
    acc = accuracy_per_step(run.logits, y)
    per_t = []
    for t in ts:
        rep = cost.cost_report(desc, run.spikes, t, frames)
        per_t.append({"T": t, "accuracy": acc[t - 1], "totals": rep["totals"],
                      "energy": rep["energy"], "layers": rep["layers"]})
        last = rep
    loihi = loihi_estimate(desc)
    if not exact_weights:
        loihi["fixed_point"], loihi["fixed_point_ok"] = [], None
        loihi["fixed_point_note"] = ("the file does not carry the neuron thresholds: inspect the "
                                     "checkpoint or the NIR file for the fixed-point fit")
    return {"file": str(path), "runtime": rt.name, "dataset": dataset, "samples": int(len(y)),
            "trained_timesteps": trained, "timesteps": ts, "per_T": per_t,
            "populations": last["populations"], "loihi": loihi,
            "conventions": last["conventions"]}


def to_csv(report: dict) -> str:
    """One row per (T, layer) and a ``TOTAL`` row per T (columns :data:`CSV_FIELDS`)."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, CSV_FIELDS, lineterminator="\n", extrasaction="ignore")
    w.writeheader()
    for r in report["per_T"]:
        for row in r["layers"]:
            w.writerow({**row, "T": r["T"], "layer": row["name"]})
        t = r["totals"]
        w.writerow({"T": r["T"], "layer": "TOTAL", "neurons": t["neurons"],
                    "synapses": t["synapses"], "weights": t["weights"],
                    "sops": t["sops_per_sample"], "events": t["events_per_sample"],
                    "macs": t["analog_macs_per_sample"], "ann_macs": t["ann_macs_per_sample"],
                    "accuracy": r["accuracy"], "snn_pj": r["energy"]["snn_pj"],
                    "ann_pj": r["energy"]["ann_pj"]})
    return buf.getvalue()


def _num(v, fmt="{:,.0f}"):
    return "-" if v is None else fmt.format(v)


def format_report(rep: dict) -> str:
    """The printed tables."""
    last = rep["per_T"][-1]
    out = [f"{rep['file']}  runtime {rep['runtime']}  {rep['dataset']} ({rep['samples']} test "
           f"samples)  trained T={rep['trained_timesteps']}",
           f"per layer at T={last['T']} (per sample):",
           f"  {'layer':<14}{'kind':<9}{'source':<12}{'target':<10}{'neurons':>9}{'synapses':>11}"
           f"{'weights':>9}{'fan-in':>8}{'fan-out':>13}{'rate':>7}{'SOPs':>12}{'MACs':>10}"]
    for r in last["layers"]:
        src = "input" if r["source"].startswith("input") else r["source"]
        pool = f"/{r['pool']}" if r["pool"] > 1 else ""
        out.append(f"  {r['name']:<14}{r['kind']:<9}{src + pool:<12}{r['target']:<10}"
                   f"{r['neurons']:>9,}{r['synapses']:>11,}{r['weights']:>9,}"
                   f"{r['fan_in_mean']:>8.1f}{r['fan_out_mean']:>8.1f}/{r['fan_out_max']:<4}"
                   f"{_num(r['firing_rate'], '{:.3f}'):>7}{r['sops']:>12,.0f}{r['macs']:>10,}")
    t = last["totals"]
    out.append(f"  {'total':<45}{t['neurons']:>9,}{t['synapses']:>11,}{t['weights']:>9,}"
               f"{'':>28}{t['sops_per_sample']:>12,.0f}{t['analog_macs_per_sample']:>10,}")
    out.append(f"  ({t['readout_units']} readout units not counted as neurons; a layer read "
               f"through a k x k sum pool shows source/k)")
    out.append("per T (per sample; energy is an estimate):")
    out.append(f"  {'T':>4}{'accuracy':>10}{'spikes':>10}{'SOPs':>12}{'SOPs/step':>11}"
               f"{'MACs':>10}{'E_SNN nJ':>10}{'(MACs once)':>12}{'E_ANN nJ':>10}{'ANN/SNN':>9}")
    for r in rep["per_T"]:
        t, e = r["totals"], r["energy"]
        out.append(f"  {r['T']:>4}{r['accuracy']:>10.4f}{t['spikes_per_sample']:>10,.0f}"
                   f"{t['sops_per_sample']:>12,.0f}{t['sops_per_step']:>11,.0f}"
                   f"{t['analog_macs_per_sample']:>10,}{e['snn_pj'] / 1e3:>10.2f}"
                   f"{e['snn_once_pj'] / 1e3:>12.2f}{e['ann_pj'] / 1e3:>10.2f}"
                   f"{e['ann_over_snn']:>9.2f}")
    e = last["energy"]
    out.append(f"  energy estimate: {e['e_ac_pj']} pJ per SOP, {e['e_mac_pj']} pJ per MAC (45 nm, "
               f"Horowitz ISSCC 2014); first-layer MACs at every step ('MACs once': computed once "
               f"and held); neuron updates and data movement not counted")
    lo = rep["loihi"]
    lim = lo["limits"]
    out.append(f"Loihi 2 estimate: {lo['cores']} cores, {lo['chips']} chip(s) "
               f"(limits: {lim['neurons_per_core']:,} neurons and {lim['synapses_per_core']:,} "
               f"synapses per core, {lim['cores_per_chip']} cores per chip)")
    for r in lo["layers"]:
        out.append(f"  {r['name']:<14}{r['neurons']:>9,} neurons{r['synapses_in']:>12,} synapses"
                   f"{r['cores']:>4} core(s)")
    if lo.get("fixed_point_note"):
        out.append(f"  fixed point: {lo['fixed_point_note']}")
    for f in lo["fixed_point"]:
        th = "" if f["theta_units"] is None else f", theta {f['theta_units']:,.0f} units"
        verdict = "fits" if f["fits"] else "DOES NOT FIT (threshold beyond the 24-bit state)"
        out.append(f"  fixed point {f['name']:<10} {verdict}: 8-bit weights x 2^{f['weight_exponent']}"
                   f" ({100 * f['weights_zeroed']:.1f}% zeroed, max error "
                   f"{100 * f['weight_max_rel_err']:.2f}% of max|W|){th}, worst-case current "
                   f"{'within' if f['bound_fits'] else 'beyond'} 24 bits")
    return "\n".join(out)


def main(argv=None) -> int:
    return run_cli(build_parser(), argv, _main)


def _main(args) -> int:
    from lmh_deploy.atomic import atomic_write_text
    from lmh_deploy.guards import check_outputs

    check_outputs([("--json", args.json), ("--csv", args.csv)], [("file", args.file)])

    rep = inspect_file(args.file, args.dataset, args.limit, args.timesteps, args.runtime,
                       args.batch_size, args.data_dir, data_options(args), args.progress)
    if args.json:
        atomic_write_text(args.json, json.dumps(rep, indent=2) + "\n")
    if args.csv:
        atomic_write_text(args.csv, to_csv(rep))
    print(format_report(rep))
    return 0


if __name__ == "__main__":
    sys.exit(main())
