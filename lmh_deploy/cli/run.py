"""``lmh-run FILE [--dataset D] [--data-dir DIR] [--runtime R] [--timesteps T] [--limit N]
[--json PATH]``.

Runs a checkpoint (``.pt``: runtimes ``torch`` = the trained module, ``deployed-torch``,
``reference``, ``onnx`` = exported on the fly) or an exported file (``.onnx``: runtime ``onnx``) on
the test split and prints the accuracy of the cumulative mean logits after each step. The data set
defaults to the one the file was trained on.

A NIR file written by another tool (no lmh-export metadata) runs in the foreign-NIR runtime
(:mod:`lmh_deploy.nir.foreign`): ``lmh-run FILE.nir [--producer NAME] [--dt SECONDS]
[--input X.npy | --dataset NAME -T STEPS]`` (``--runtime nir`` or ``nir-literal``: numpy;
``lava``: Lava's own LIF where exact, our foreign-stage process elsewhere,
:mod:`lmh_deploy.lava.foreign`).
"""
from __future__ import annotations

import json
import sys
import time

from lmh_deploy.cli.common import positive_int, run_cli
from lmh_deploy.cli.options import add_data_args, add_progress, data_options, make_parser
from lmh_deploy.guards import check_outputs
from lmh_deploy.deployment import run_file  # noqa: F401 (API of this command)


def build_parser():
    from lmh_deploy.runtimes import RUNTIMES

    p = make_parser("lmh-run", "Run a checkpoint or an exported model on a data set's test split "
                    "and print the accuracy after each time step.")
    p.add_argument("file", help="checkpoint (model.pt) or exported file (model.onnx, model.nir)")
    p.add_argument("--runtime", default=None, metavar="R",
                   help=f"one of {', '.join(RUNTIMES)} (default: torch for a checkpoint, the "
                        "file's runtime for an exported file)")
    p.add_argument("--timesteps", "-T", type=positive_int, metavar="T",
                   help="time steps (default: the trained / exported T)")
    p.add_argument("--limit", type=positive_int, metavar="N", help="first N test samples only")
    p.add_argument("--batch-size", type=positive_int, default=256, metavar="B")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON (atomically)")
    g = p.add_argument_group("NIR files written by other tools")
    g.add_argument("--input", metavar="X.npy", help="input frames [T, B, ...] or a batch [B, ...] "
                   "(with -T); .npz: its 'input' (and 'labels') arrays")
    g.add_argument("--producer", default=None, metavar="NAME",
                   help="discretize as this tool's simulator does: nir (forward Euler, default), "
                        "snntorch, snntorch-delay, spikingjelly, norse, norse-import, sinabs, rockpool, "
                        "nir-paper")
    g.add_argument("--dt", type=float, metavar="SECONDS", help="seconds per step (default: the "
                   "producer's, else what the file's r = tau/dt says)")
    g.add_argument("--reset", choices=("value", "subtract"), help="override the reset "
                   "(NIR's is to v_reset)")
    g.add_argument("--exact", action="store_true", help="exact exponential decays instead of "
                   "forward Euler")
    g.add_argument("--save-spikes", metavar="OUT.npz", help="write every layer's spikes and the "
                   "outputs (atomically)")
    add_progress(p)
    add_data_args(p)
    return p


FOREIGN_RUNTIMES = ("nir", "nir-literal", "lava")


def run_foreign_file(path, runtime=None, producer=None, dt=None, reset=None, exact=False,
                     input_path=None, dataset=None, timesteps=None, limit=None) -> dict:
    """Run a NIR file written by another tool (:mod:`lmh_deploy.nir.foreign`); the result dict
    (accuracy only when labels are known: ``--dataset`` or an .npz with ``labels``)."""
    import numpy as np

    from lmh_deploy.errors import LmhError
    from lmh_deploy.evaluate import accuracy_per_step, load_eval_data, spike_stats
    from lmh_deploy.nir import foreign

    runtime = runtime or "nir"
    if runtime == "nir-torch":
        raise LmhError(f"{path} is a NIR file written by another tool; nir-torch runs only files "
                       f"written by lmh-export (it maps our neuron clusters to torch modules); "
                       f"use --runtime nir (numpy, the same discretization) or lava")
    if runtime not in FOREIGN_RUNTIMES:
        raise LmhError(f"{path} is a NIR file written by another tool; it runs in "
                       f"{', '.join(FOREIGN_RUNTIMES)} (runtime {runtime!r} reads only files "
                       f"written by lmh-export)")
    prog = foreign.load_foreign(path, producer=producer or "nir", dt=dt, reset=reset, exact=exact)
    y = None
    if input_path is not None:
        try:
            data = np.load(input_path)
        except (OSError, ValueError) as e:
            raise LmhError(f"{input_path}: cannot read the input ({e}); give a .npy or .npz") from None
        if hasattr(data, "files"):
            if "input" not in data.files:
                raise LmhError(f"{input_path}: the .npz has no 'input' array")
            x = data["input"]
            y = data["labels"] if "labels" in data.files else None
        else:
            x = data
        source = str(input_path)
    else:
        x, y = load_eval_data(dataset or "digits", limit)
        source = dataset or "digits"
    if limit is not None:
        x = x[:, :limit] if x.ndim == len(prog.input_shape) + 2 else x[:limit]
        y = None if y is None else y[:limit]
    t0 = time.perf_counter()
    if runtime == "lava":
        from lmh_deploy.lava.foreign import run_lava_foreign

        out, spikes = run_lava_foreign(prog, x, timesteps)
    else:
        out, spikes = foreign.run_foreign(prog, x, timesteps)
    wall = time.perf_counter() - t0
    res = {"file": str(path), "runtime": runtime, "producer": prog.rules.name,
           "dt": prog.rules.dt, "input": source, "timesteps": int(out.shape[0]),
           "samples": int(out.shape[1]), "notes": prog.notes, **spike_stats(spikes),
           "wall_time_s": wall, "_outputs": out, "_spikes": spikes}
    if y is not None:
        acc = accuracy_per_step(out.reshape(out.shape[0], out.shape[1], -1), np.asarray(y)[:out.shape[1]])
        res.update(accuracy_per_step=acc, accuracy=acc[-1])
    return res


