"""Write a DeployGraph or a checkpoint in one export format, atomically and validated (the library
side of ``lmh-export``; the command is :mod:`lmh_deploy.cli.export`).

The output is written atomically (temporary file in the destination directory, then
``os.replace``) and, by default, validated before it is renamed into place: the written file is
run on a sample batch against the reference interpreter (:func:`lmh_deploy.verify.validate_export`);
on a mismatch or any other error no output file is left behind. Lossy forms (``lossy_lif``, a
third-party ``target``) are not validated: they are not the model by design.
"""
from __future__ import annotations

from pathlib import Path

from lmh_deploy.errors import ExportFormatError
from lmh_deploy.runtimes import get_writer


def export_graph(graph, fmt: str, out, timesteps: int | None = None, validate: bool = True,
                 sample=None, report=None, fidelity: dict | None = None, **options) -> Path:
    """Write DeployGraph ``graph`` in format ``fmt`` to ``out`` atomically; with ``validate`` run
    the written file on ``sample`` (default :func:`~lmh_deploy.verify.validation_sample`) against
    the reference first (:class:`~lmh_deploy.verify.ExportValidationError`: nothing written).
    ``report``: a dict that receives the validation report under ``"validation"``. ``fidelity``:
    options of :func:`~lmh_deploy.verify.validate_fold` (``path``: the trained checkpoint) to
    check the fold fidelity in the same validation (FoldFidelityError: nothing written)."""
    from lmh_deploy.atomic import atomic_output

    writer = get_writer(fmt)
    out = Path(out)
    if timesteps is not None:
        graph.check_timesteps(timesteps)
    with atomic_output(out) as tmp:
        writer(graph, tmp, timesteps=timesteps, **options)
        if validate and not options.get("lossy_lif") and not options.get("target"):
            import numpy as np

            from lmh_deploy.verify import validate_export, validation_sample

            x = sample if sample is not None else validation_sample(graph, graph.meta.get("dataset"))
            x = np.asarray(x, np.float32)
            if options.get("frames") and x.ndim == len(graph.input_shape) + 1:
                x = np.ascontiguousarray(np.broadcast_to(x, (timesteps or graph.timesteps,) + x.shape))
            rep = validate_export(graph, tmp, fmt, x, timesteps, fidelity=fidelity)
            if report is not None:
                report["validation"] = rep
    return out


def export_checkpoint(path, fmt: str, out=None, timesteps: int | None = None,
                      validate: bool = True, report=None, fidelity: dict | None = None,
                      **options) -> Path:
    """Fold checkpoint ``path`` and write it in format ``fmt`` to ``out`` (default: beside it,
    suffix ``.<fmt>``), validated unless ``validate=False`` (see :func:`export_graph`): the file
    against the reference, and the fold fidelity (trained module vs deployed graph,
    :func:`~lmh_deploy.verify.validate_fold` with the options ``fidelity``)."""
    from lmh_deploy.evaluate import trained_dataset
    from lmh_deploy.deployment import load_model_checked
    from lmh_deploy.graph.fold import fold

    get_writer(fmt)
    path = Path(path)
    out = Path(out) if out else path.with_suffix("." + fmt)
    if out.resolve() == path.resolve():
        raise ExportFormatError(f"output {out} would overwrite the checkpoint; pass -o")
    graph = fold(load_model_checked(path))
    graph.meta["dataset"] = trained_dataset(path)
    fid = dict(fidelity or {}, path=path) if validate else None
    return export_graph(graph, fmt, out, timesteps, validate, report=report, fidelity=fid,
                        **options)
