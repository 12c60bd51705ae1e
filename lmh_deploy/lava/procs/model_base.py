"""The sample schedule of the neuron ProcessModels, written once (see :mod:`.schedule`).

:class:`SampleScheduledModel` receives one input per Lava step, maps the global step to the step
``i`` of the current sample (:func:`~lmh_deploy.lava.schedule.sample_step`), sends zeros while the
pipeline fills, calls ``_reset()`` at each sample start and sends ``_step(a_in, i)`` as int32
spikes. Subclasses give ``_reset`` and ``_step`` (and the port/Var declarations Lava requires).

Side-effect free apart from :func:`import_lava` (Lava imports every module of this package when
it searches ProcessModels); absolute imports for the same reason.
"""
from lmh_deploy.lava.compat import import_lava

import_lava()

import numpy as np  # noqa: E402
from lava.magma.core.model.py.model import PyLoihiProcessModel  # noqa: E402

from lmh_deploy.lava.schedule import sample_step  # noqa: E402


class SampleScheduledModel(PyLoihiProcessModel):
    """Schedule and dispatch of a per-step neuron model; subclasses define ``_reset`` and
    ``_step``. Process parameters used: ``shape``, ``period``, ``offset``."""

    def __init__(self, proc_params):
        super().__init__(proc_params)
        self._period = int(proc_params["period"])
        self._offset = int(proc_params["offset"])
        self._zeros = np.zeros(proc_params["shape"], dtype=np.int32)

    def _reset(self):  # pragma: no cover - abstract
        raise NotImplementedError

    def _step(self, a, i):  # pragma: no cover - abstract
        raise NotImplementedError

    def run_spk(self):
        a = self.a_in.recv()
        i = sample_step(self.time_step, self._offset, self._period)
        if i < 0:
            self.s_out.send(self._zeros)
            return
        if i == 0:
            self._reset()
        self.s_out.send(np.asarray(self._step(a, i)).astype(np.int32))