def main(argv=None) -> int:
    return run_cli(build_parser(), argv, _main)


def _main(args) -> int:
    check_outputs([("--json", args.json), ("--save-spikes", getattr(args, "save_spikes", None))],
                  [("file", args.file), ("--input", getattr(args, "input", None))])
    from pathlib import Path

    if Path(args.file).suffix == ".nir" and Path(args.file).is_file():
        from lmh_deploy.nir.foreign import is_foreign

        if is_foreign(args.file):
            _check_foreign_file(args.file)
            return _main_foreign(args)
    res = run_file(args.file, args.dataset, args.runtime, args.timesteps, args.limit,
                   args.batch_size, args.data_dir, data_options(args), args.progress)
    if args.json:
        from lmh_deploy.atomic import atomic_write_text

        atomic_write_text(args.json, json.dumps(res, indent=2) + "\n")
    print(f"{res['file']}  runtime {res['runtime']}  {res['dataset']} ({res['samples']} test samples)")
    for t, a in enumerate(res["accuracy_per_step"], 1):
        print(f"  T={t:<3d} accuracy {a:.4f}")
    sps = res["spikes_per_sample"]
    sps = "spikes not recorded" if sps is None else f"{sps:.0f} spikes/sample"
    print(f"accuracy {res['accuracy']:.4f} at T={res['timesteps']}; {sps}; {res['wall_time_s']:.2f}s")
    return 0


def _check_foreign_file(path) -> None:
    """The file checks of :func:`lmh_deploy.guards.check_nir_file` (non-finite parameters, huge
    declared shapes, ...) for a foreign file ``nir.read`` can read; files only our foreign reader
    reads (e.g. nested graphs nir.read rejects) are checked by that reader."""
    import nir

    from lmh_deploy.guards import check_nir_file

    try:
        nir.read(str(path))
    except Exception:  # noqa: BLE001 - the foreign reader reports its own one-line error
        return
    check_nir_file(path)


def _main_foreign(args) -> int:
    import numpy as np

    from lmh_deploy.atomic import atomic_write_text

    res = run_foreign_file(args.file, args.runtime, args.producer, args.dt, args.reset, args.exact,
                           args.input, args.dataset if args.input is None else None,
                           args.timesteps, args.limit)
    out, spikes = res.pop("_outputs"), res.pop("_spikes")
    if args.save_spikes:
        import io

        from lmh_deploy.atomic import atomic_write_bytes

        buf = io.BytesIO()
        np.savez_compressed(buf, outputs=out, **{f"spikes/{k}": v for k, v in spikes.items()})
        atomic_write_bytes(args.save_spikes, buf.getvalue())
    if args.json:
        atomic_write_text(args.json, json.dumps(res, indent=2) + "\n")
    print(f"{res['file']}  runtime {res['runtime']} (foreign NIR, producer {res['producer']}, "
          f"dt {res['dt']:g} s)  {res['input']}: {res['samples']} samples x {res['timesteps']} steps")
    for note in res["notes"]:
        print(f"  note: {note}")
    for name, rate in res["firing_rate"].items():
        print(f"  {name:<16s} firing rate {rate:.4f}")
    if "accuracy" in res:
        print(f"accuracy {res['accuracy']:.4f} at T={res['timesteps']}")
    print(f"{res['spikes_per_sample'] or 0:.0f} spikes/sample; {res['wall_time_s']:.2f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
