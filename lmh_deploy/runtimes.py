"""The runtime registry: every way lmh-deploy can execute a model, by name.

A runtime is ``run(source, x, timesteps) -> GraphRun`` (per-step logits ``[T, B, K]`` and every
neuron layer's spike counts ``[T, B, ...]``, numpy). What ``source`` is depends on
:attr:`Runtime.source`:

* ``"model"`` -- the trained :class:`~lmh_deploy.models.SpikingNet` (eval mode);
* ``"graph"`` -- the folded :class:`~lmh_deploy.graph.schema.DeployGraph`;
* an export format name (a key of :data:`FORMATS`) -- what :attr:`Runtime.load` returns for a
  file written by that format's writer.

To add a runtime: write its run (and load) function in its own module and add one line to
:data:`RUNTIMES`; to add a format, one line to :data:`FORMATS`. Everything else (the runtimes a
format is verified with, the file suffixes ``lmh-run`` accepts) is derived from these two tables. Functions are named ``"module:function"`` and imported only when the
runtime is used, so optional dependencies stay optional.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field

from lmh_deploy.errors import ExportFormatError, UnknownRuntimeError




@dataclass(frozen=True)
class Runtime:
    name: str
    source: str                 # "model" | "graph" | an export format name
    run: str                    # "module:function": (source, x, timesteps) -> GraphRun
    load: str | None = None     # "module:function": path -> source (file formats only)
    suffixes: tuple = ()        # files it can run directly (lmh-run model.onnx)
    export_options: dict = field(default_factory=dict)  # passed to the format's writer
    exact: bool = True          # must equal the reference interpreter spike for spike
    verify_default: bool = True  # checked by ``lmh-verify --format <source>`` without --runtime
    description: str = ""

    def run_fn(self):
        return _resolve(self.run)

    def load_fn(self):
        return _resolve(self.load) if self.load else (lambda path: path)


def _resolve(spec: str):
    module, func = spec.split(":")
    return getattr(importlib.import_module(module), func)


def _target_runtime(tool: str) -> Runtime:
    """The runtime of a third-party tool's NIR target form (lossy: verification only)."""
    return Runtime(tool, "nir", f"lmh_deploy.nir.targets:run_{tool}",
                   load="lmh_deploy.nir.targets:load_target", exact=False,
                   export_options={"target": tool}, verify_default=False,
                   description=f"the {tool} target form (lmh-export --target {tool}) in {tool}'s "
                               "own NIR importer and simulator (lossy: verification)")


#: name -> Runtime. Constant table: extend it by adding a line here.
RUNTIMES: dict[str, Runtime] = {
    "torch": Runtime("torch", "model", "lmh_deploy.torch_model:run_trained_model",
                     exact=False, description="the trained nn.Module in eval mode (before the fold)"),
    "deployed-torch": Runtime("deployed-torch", "graph", "lmh_deploy.graph.interpret:run_torch",
                              description="the DeployGraph in torch (interpreter, torch back-end)"),
    "reference": Runtime("reference", "graph", "lmh_deploy.graph.interpret:run_reference",
                         description="the DeployGraph in numpy: the ground truth"),
    "onnx": Runtime("onnx", "onnx", "lmh_deploy.onnx.run:run_onnx_model",
                    load="lmh_deploy.onnx.run:load_onnx", suffixes=(".onnx",),
                    export_options={"with_spikes": True},
                    description="the exported ONNX file in onnxruntime (CPU)"),
    "nir": Runtime("nir", "nir", "lmh_deploy.nir.run_numpy:run_nir",
                   load="lmh_deploy.nir.run_numpy:load_nir", suffixes=(".nir",),
                   description="the exported NIR file in the numpy NIR runtime (lmh-nir/2)"),
    "nir-literal": Runtime("nir-literal", "nir", "lmh_deploy.nir.run_literal:run_literal",
                           load="lmh_deploy.nir.run_literal:load_literal", suffixes=(".nir",),
                           verify_default=False,
                           description="any NIR file node by node as lmh-nir/2 reads (no neuron "
                                       "recognition, float32 per node)"),
    "nir-torch": Runtime("nir-torch", "nir", "lmh_deploy.nir.run_torch:run_nir_torch",
                         load="lmh_deploy.nir.run_torch:load_nir_torch", suffixes=(".nir",),
                         description="the exported NIR file as a torch module wired by nirtorch"),
    **{tool: _target_runtime(tool) for tool in ("snntorch", "spikingjelly", "norse", "sinabs")},
    "lava": Runtime("lava", "nir", "lmh_deploy.lava.nir:run_lava_nir",
                    load="lmh_deploy.lava.nir:load_nir_layers", suffixes=(".nir",),
                    verify_default=False,
                    description="the exported NIR file as a Lava process graph (float simulation)"),
    "lava-fixed": Runtime("lava-fixed", "nir", "lmh_deploy.lava.nir:run_lava_nir_fixed",
                          load="lmh_deploy.lava.nir:load_nir_layers", suffixes=(".nir",),
                          exact=False, verify_default=False,
                          description="the exported NIR file in Lava, Loihi-2-style fixed point"),
}


#: export format name -> "module:function" of its writer ``writer(graph, path, timesteps=None,
#: **options)``. Constant table: extend it by adding a line.
FORMATS: dict[str, str] = {
    "onnx": "lmh_deploy.onnx.write:write_onnx",
    "nir": "lmh_deploy.nir.write:write_nir",
    "netx": "lmh_deploy.lava.netx:write_netx",
}


def get_writer(fmt: str):
    """The writer function of export format ``fmt`` (imported on first use); an unknown format
    raises :class:`~lmh_deploy.errors.ExportFormatError`."""
    if fmt not in FORMATS:
        raise ExportFormatError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    return _resolve(FORMATS[fmt])


def format_runtimes(fmt: str) -> list:
    """Names of the runtimes that check files of format ``fmt`` by default (``lmh-verify``)."""
    return [r.name for r in RUNTIMES.values() if r.source == fmt and r.verify_default]


def get_runtime(name: str) -> Runtime:
    if name not in RUNTIMES:
        raise UnknownRuntimeError(f"unknown runtime {name!r}; choose one of {', '.join(RUNTIMES)}")
    return RUNTIMES[name]


def parse_runtimes(text: str) -> list[Runtime]:
    """``"torch,reference,onnx"`` -> Runtimes (unknown or empty names -> UnknownRuntimeError)."""
    names = [n.strip() for n in str(text).split(",")]
    if not names or any(not n for n in names):
        raise UnknownRuntimeError(f"malformed runtime list {text!r}; give names separated by "
                                  f"commas, e.g. torch,reference,onnx")
    return [get_runtime(n) for n in dict.fromkeys(names)]


__all__ = ["FORMATS", "RUNTIMES", "Runtime", "UnknownRuntimeError", "format_runtimes", "get_runtime",
           "get_writer", "parse_runtimes"]
