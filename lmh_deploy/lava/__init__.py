"""Lava (lava-nc 0.10) support: the Python 3.11 import shim and the neuron Processes.

* :mod:`.compat` -- :func:`import_lava`; call it before any ``lava`` import.
* :mod:`.procs` -- the Processes with their ProcessModels and nothing else (:mod:`.procs.lmh`:
  LM-H, LIF, radical LM-H; :mod:`.procs.lmht`: multi-level, windowed for a learned Omega;
  :mod:`.procs.io`: the recording sink; :mod:`.procs.model_base`: the per-sample schedule), since
  Lava imports every module beside a Process to search for ProcessModels.
* :mod:`.build` -- layer chain -> process graph; :mod:`.run` -- run it (isolated worker);
  :mod:`.nir` -- the registry's ``lava`` / ``lava-fixed`` runtimes (NIR file in).
* :mod:`.fixed_point`, :mod:`.schedule` -- numpy helpers shared by the models.

Nothing here is imported eagerly, so importing ``lmh_deploy.lava`` does not import Lava.
"""
from .compat import LavaUnavailableError, import_lava

__all__ = ["import_lava", "LavaUnavailableError"]
