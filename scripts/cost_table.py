"""Regenerate the README's cost table: accuracy, SOPs and the energy estimate against T for the
digits LM-H, LIF and LM-HT (L=2) MLPs (issue 19).

    .venv/bin/python scripts/cost_table.py --runs /tmp/cost_runs --train
    .venv/bin/python scripts/cost_table.py --runs /tmp/cost_runs --timesteps 1,2,4,8,16

``--train`` first trains the three models with ``training/fit.py`` (default settings: 30 epochs,
T=4, seed 0; a few seconds each on a CPU) into ``RUNS/{lmh,lif,lmht}``. Each model is then run
once in the reference interpreter at the largest T on the digits test split
(:func:`lmh_deploy.cli.inspect.inspect_file`); LM-HT runs at multiples of its trained T only.
Prints a Markdown table and writes ``RUNS/cost_table.md`` and ``RUNS/cost_table.json``.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

#: (label, run directory, extra training/fit.py options)
MODELS = [("LM-H", "lmh", ["--neuron", "lmh"]),
          ("LIF", "lif", ["--neuron", "lif"]),
          ("LM-HT (L=2)", "lmht", ["--neuron", "lmht", "--levels", "2"])]


def train(runs: Path) -> None:
    fit = Path(__file__).resolve().parents[1] / "training" / "fit.py"
    for _, name, extra in MODELS:
        subprocess.run([sys.executable, str(fit), "--out", str(runs / name), "--threads", "1",
                        "--progress", "false", *extra], check=True)


def table(runs: Path, timesteps: list) -> tuple[str, list]:
    from lmh_deploy.cli.inspect import inspect_file
    from lmh_deploy.deployment import Deployment

    rows = []
    for label, name, _ in MODELS:
        path = runs / name / "model.pt"
        with Deployment(path) as dep:
            period = dep.graph.omega_period or 1
        ts = [t for t in timesteps if t % period == 0]
        rep = inspect_file(path, "digits", None, ",".join(map(str, ts)))
        for r in rep["per_T"]:
            t, e = r["totals"], r["energy"]
            rows.append({"model": label, "T": r["T"], "trained_T": rep["trained_timesteps"],
                         "accuracy": r["accuracy"], "spikes_per_sample": t["spikes_per_sample"],
                         "sops_per_sample": t["sops_per_sample"],
                         "analog_macs_per_sample": t["analog_macs_per_sample"],
                         "snn_nj": e["snn_pj"] / 1e3, "snn_once_nj": e["snn_once_pj"] / 1e3,
                         "ann_nj": e["ann_pj"] / 1e3, "samples": rep["samples"]})
    head = ("| model | T | accuracy | spikes / sample | SOPs / sample | first-layer MACs / sample "
            "| E_SNN (nJ) | E_SNN, first layer once (nJ) | E_ANN (nJ) |\n"
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|\n")
    lines = [f"| {r['model']}{' (trained T)' if r['T'] == r['trained_T'] else ''} | {r['T']} | "
             f"{100 * r['accuracy']:.2f} % | {r['spikes_per_sample']:,.0f} | "
             f"{r['sops_per_sample']:,.0f} | {r['analog_macs_per_sample']:,} | "
             f"{r['snn_nj']:.1f} | {r['snn_once_nj']:.1f} | {r['ann_nj']:.1f} |" for r in rows]
    return head + "\n".join(lines) + "\n", rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", default="/tmp/cost_runs", type=Path)
    p.add_argument("--train", action="store_true", help="train the three models first")
    p.add_argument("--timesteps", default="1,2,4,8,16")
    args = p.parse_args(argv)
    if args.train:
        train(args.runs)
    md, rows = table(args.runs, [int(t) for t in args.timesteps.split(",")])
    from lmh_deploy.atomic import atomic_write_text

    atomic_write_text(args.runs / "cost_table.md", md)
    atomic_write_text(args.runs / "cost_table.json", json.dumps(rows, indent=2) + "\n")
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
