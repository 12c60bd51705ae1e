"""Training of spiking networks (installed as ``lmh_deploy.training``; run as
``python training/fit.py``).

* :func:`train` -- ``train(cfg: dict) -> metrics``; ``cfg`` keys are those of :data:`DEFAULTS`.
* :func:`build_parser` / :func:`main` -- the command line.
"""
from .config import DEFAULTS, ConfigError, resolve_config
from .loop import evaluate, train

__all__ = ["DEFAULTS", "ConfigError", "build_parser", "evaluate", "main", "resolve_config", "train"]


def build_parser(prog: str = "fit.py"):
    from .cli import build_parser as _build

    return _build(prog)


def main(argv=None) -> int:
    from .cli import main as _main

    return _main(argv)
