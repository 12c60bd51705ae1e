"""Training of spiking networks (installed as ``lmh_deploy.training``; run as
``python training/fit.py``).

* :func:`train` -- ``train(cfg: dict) -> metrics``; ``cfg`` keys are those of :data:`DEFAULTS`.
* the command line is :mod:`lmh_deploy.cli.train`.
"""
from .config import DEFAULTS, ConfigError, resolve_config
from .loop import evaluate, train

__all__ = ["DEFAULTS", "ConfigError", "evaluate", "resolve_config", "train"]
