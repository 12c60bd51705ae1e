#!/usr/bin/env python
"""Train a spiking network: ``python training/fit.py [options]`` (``--help`` lists them).

With no arguments: LM-H MLP on scikit-learn's digits, T=4, on the CPU; writes
runs/latest/model.pt and runs/latest/metrics.json. The code is ``lmh_deploy.training``, the
command line :mod:`lmh_deploy.cli.train`.
"""
import importlib.util
import sys
from pathlib import Path


def _import_training():
    """``lmh_deploy.training``, installed (pip install -e .) or straight from this checkout."""
    try:
        import lmh_deploy.training as training
        return training
    except ImportError:
        pass
    here = Path(__file__).resolve().parent
    sys.path.insert(0, str(here.parent))  # the checkout root holds lmh_deploy/
    spec = importlib.util.spec_from_file_location(
        "lmh_deploy.training", here / "__init__.py", submodule_search_locations=[str(here)])
    module = importlib.util.module_from_spec(spec)
    sys.modules["lmh_deploy.training"] = module
    spec.loader.exec_module(module)
    return module


if __name__ == "__main__":
    _import_training()
    from lmh_deploy.cli.train import main

    sys.exit(main())
