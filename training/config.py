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
    "threads": 1,             # torch CPU threads during train() (None: torch's default); 1 is
                              # fastest for the small digits models, on a busy CPU by 10x
    "out": "runs/latest",
    "resume": None,           # path of a checkpoint to continue from (None: start fresh)
    "progress": None,         # tqdm bar: None = only on a terminal, True/False to force
    # --- paper-scale options (issue 6; implemented in training/extensions.py) ---
    "source": None,           # free text: the paper table a config file reproduces
    "bn": "tdbn",             # tdbn (BN over T*B, foldable) | per_step (one BN per step)
    "autoaugment": True,      # AutoAugment on CIFAR / ImageNet-style data sets
    "cutout": None,           # Cutout side (None: the data set's default, 0: off)
    "slice": None,            # time-slicing online training: k steps per slice (None: full BPTT)
    "sparsity_width": None,   # STDS target width D (None: dense training)
    "hybrid": False,          # QCFS ANN -> neuron conversion, then fine-tuning (epochs/lr below)
    "ann_checkpoint": None,   # hybrid: a trained QCFS ANN checkpoint (None: train it first)
    "tq": 8,                  # hybrid: QCFS quantization steps T_q
    "ann_epochs": 30,         # hybrid stage 1 epochs
    "ann_lr": 0.1,            # hybrid stage 1 learning rate (SGD, cosine)
    "amp": False,             # bf16 autocast on CUDA
    "channels_last": True,    # channels-last convolutions on CUDA
    "compact_spikes": True,   # keep uint8 spike counts for backward, not theta*s (exact; less memory)
    "sync_bn": False,         # SyncBatchNorm under torchrun (CUDA)
    "keep_best": False,       # also keep <out>/best.pt (highest test accuracy); paper configs: true
}

BN_MODES = ("tdbn", "per_step")


from lmh_deploy.errors import ConfigError  # noqa: E402,F401


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
    if out["threads"] is not None:
        _positive_int(out, "threads")
    if out["levels"] is not None:
        if out["neuron"] != "lmht":
            raise ConfigError(f"levels is only valid with neuron lmht (got neuron {out['neuron']!r}); "
                              "drop --levels or use --neuron lmht")
        _positive_int(out, "levels")
    _choice(out, "bn", BN_MODES)
    for key in ("slice", "cutout"):
        if out[key] is not None:
            _positive_int(out, key, 0 if key == "cutout" else 1)
    if out["ann_checkpoint"] is not None:
        out["hybrid"] = True
    if out["hybrid"] and out["neuron"] not in ("lmh", "lmh-radical", "lmht"):
        raise ConfigError(f"hybrid training converts a QCFS ANN into lmh, lmh-radical or lmht, not "
                          f"{out['neuron']!r}; choose one with --neuron")
    _positive_int(out, "tq")
    _positive_int(out, "ann_epochs", 0)
    for key in ("lr", "momentum", "weight_decay", "lif_decay", "ann_lr"):
        v = out[key]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
            raise ConfigError(f"{key} must be a number >= 0, got {v!r}")
    if not (isinstance(out["device"], str) and out["device"].split(":")[0] in ("cpu", "cuda", "mps")):
        raise ConfigError(f"unknown device {out['device']!r}; choose cpu, cuda, cuda:N or mps")
    if out["sparsity_width"] is not None:
        v = out["sparsity_width"]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
            raise ConfigError(f"sparsity_width must be a number >= 0, got {v!r}")
    for key in ("out", "resume", "data_dir", "ann_checkpoint"):
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
