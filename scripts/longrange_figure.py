#!/usr/bin/env python
"""The LM-H long-range check figure: test accuracy and cross-entropy of the running-mean logits
against T for models trained at a small T and swept with lmh-sweep (``sweep.json`` files).
``python scripts/longrange_figure.py OUT.png LABEL=DIR/sweep.json [LABEL=...] [--runtime torch]``."""
from __future__ import annotations

import argparse
import json


def main():
    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("sweeps", nargs="+", help="LABEL=path/to/sweep.json")
    p.add_argument("--runtime", default="torch")
    a = p.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from lmh_deploy.atomic import atomic_output

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9.0, 3.6), dpi=120)
    trained = set()
    for spec in a.sweeps:
        label, path = spec.split("=", 1)
        res = json.load(open(path))
        rows = sorted((r for r in res["rows"] if r["runtime"] == a.runtime), key=lambda r: r["T"])
        ts = [r["T"] for r in rows]
        ax1.plot(ts, [100 * r["accuracy"] for r in rows], marker="o", markersize=3, label=label)
        ax2.plot(ts, [r["cross_entropy"] for r in rows], marker="o", markersize=3, label=label)
        trained.add(res["meta"]["trained_timesteps"])
        meta = res["meta"]
    for ax in (ax1, ax2):
        for t in trained:
            ax.axvline(t, color="gray", linestyle="--", linewidth=1)
        ax.set_xlabel("time steps T at inference (trained at T=%s)" % ",".join(map(str, sorted(trained))))
        ax.grid(alpha=0.3)
    ax1.set_ylabel("test accuracy (%)")
    ax2.set_ylabel("cross-entropy of running-mean logits")
    ax1.legend(fontsize=8)
    fig.suptitle(f"{meta['dataset']} test split ({meta['samples']} images), runtime {a.runtime}",
                 fontsize=9)
    fig.tight_layout()
    with atomic_output(a.out) as tmp:
        fig.savefig(tmp, format="png")


if __name__ == "__main__":
    main()
