"""Write a DeployGraph or a checkpoint in one export format, atomically and validated (the library
side of ``lmh-export``; the command is :mod:`lmh_deploy.cli.export`).

The output is written atomically (temporary file in the destination directory, then
``os.replace``) and, by default, validated before it is renamed into place: the written file is
run on a sample batch against the reference interpreter (:func:`lmh_deploy.verify.validate_export`);
on a mismatch or any other error no output file is left behind. Lossy forms (``lossy_lif``, a
third-party ``target``, formats no exact runtime reads such as netx) are not validated: they
are not the model by design.
"""
from __future__ import annotations

from pathlib import Path

from lmh_deploy.errors import ExportFormatError
from lmh_deploy.runtimes import get_writer


def export_graph(graph, fmt: str, out, timesteps: int | None = None, validate: bool = True,
                 sample=None, report=None, data_dir=None, data_options=None,
                 progress: bool | None = False, fidelity: dict | None = None, **options) -> Path:
    """Write DeployGraph ``graph`` in format ``fmt`` to ``out`` atomically; with ``validate`` run
    the written file on ``sample`` (default :func:`~lmh_deploy.verify.validation_sample` of
    ``graph.meta["dataset"]`` read from ``data_dir`` with the loader's ``data_options``) against
    the reference first (:class:`~lmh_deploy.verify.ExportValidationError`: nothing written).
    ``report``: a dict that receives the validation report under ``"validation"``. ``progress``:
    a tqdm bar over the stages write / sample / validate (True always, False never, None on a
    terminal). ``fidelity``: options of :func:`~lmh_deploy.verify.validate_fold` (``path``: the
    trained checkpoint) to check the fold fidelity in the same validation (FoldFidelityError:
    nothing written)."""
    from tqdm.auto import tqdm

    from lmh_deploy.atomic import atomic_output

    writer = get_writer(fmt)
    out = Path(out)
    if timesteps is not None:
        graph.check_timesteps(timesteps)
    checks = (validate and not options.get("lossy_lif") and not options.get("target")
              and _validates(fmt))
    with atomic_output(out) as tmp, tqdm(total=3 if checks else 1, desc=f"lmh-export {fmt}",
                                         unit="stage", leave=False,
                                         disable={True: False, False: True, None: None}[progress]) as bar:
        bar.set_postfix_str("write")
        writer(graph, tmp, timesteps=timesteps, **options)
        bar.update()
        if checks:
            import numpy as np

            from lmh_deploy.verify import validate_export, validation_sample

            bar.set_postfix_str("sample")
            x = sample if sample is not None else validation_sample(
                graph, graph.meta.get("dataset"), data_dir=data_dir, options=data_options)
            bar.update()
            bar.set_postfix_str("validate")
            x = np.asarray(x, np.float32)
            if options.get("frames") and x.ndim == len(graph.input_shape) + 1:
                x = np.ascontiguousarray(np.broadcast_to(x, (timesteps or graph.timesteps,) + x.shape))
            rep = validate_export(graph, tmp, fmt, x, timesteps, fidelity=fidelity)
            bar.update()
            if report is not None:
                report["validation"] = rep
    return out


def export_checkpoint(path, fmt: str, out=None, timesteps: int | None = None,
                      validate: bool = True, report=None, dataset: str | None = None,
                      data_dir=None, data_options=None, progress: bool | None = False,
                      fidelity: dict | None = None, **options) -> Path:
    """Fold checkpoint ``path`` and write it in format ``fmt`` to ``out`` (default: beside it,
    suffix ``.<fmt>``), validated unless ``validate=False`` (see :func:`export_graph`) on the
    test split of ``dataset`` (default: the one the checkpoint was trained on; the file records
    it) read from ``data_dir``: the file against the reference, and the fold fidelity (trained
    module vs deployed graph, :func:`~lmh_deploy.verify.validate_fold` with the options
    ``fidelity``)."""
    from lmh_deploy.evaluate import trained_dataset
    from lmh_deploy.guards import check_outputs
    from lmh_deploy.deployment import load_model_checked
    from lmh_deploy.graph.fold import fold

    get_writer(fmt)
    path = Path(path)
    out = Path(out) if out else path.with_suffix("." + fmt)
    check_outputs([("-o" if out != path.with_suffix("." + fmt) else "output", out)],
                  [("checkpoint", path)])
    graph = fold(load_model_checked(path))
    graph.meta["dataset"] = trained_dataset(path)
    if dataset:
        from lmh_deploy.data import DATASET_NAMES

        if dataset not in DATASET_NAMES:
            raise ExportFormatError(f"unknown data set {dataset!r}; choose one of "
                                    f"{', '.join(DATASET_NAMES)}")
    sample = None
    if validate and (dataset or data_dir):
        from lmh_deploy.verify import validation_sample

        # named explicitly: a data set that cannot be read is an error, not random inputs
        sample = validation_sample(graph, dataset or graph.meta.get("dataset"), data_dir=data_dir,
                                   options=data_options, strict=True)
    fid = dict(fidelity or {}, path=path) if validate and _validates(fmt) and not (
        options.get("lossy_lif") or options.get("target")) else None
    return export_graph(graph, fmt, out, timesteps, validate, sample=sample, report=report,
                        data_dir=data_dir, data_options=data_options, progress=progress,
                        fidelity=fid, **options)


def _validates(fmt: str) -> bool:
    """True when an exact runtime reads ``fmt`` files (lossy formats such as lava-dl's netx have
    none: they are not the model by design, so there is nothing to validate against)."""
    from lmh_deploy.runtimes import RUNTIMES

    return any(r.source == fmt and r.exact for r in RUNTIMES.values())
