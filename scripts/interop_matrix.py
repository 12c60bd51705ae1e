"""The NIR interoperability matrix of the README (issue 15), measured.

Export: a LIF and an LM-H digits model are trained briefly (or given with --checkpoint KIND=PATH),
exported with ``lmh-export --format nir --target TOOL`` and run through each installed tool's own
NIR importer and simulator; per tool x model kind: runs, spike agreement with the reference
(all layers, all steps), accuracy of the tool and of the reference.

Import: every fixture of tests/fixtures/nir (written by the tools themselves) run by the foreign-
NIR runtime under the producer's preset; fraction of the producer's spikes reproduced.

``python scripts/interop_matrix.py [--limit N] [--write-readme]`` prints both tables (markdown)
and, with ``--write-readme``, replaces the block between the ``interop-matrix`` markers of
README.md.
"""
from __future__ import annotations

import argparse
import importlib
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
TOOLS = ("snntorch", "spikingjelly", "norse", "sinabs")
KINDS = {"LIF": "lif", "LM-H": "lmh"}
START, END = "<!-- interop-matrix:start -->", "<!-- interop-matrix:end -->"
IMPORT_CASES = [  # fixture, producer preset (as tests/test_nir_foreign.py)
    ("snntorch_lif_mlp", "snntorch"), ("snntorch_conv", "snntorch"),
    ("snntorch_cubalif", "snntorch"), ("snntorch_rec_lif", "snntorch"),
    ("norse_lif_mlp", "norse"), ("norse_conv", "norse"), ("norse_cubalif", "norse"),
    ("spikingjelly_lif_mlp", "spikingjelly"), ("spikingjelly_conv", "spikingjelly"),
    ("spikingjelly_cubalif", "spikingjelly"), ("sinabs_conv", "sinabs"),
    ("rockpool_lif_mlp", "rockpool"), ("rockpool_cubalif", "rockpool"),
    ("paper_lif_norse", "nir"), ("paper_braille_noDelay_bias_zero", "snntorch-delay"),
    ("paper_braille_noDelay_noBias_subtract", "snntorch-delay"), ("paper_cnn_sinabs", "sinabs"),
]


def installed(tool: str) -> bool:
    try:
        importlib.import_module(tool)
        return True
    except Exception:  # noqa: BLE001 - any import failure means "not usable here"
        return False


def train_digits(kind: str, out: Path, epochs: int) -> Path:
    from lmh_deploy.training.loop import train

    train({"arch": "mlp", "neuron": kind, "timesteps": 4, "epochs": epochs, "out": str(out),
           "progress": False}, log=lambda *a, **k: None)
    return out / "model.pt"


def export_row(ckpt: Path, tool: str, limit: int | None) -> dict:
    """One cell group of the export matrix: runs, spike agreement, accuracies."""
    from lmh_deploy.deployment import Deployment
    from lmh_deploy.errors import LmhError
    from lmh_deploy.evaluate import accuracy_per_step, load_eval_data

    x, y = load_eval_data("digits", limit)
    with Deployment(ckpt) as dep:
        ref = dep.run("reference", x)
        row = {"tool": tool, "ref_accuracy": accuracy_per_step(ref.logits, y)[-1]}
        try:
            run = dep.run(tool, x)
        except LmhError as e:
            return {**row, "runs": False, "why": str(e)}
    n = sum(s.size for s in ref.spikes.values())
    same = sum(float(np.sum(run.spikes[k] == s)) for k, s in ref.spikes.items())
    return {**row, "runs": True, "agreement": same / n,
            "accuracy": accuracy_per_step(run.logits, y)[-1]}


def import_rows(lava: bool = False) -> list:
    from lmh_deploy.nir import foreign

    fix = ROOT / "tests" / "fixtures" / "nir"
    rows = []
    for name, producer in IMPORT_CASES:
        d = np.load(fix / f"{name}.npz")
        ref = {k[7:]: d[k] for k in d.files if k.startswith("spikes/")}
        dt = 1e-4 if name == "paper_lif_norse" else None
        prog = foreign.load_foreign(fix / f"{name}.nir", producer=producer, dt=dt)
        _, sp = foreign.run_foreign(prog, d["input"])
        n = sum(v.size for v in ref.values())
        same = sum(float(np.sum(sp[k] == v)) for k, v in ref.items())
        src = str(d["producer"]) if "producer" in d.files else "?"
        rows.append({"fixture": name, "producer": producer, "reference": src,
                     "layers": len(ref), "agreement": same / n, "dt": prog.rules.dt,
                     "lava": _lava_cell(prog, d["input"], ref) if lava else "not run"})
    return rows


