"""Self-describing checkpoints (``model.pt``): save, load, rebuild the model.

A checkpoint is a plain dict of tensors and plain containers (it loads with
``torch.load(path, weights_only=True)``; no pickled objects):

==================  ========================================================================
key                 value
==================  ========================================================================
``format``          ``"lmh-deploy/checkpoint"`` (the tag that says the file is ours)
``version``         ``1`` (the format version; a newer one is refused, not guessed at)
``model_config``    ``SpikingNet.config``: ``build_model(model_config)`` rebuilds the network
``state_dict``      the model's parameters and buffers (tensors)
``metrics``         training metrics (as in ``metrics.json``)
``train_config``    the training config dict (``lmh_deploy.training`` keys)
``epoch``           number of completed epochs (``--resume`` starts from here)
``optimizer``       ``optimizer.state_dict()`` (or ``None``)
``scheduler``       ``scheduler.state_dict()`` (or ``None``)
==================  ========================================================================

Every write is atomic: the bytes go to a temporary file in the destination directory, which
then replaces the destination with ``os.replace``; a failed or interrupted save leaves the previous
file untouched and no partial file behind.
"""
from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path

import torch

from .atomic import atomic_output, atomic_write_text
from .errors import CheckpointError, CheckpointFileError  # noqa: F401 (CheckpointError: re-exported)

FORMAT_TAG = "lmh-deploy/checkpoint"
FORMAT_VERSION = 1
REQUIRED_KEYS = ("format", "version", "model_config", "state_dict")




def make_checkpoint(model, metrics: dict | None = None, train_config: dict | None = None,
                    epoch: int = 0, optimizer=None, scheduler=None) -> dict:
    """The checkpoint dict of a :class:`~lmh_deploy.models.SpikingNet` (tensors moved to CPU)."""
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    return {
        "format": FORMAT_TAG,
        "version": FORMAT_VERSION,
        "model_config": dict(model.config),
        "state_dict": state,
        "metrics": dict(metrics or {}),
        "train_config": dict(train_config or {}),
        "epoch": int(epoch),
        "optimizer": None if optimizer is None else optimizer.state_dict(),
        "scheduler": None if scheduler is None else scheduler.state_dict(),
    }


def save_checkpoint(path: str | os.PathLike, model, **fields) -> Path:
    """Write :func:`make_checkpoint` ``(model, **fields)`` to ``path`` atomically; returns the path."""
    ckpt = make_checkpoint(model, **fields)
    with atomic_output(path) as tmp:
        torch.save(ckpt, tmp)
    return Path(path)


def load_checkpoint(path: str | os.PathLike, map_location="cpu") -> dict:
    """Read and validate a checkpoint (``weights_only=True``).

    Raises :class:`CheckpointError` for a missing file, a truncated or corrupt file, a file that is
    not an lmh-deploy checkpoint, or an unsupported format version.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file "
                              "(train one with: python training/fit.py --out DIR)")
    corrupt = (f"{path}: truncated or corrupt checkpoint, torch cannot read it ({{}}); "
               "re-save or re-train it")
    if not zipfile.is_zipfile(path):  # torch.save writes a zip archive; its index is at the end
        raise CheckpointError(corrupt.format("not a complete torch zip archive"))
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:  # weights_only refused an object: someone else's pickle
        raise CheckpointError(f"{path}: not an lmh-deploy checkpoint (it holds pickled Python "
                              "objects, not only tensors and plain containers)") from None
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError, KeyError,
            AttributeError, IndexError, TypeError) as e:
        raise CheckpointError(corrupt.format(type(e).__name__)) from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT_TAG:
        what = (f"format tag {ckpt.get('format')!r}" if isinstance(ckpt, dict) and "format" in ckpt
                else f"a {type(ckpt).__name__} without a format tag")
        raise CheckpointError(f"{path}: not an lmh-deploy checkpoint ({what}; expected format "
                              f"{FORMAT_TAG!r})")
    version = ckpt.get("version")
    if version != FORMAT_VERSION:
        raise CheckpointError(f"{path}: unsupported checkpoint version {version!r}; this lmh-deploy "
                              f"reads version {FORMAT_VERSION} (upgrade lmh-deploy to read it)")
    missing = [k for k in REQUIRED_KEYS if k not in ckpt]
    if missing or not isinstance(ckpt["model_config"], dict) or not isinstance(ckpt["state_dict"], dict):
        raise CheckpointError(f"{path}: corrupt checkpoint (missing or malformed "
                              f"{', '.join(missing) or 'model_config/state_dict'})")
    return ckpt


def model_from_checkpoint(ckpt: dict, path: str | os.PathLike = "<checkpoint>"):
    """Rebuild the :class:`~lmh_deploy.models.SpikingNet` of a loaded checkpoint dict (eval mode)."""
    from .models import build_model

    try:
        model = build_model(ckpt["model_config"])
    except (KeyError, ValueError, TypeError) as e:
        raise CheckpointError(f"{path}: its model_config cannot be built ({e})") from None
    try:
        model.load_state_dict(ckpt["state_dict"], strict=True)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0]
        raise CheckpointError(f"{path}: state_dict does not match its model_config ({first})") from None
    return model.eval()


def load_model(path: str | os.PathLike, map_location="cpu"):
    """Load ``path`` and return the ready :class:`~lmh_deploy.models.SpikingNet` in eval mode."""
    return model_from_checkpoint(load_checkpoint(path, map_location), path)


__all__ = ["CheckpointError", "FORMAT_TAG", "FORMAT_VERSION", "atomic_output", "atomic_write_text",
           "load_checkpoint", "load_model", "make_checkpoint", "model_from_checkpoint",
           "save_checkpoint"]
