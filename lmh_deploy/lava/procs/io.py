"""A recording sink for the Lava runtime: writes what its InPort receives straight into a shared
memory buffer the host allocated, instead of Lava's ``RingBuffer`` + ``Var.get()`` (which sends
arrays back one element per message: seconds for a 256 x 400 record).

The buffer is an anonymous shared mapping (``mmap.mmap(-1, n)``, MAP_SHARED) created by the host
*before* Lava forks its workers (Lava always uses the ``fork`` start method), so the worker's
writes are visible to the host after the run. Column ``time_step - 1`` holds step
``time_step``'s input: ``buffer[:, t] = a_in[t]``.

Side-effect free apart from :func:`import_lava`; absolute imports (Lava re-executes this file).
"""
from lmh_deploy.lava.compat import import_lava

import_lava()

import mmap  # noqa: E402

import numpy as np  # noqa: E402
from lava.magma.core.decorator import implements, requires, tag  # noqa: E402
from lava.magma.core.model.py.model import PyLoihiProcessModel  # noqa: E402
from lava.magma.core.model.py.ports import PyInPort  # noqa: E402
from lava.magma.core.model.py.type import LavaPyType  # noqa: E402
from lava.magma.core.process.ports.ports import InPort  # noqa: E402
from lava.magma.core.process.process import AbstractProcess  # noqa: E402
from lava.magma.core.resources import CPU  # noqa: E402
from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol  # noqa: E402


class SharedRecord:
    """A float64 array [N, steps] in anonymous shared memory (create before the Lava run)."""

    def __init__(self, n: int, steps: int):
        self.shape = (int(n), int(steps))
        self._mm = mmap.mmap(-1, max(8 * self.shape[0] * self.shape[1], 8))

    def array(self) -> np.ndarray:
        return np.frombuffer(self._mm, dtype=np.float64,
                             count=self.shape[0] * self.shape[1]).reshape(self.shape)

    def read(self) -> np.ndarray:
        """A private copy of the record."""
        return self.array().copy()

    def close(self) -> None:
        self._mm.close()


class Recorder(AbstractProcess):
    """Sink of shape ``(N,)`` writing each step's input into a :class:`SharedRecord`."""

    def __init__(self, *, shape, record: SharedRecord, name=None):
        super().__init__(shape=shape, record=record, name=name)
        self.a_in = InPort(shape=shape)


class _RecorderModel(PyLoihiProcessModel):
    def __init__(self, proc_params):
        super().__init__(proc_params)
        self._record = proc_params["record"]
        self._buf = None

    def run_spk(self):
        data = self.a_in.recv()
        if self._buf is None:
            self._buf = self._record.array()
        t = self.time_step - 1
        if t < self._buf.shape[1]:
            self._buf[:, t] = data


@implements(proc=Recorder, protocol=LoihiProtocol)
@requires(CPU)
@tag("floating_pt")
class PyRecorderModelFloat(_RecorderModel):
    a_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)


@implements(proc=Recorder, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class PyRecorderModelFixed(_RecorderModel):
    a_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int32, precision=24)