def _lava_cell(prog, x, ref) -> str:
    """Lava on the first sample: the agreement and how many neuron layers ran on Lava's own
    ``lava.proc.lif`` (the rest on our ForeignStageProcess), or why it is refused."""
    import warnings

    from lmh_deploy.lava.foreign import run_lava_foreign, stages
    from lmh_deploy.nir.foreign import ForeignNirError

    try:
        sts = stages(prog)
    except ForeignNirError as e:
        return "refused: " + str(e).split(";")[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, sp = run_lava_foreign(prog, x[:, :1])
    n = sum(v[:, :1].size for v in ref.values())
    same = sum(float(np.sum(sp[k] == v[:, :1])) for k, v in ref.items())
    lif = sum(st.route == "lif" for st in sts)
    return f"{100 * same / n:.1f} % ({lif}/{len(ref)} layers on lava.proc.lif)"


def markdown(export: dict, imports: list, limit) -> str:
    lines = [f"Export (`lmh-export --format nir --target TOOL`, run by the tool's own importer; "
             f"digits MLP, T = 4, {limit or 'all'} test samples; agreement = identical spikes vs "
             f"our reference over all layers and steps):", "",
             "| tool | model | runs | spike agreement | accuracy (tool) | accuracy (reference) |",
             "|---|---|---|---|---|---|"]
    for kind, rows in export.items():
        for r in rows:
            if r.get("missing"):
                lines.append(f"| {r['tool']} | {kind} | not installed | | | |")
            elif r["runs"]:
                lines.append(f"| {r['tool']} | {kind} | yes | {100 * r['agreement']:.1f} % | "
                             f"{r['accuracy']:.4f} | {r['ref_accuracy']:.4f} |")
            else:
                lines.append(f"| {r['tool']} | {kind} | refused: {r['why']} | | | "
                             f"{r['ref_accuracy']:.4f} |")
    lines += ["", "Import (`lmh-run FILE.nir --producer P`: the producer's own spikes, "
              "tests/fixtures/nir):", "",
              "| fixture | written / referenced by | preset | dt (s) | layers | spikes reproduced "
              "(`nir`) | Lava (first sample) |",
              "|---|---|---|---|---|---|---|"]
    for r in imports:
        lines.append(f"| {r['fixture']} | {r['reference']} | {r['producer']} | {r['dt']:g} | "
                     f"{r['layers']} | {100 * r['agreement']:.1f} % | {r['lava']} |")
    return "\n".join(lines)


def parse_export_table(text: str) -> dict:
    """{(tool, kind): runs cell} from a README block (for the CI check)."""
    out = {}
    for ln in text.splitlines():
        cells = [c.strip() for c in ln.strip().strip("|").split("|")]
        if len(cells) == 6 and cells[0] in TOOLS:
            out[(cells[0], cells[1])] = cells[2]
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--limit", type=int, default=360)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--checkpoint", action="append", default=[], metavar="KIND=PATH")
    ap.add_argument("--write-readme", action="store_true")
    ap.add_argument("--no-lava", action="store_true", help="skip the Lava column")
    args = ap.parse_args(argv)
    given = dict(c.split("=", 1) for c in args.checkpoint)
    export = {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, kind in KINDS.items():
            ck = Path(given[label]) if label in given else train_digits(kind, Path(tmp) / kind,
                                                                        args.epochs)
            export[label] = [export_row(ck, t, args.limit) if installed(t)
                             else {"tool": t, "missing": True} for t in TOOLS]
            for r in export[label]:
                print(label, r, file=sys.stderr)
    text = markdown(export, import_rows(lava=not args.no_lava), args.limit)
    print(text)
    if args.write_readme:
        readme = ROOT / "README.md"
        s = readme.read_text()
        if START not in s or END not in s:
            raise SystemExit("README.md has no interop-matrix markers")
        a, b = s.index(START) + len(START), s.index(END)
        readme.write_text(s[:a] + "\n" + text + "\n" + s[b:])
    return 0


if __name__ == "__main__":
    sys.exit(main())
