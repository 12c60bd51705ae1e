"""Lava Process for one stage of a foreign NIR graph (a file written by another tool) that Lava's
own ``lava.proc.lif`` cannot express, and its ProcessModel (issue 15, DESIGN §3 "Import").

A stage is one stateful node (LIF, IF, CubaLIF, LI, CubaLI, I, Delay) or ``Threshold``, or the
graph's Output, together with the stateless nodes that compute its input from one source stage
(Affine, Linear, Scale, Conv1d/2d, SumPool2d/AvgPool2d, Flatten) and any loop through them back to
the node (a recurrent ``Affine`` reads the node's output of step t−1 over its delayed edge). Each
Lava step the model sends the output it computed at the previous step (one step per hop, as
Lava's ``Dense`` + ``LIF``), then evaluates the stage's nodes in order with the pure functions of
:mod:`lmh_deploy.nir.primitives` (``STEP``: stateful nodes) and :mod:`lmh_deploy.nir.stateless`
(the rest) -- the same code and float32 constants as ``--runtime nir``. It steps only on the T
steps of its sample (``first`` .. ``first + T − 1``), so pipeline filling never touches its state.

Numpy only, never torch; side-effect free apart from :func:`import_lava`; absolute imports (Lava
re-executes this file when it searches ProcessModels).
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

from lmh_deploy.nir.primitives import STEP, init_state, initial_output  # noqa: E402
from lmh_deploy.nir.stateless import eval_stateless  # noqa: E402


class ForeignStageProcess(AbstractProcess):
    """``stage``: a dict with ``nodes`` ({name: Node} of :mod:`lmh_deploy.nir.foreign_graph`,
    constants already at the rules' dt), ``order`` (evaluation order), ``inputs`` ({node:
    [(source, delayed)]}, source ``None`` = this stage's InPort), ``exit`` (the node whose output
    leaves), ``in_shape`` (shape of one sample at the InPort), ``rules``; ``first``: the Lava
    time step (1-based) at which the first input of the sample arrives; ``steps``: T."""

    def __init__(self, *, stage, in_size, size, first, steps, name=None):
        super().__init__(stage=stage, in_size=int(in_size), size=int(size), first=int(first),
                         steps=int(steps), name=name)
        self.a_in = InPort(shape=(int(in_size),))
        self.s_out = OutPort(shape=(int(size),))


@implements(proc=ForeignStageProcess, protocol=LoihiProtocol)
@requires(CPU)
@tag("floating_pt")
class PyForeignStageModel(PyLoihiProcessModel):
    """Sends the previous step's output, then steps the stage on this step's input."""

    a_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)
    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, float)

    def __init__(self, proc_params):
        super().__init__(proc_params)
        st = self._stage = proc_params["stage"]
        self._state = {n: init_state(st["nodes"][n], 1, st["rules"]) for n in st["order"]}
        self._prev = {n: initial_output(st["nodes"][n], self._state[n], 1) for n in st["order"]}
        self._first = int(proc_params["first"])
        self._steps = int(proc_params["steps"])
        self._zeros = np.zeros(int(proc_params["size"]), np.float64)
        self._out = self._zeros

    def run_spk(self):
        a = self.a_in.recv()
        self.s_out.send(self._out)
        t = self.time_step - self._first
        self._out = self._step(a) if 0 <= t < self._steps else self._zeros

    def _step(self, x):
        """One step of the stage's nodes on one sample: ``x`` flat [in_size] -> the exit
        node's output, flat (float64 for the port)."""
        st = self._stage
        nodes, rules = st["nodes"], st["rules"]
        x = np.asarray(x, np.float32).reshape((1,) + tuple(st["in_shape"]))
        cur = {}
        for n in st["order"]:
            u = None
            for src, delayed in st["inputs"][n]:
                v = x if src is None else (self._prev[src] if delayed else cur[src])
                u = v if u is None else u + v
            node = nodes[n]
            if node.kind in STEP:
                cur[n], self._state[n] = STEP[node.kind](node.params, self._state[n], u, rules)
            else:
                cur[n] = eval_stateless(node, u).astype(np.float32)
        self._prev = cur
        return np.asarray(cur[st["exit"]], np.float64).ravel()
