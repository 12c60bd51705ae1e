"""The Python API (re-exported by ``import lmh_deploy``): load, export, run, verify and sweep a
model in one call each. Every function raises one-line :class:`~lmh_deploy.errors.LmhError`
subclasses for bad input.

    import lmh_deploy as lmh
    model = lmh.load_model("runs/latest/model.pt")             # the trained nn.Module
    lmh.export_model("runs/latest/model.pt", "onnx", "m.onnx")  # folded, written, validated
    res = lmh.run_model("m.onnx", limit=100)                    # accuracy per step on digits
    rep = lmh.verify_model("runs/latest/model.pt", "onnx")      # runtimes vs reference
    net = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), LMHNeuron(4), ...)
    lmh.export_model(net, "nir", "net.nir", input_shape=(1, 8, 8), timesteps=4)
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["load_model", "fold_model", "export_model", "run_model", "verify_model", "sweep_model"]


def load_model(path) -> Any:
    """The trained :class:`~lmh_deploy.models.SpikingNet` (eval mode) of checkpoint ``path``;
    ``model(x)`` maps ``[B, C, H, W]`` (or frames ``[T, B, ...]``) to per-step logits
    ``[T, B, K]``; the class is ``logits.mean(0).argmax(-1)``."""
    from lmh_deploy.deployment import load_model_checked

    return load_model_checked(path)


def fold_model(model_or_path, input_shape=None, timesteps: int | None = None, **grid) -> Any:
    """The :class:`~lmh_deploy.graph.schema.DeployGraph` of a checkpoint path, a SpikingNet, or a
    user module built from torch layers and our neurons (then ``input_shape`` -- one sample, e.g.
    ``(1, 8, 8)`` -- is required, ``timesteps`` defaults to its neurons' T; ``grid``: ``input_quantum``,
    ``input_bound``; see :mod:`lmh_deploy.graph.trace`)."""
    from lmh_deploy.errors import LmhError
    from lmh_deploy.graph.fold import fold
    from lmh_deploy.models import SpikingNet

    if isinstance(model_or_path, (str, Path)):
        from lmh_deploy.evaluate import trained_dataset

        graph = fold(load_model(model_or_path))
        graph.meta["dataset"] = trained_dataset(model_or_path)
        return graph
    model = model_or_path
    if not isinstance(model, SpikingNet):
        from lmh_deploy.graph.trace import from_module

        if input_shape is None:
            raise LmhError("exporting your own module needs input_shape=(C, H, W) of one sample")
        model = from_module(model, input_shape, timesteps, **grid)
    was_training = model.training
    model.eval()
    try:
        return fold(model)
    finally:
        model.train(was_training)


def export_model(model_or_path, format: str, path, timesteps: int | None = None, *,
                 validate: bool = True, sample=None, input_shape=None, train_timesteps=None,
                 **options) -> dict:
    """Fold ``model_or_path`` (a checkpoint path, a SpikingNet or your own module, see
    :func:`fold_model`) and write it as ``format`` (``"onnx"``, ``"nir"``) to ``path``
    atomically, unrolled for ``timesteps`` (default: the trained T). With ``validate`` the
    written file is run on ``sample`` (``[N, *input_shape]``; default: test samples of the
    training data set or seeded grid inputs) against the reference interpreter first; a
    mismatch raises :class:`~lmh_deploy.verify.ExportValidationError` and writes nothing.
    ``options``: the writer's (``with_spikes``, ``frames``, ``form``, ``lossy_lif``).
    For your own module pass ``input_shape`` and ``train_timesteps`` (its neurons' T; default
    ``timesteps``). Returns ``{"path", "validation"}``."""
    from lmh_deploy.exporting import export_graph

    graph = fold_model(model_or_path, input_shape, train_timesteps or timesteps)
    report: dict = {}
    out = export_graph(graph, format, path, timesteps, validate, sample, report, **options)
    return {"path": out, "validation": report.get("validation")}


def run_model(path, dataset: str | None = None, runtime: str | None = None,
              timesteps: int | None = None, limit: int | None = None, data_dir=None,
              batch_size: int = 256, **data_options) -> dict:
    """Run a checkpoint or exported file on the test split of ``dataset`` (default: the one it was
    trained on, else digits) -- what ``lmh-run --json`` writes: ``accuracy_per_step``,
    ``accuracy``, ``spikes_per_sample``, ``firing_rate``, ``wall_time_s``, ..."""
    from lmh_deploy.deployment import run_file

    return run_file(path, dataset, runtime, timesteps, limit, batch_size, data_dir, data_options)


def verify_model(path, format: str = "onnx", runtimes: str | None = None,
                 timesteps: int | None = None, dataset: str | None = None,
                 limit: int | None = None, data_dir=None, **data_options) -> dict:
    """Export checkpoint ``path`` to a temporary file and compare every runtime with the
    reference layer by layer (``lmh-verify --json``'s report; ``report["ok"]``)."""
    from lmh_deploy.verify import verify

    return verify(path, format, runtimes, timesteps, dataset, limit, 256, data_dir, data_options)


def sweep_model(path, runtimes: str = "torch,reference,onnx", timesteps: str = "1-32",
                dataset: str | None = None, limit: int | None = None, out=None, data_dir=None,
                figure_format: str = "png", **data_options) -> dict:
    """Accuracy and spikes per sample against T per runtime (``{"meta", "rows"}``); with ``out``
    also writes ``sweep.csv``, ``sweep.json`` and the figure there (the figure needs matplotlib)."""
    from lmh_deploy.sweep import plan, run_sweep, write_outputs

    dep, rts, ts = plan(path, runtimes, timesteps)
    with dep:
        result = run_sweep(dep, rts, ts, dataset, limit, 256, False, False, data_dir, data_options)
    if out is not None:
        result["paths"] = {k: (str(v) if v else None)
                           for k, v in write_outputs(result, out, figure_format).items()}
    return result
