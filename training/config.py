"""The training config: a plain dict with the keys of :data:`DEFAULTS`, checked by
:func:`resolve_config`. To add an option: add its key and default here (and a flag in
``cli.build_parser``); :func:`resolve_config` rejects keys it does not know.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from lmh_deploy.data import DATASET_NAMES
from lmh_deploy.models import ARCHS

NEURONS = ("lif", "lmh", "lmh-radical", "lmht")
OPTIMIZERS = ("sgd", "adamw")
LOSSES = ("ce", "tet")

#: Every training option and its default (the default run: LM-H MLP on digits, T=4, CPU).
DEFAULTS: dict = {
    "neuron": "lmh",          # lif | lmh | lmh-radical | lmht
    "levels": None,           # LM-HT levels L (default 2); only valid with neuron=lmht
    "per_channel": False,     # LM-H / LM-HT parameters per channel instead of per layer
    "lif_decay": 0.5,         # LIF membrane decay lambda (neuron=lif)
    "arch": "mlp",
    "dataset": "digits",
    "data_dir": None,         # where downloadable data sets live
    "timesteps": 4,
    "epochs": 30,
    "batch_size": 64,
    "eval_batch_size": 512,
    "lr": 0.1,
    "optimizer": "sgd",       # sgd (momentum, cosine schedule) | adamw
    "momentum": 0.9,
    "weight_decay": 5e-4,
    "loss": "ce",             # ce: CE of the mean logits; tet: mean over t of per-step CE
    "device": "cpu",
    "seed": 0,
    "num_workers": 0,
    "out": "runs/latest",
    "resume": None,           # path of a checkpoint to continue from (None: start fresh)
    "progress": None,         # tqdm bar: None = only on a terminal, True/False to force
}


class ConfigError(ValueError):
    """An invalid training option; the message names the option and the valid values."""


def _choice(cfg, key, valid):
    if cfg[key] not in valid:
        raise ConfigError(f"unknown {key} {cfg[key]!r}; choose one of {', '.join(valid)}")


def _positive_int(cfg, key, minimum=1):
    v = cfg[key]
    if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
        raise ConfigError(f"{key} must be an integer >= {minimum}, got {v!r}")


def resolve_config(cfg: dict | None = None) -> dict:
    """``DEFAULTS`` updated with ``cfg``, validated; returns a new dict.

    Raises :class:`ConfigError` for an unknown key, an unknown choice (neuron, arch, dataset,
    optimizer, loss), ``levels`` with a neuron other than lmht, or a non-positive count.
    """
    cfg = dict(cfg or {})
    unknown = sorted(set(cfg) - set(DEFAULTS))
    if unknown:
        raise ConfigError(f"unknown option(s) {', '.join(unknown)}; valid options: "
                          f"{', '.join(DEFAULTS)}")
    out = {**DEFAULTS, **cfg}
    _choice(out, "neuron", NEURONS)
    _choice(out, "arch", tuple(ARCHS))
    _choice(out, "dataset", DATASET_NAMES)
    _choice(out, "optimizer", OPTIMIZERS)
    _choice(out, "loss", LOSSES)
    for key in ("timesteps", "epochs", "batch_size", "eval_batch_size"):
        _positive_int(out, key)
    _positive_int(out, "num_workers", 0)
    if out["levels"] is not None:
        if out["neuron"] != "lmht":
            raise ConfigError(f"levels is only valid with neuron lmht (got neuron {out['neuron']!r}); "
                              "drop --levels or use --neuron lmht")
        _positive_int(out, "levels")
    for key in ("lr", "momentum", "weight_decay", "lif_decay"):
        v = out[key]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
            raise ConfigError(f"{key} must be a number >= 0, got {v!r}")
    if not (isinstance(out["device"], str) and out["device"].split(":")[0] in ("cpu", "cuda", "mps")):
        raise ConfigError(f"unknown device {out['device']!r}; choose cpu, cuda, cuda:N or mps")
    for key in ("out", "resume", "data_dir"):
        if out[key] is not None:
            out[key] = os.fspath(out[key])
    return out


def load_config_file(path: str | os.PathLike) -> dict:
    """Options from a JSON (``.json``) or TOML (any other suffix) file: a flat table of
    :data:`DEFAULTS` keys (dashes or underscores). Raises :class:`ConfigError`."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror or e}") from None
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            import tomllib

            data = tomllib.loads(text)
    except ValueError as e:  # json.JSONDecodeError and tomllib.TOMLDecodeError
        raise ConfigError(f"config file {path} is not valid "
                          f"{'JSON' if path.suffix.lower() == '.json' else 'TOML'}: "
                          f"{str(e).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a table of options, got {type(data).__name__}")
    return {k.replace("-", "_"): v for k, v in data.items()}
