"""Lava (lava-nc 0.10) support: the Python 3.11 import shim and the neuron Processes.

* :mod:`.compat` -- :func:`import_lava`; call it before any ``lava`` import.
* :mod:`.procs_lmh` -- LM-H Process (LIF, radical LM-H) with float and fixed-point models.
* :mod:`.procs_lmht` -- multi-level Processes (Omega = I, and windowed for a learned Omega).
* :mod:`.model_base` -- the sample schedule every neuron model runs (written once).
* :mod:`.fixed_point`, :mod:`.schedule` -- numpy helpers shared by the models.

This package holds only side-effect-free modules: when compiling, Lava imports every module
beside a Process to search for ProcessModels. Nothing here is imported eagerly, so importing
``lmh_deploy.lava`` does not import Lava.
"""
from .compat import LavaUnavailableError, import_lava

__all__ = ["import_lava", "LavaUnavailableError"]
