"""Lava Process for one cluster of a DeployGraph (a neuron with the stateless ops that compute its
input current, or the readout) and its ProcessModel.

Everything the model does per step is :class:`lmh_deploy.lava.cluster.ClusterStep` (numpy only,
never torch): the model sends the counts it computed at the previous step (one step per hop, as
Lava's ``Dense``), receives one flat array per source port (``in0`` .. ``in3``; unconnected ports
read zeros), calls the step and writes its record straight into host shared memory
(:class:`~lmh_deploy.lava.procs.recorder.SharedRecord`). Graded counts leave through an int32
OutPort (24-bit precision).

Side-effect free apart from :func:`import_lava`; absolute imports (Lava re-executes this file).
"""
from lmh_deploy.lava.compat import import_lava

import_lava()

import numpy as np  # noqa: E402
from lava.magma.core.decorator import implements, requires, tag  # noqa: E402
from lava.magma.core.model.py.model import PyLoihiProcessModel  # noqa: E402
from lava.magma.core.model.py.ports import PyInPort, PyOutPort  # noqa: E402
from lava.magma.core.model.py.type import LavaPyType  # noqa: E402
from lava.magma.core.process.ports.ports import InPort, OutPort  # noqa: E402
from lava.magma.core.process.process import AbstractProcess  # noqa: E402
from lava.magma.core.resources import CPU  # noqa: E402
from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol  # noqa: E402


class ClusterProcess(AbstractProcess):
    """``in_sizes``: flat size of each source port (at most 4); ``size``: output neurons;
    ``step``: the :class:`~lmh_deploy.lava.cluster.ClusterStep`; ``record``: a SharedRecord
    [B*T, N] or None."""

    def __init__(self, *, in_sizes, size, step, record=None, name=None):
        super().__init__(in_sizes=list(in_sizes), size=int(size), step=step, record=record,
                         name=name)
        sizes = list(in_sizes) + [1] * (4 - len(in_sizes))
        self.in0 = InPort(shape=(sizes[0],))
        self.in1 = InPort(shape=(sizes[1],))
        self.in2 = InPort(shape=(sizes[2],))
        self.in3 = InPort(shape=(sizes[3],))
        self.s_out = OutPort(shape=(int(size),))


@implements(proc=ClusterProcess, protocol=LoihiProtocol)
@requires(CPU)
@tag("floating_pt")
class PyClusterModel(PyLoihiProcessModel):
    """Runs :class:`~lmh_deploy.lava.cluster.ClusterStep` once per Lava step."""

    in0: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)
    in1: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)
    in2: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)
    in3: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)
    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int32, precision=24)

    def __init__(self, proc_params):
        super().__init__(proc_params)
        self._step = proc_params["step"]
        self._n_in = len(proc_params["in_sizes"])
        self._record = proc_params["record"]
        self._out = np.zeros(int(proc_params["size"]), np.int32)

    def run_spk(self):
        if self._step.record is None and self._record is not None:
            self._step.record = self._record.array()
        self.s_out.send(self._out)
        ports = (self.in0, self.in1, self.in2, self.in3)[: self._n_in]
        self._out = self._step(self.time_step, [p.recv() for p in ports])
