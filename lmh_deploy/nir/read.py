"""Read NIR files (convention ``lmh-nir/1``, :mod:`lmh_deploy.nir.convention`).

* :func:`read_graph` -- a path (node types checked first, one-line errors) -> ``nir.NIRGraph``.
* :func:`read_deploy_graph` / :func:`read_layers` -- our NIR file -> the DeployGraph it was
  exported from (the metadata holds :func:`lmh_deploy.graph.schema.to_dict`), or its layer chain
  for runtimes that build their own network (Lava).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lmh_deploy.errors import NirGraphError, TimestepsError, UnsupportedModelError, require
from lmh_deploy.graph.schema import check_timesteps, from_dict
from lmh_deploy.nir.convention import FORMAT_TAG, META_DEPLOY

SUPPORTED = ("Input", "Output", "Affine", "Linear", "Scale", "Conv2d", "SumPool2d", "Flatten",
             "Threshold", "I", "LIF")


def _plain(v):
    if isinstance(v, bytes):
        return v.decode("utf8")
    if isinstance(v, np.ndarray) and v.dtype.kind in "SO" and v.ndim == 0:
        return _plain(v.item())
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, dict):
        return {k: _plain(a) for k, a in v.items()}
    return v


def _check_file_types(path: Path):
    """Name the first node of an unknown type before nir.read fails anonymously."""
    h5py = require("h5py", "nir")
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise NirGraphError(f"{path}: not a NIR (HDF5) file ({e}); export one with "
                            f"lmh-export --format nir") from None
    with f:
        if "node" not in f or "nodes" not in f["node"]:
            raise NirGraphError(f"{path}: no NIR graph in this HDF5 file; export one with "
                                f"lmh-export --format nir")
        for name, node in f["node"]["nodes"].items():
            t = _plain(node["type"][()]) if "type" in node else "?"
            if t not in SUPPORTED:
                raise NirGraphError(f"node {name!r}: unknown or unsupported NIR primitive {t!r}; "
                                    f"the lmh NIR runtime runs {', '.join(SUPPORTED)}")


def read_graph(source):
    """``nir.NIRGraph`` from a path (validated types) or pass one through."""
    nir = require("nir", "nir")
    if isinstance(source, nir.NIRGraph):
        return source
    path = Path(source)
    if not path.exists():
        raise NirGraphError(f"{path}: no such file")
    _check_file_types(path)
    try:
        return nir.read(path, type_check=False)
    except Exception as e:  # noqa: BLE001 - nir raises bare asserts / KeyErrors
        raise NirGraphError(f"{path}: nir.read failed ({type(e).__name__}: {e}); the file is "
                            f"corrupt or not written by nir 1.0") from None


@dataclass
class NirLayers:
    """Our NIR file as a layer chain (``layers``: :class:`~lmh_deploy.graph.schema.Layer`) with
    the file's T, L, input grid and form."""

    layers: list
    timesteps: int
    levels: int
    input_shape: tuple
    input_quantum: float
    input_bound: float
    form: str

    def check_timesteps(self, timesteps: int) -> int:
        return check_file_timesteps(self.form, self.timesteps, timesteps)


def check_file_timesteps(form: str, exported_t: int | None, timesteps) -> int:
    """A temporal (streaming) file runs any number of steps; an unrolled one exactly its T."""
    check_timesteps(timesteps)
    if form == "unrolled" and exported_t is not None and timesteps != exported_t:
        raise TimestepsError(f"this NIR file is the unrolled form for T={exported_t}; re-export "
                             f"with lmh-export --format nir --timesteps {timesteps}")
    return int(timesteps)


def read_deploy_graph(source):
    """Our NIR file -> the :class:`~lmh_deploy.graph.schema.DeployGraph` it was exported from:
    structure and exact neuron parameters from the graph metadata (written by
    :func:`lmh_deploy.graph.schema.to_dict`), synapse weights from the NIR nodes themselves
    (``Affine`` / ``Conv2d`` with metadata role "synapse", step 0)."""
    g = read_graph(source)
    meta = _plain(dict(g.metadata or {}))
    if meta.get("format") != FORMAT_TAG or META_DEPLOY not in meta:
        raise NirGraphError("this NIR file was not written by lmh-export --format nir (no "
                            "'deploy' metadata); run it with the generic NIR runtime instead")
    d = json.loads(meta[META_DEPLOY])
    arrays = {}
    for node in g.nodes.values():
        m = _plain(dict(node.metadata or {}))
        if m.get("role") == "synapse" and int(m.get("step", 0)) == 0:
            arrays[f"{m['op']}.weight"] = np.asarray(node.weight, np.float32)
            arrays[f"{m['op']}.bias"] = np.asarray(node.bias, np.float32)
    for o in d["ops"]:
        if o["kind"] == "synapse":
            if f"{o['name']}.weight" not in arrays:
                raise NirGraphError(f"node for synapse {o['name']!r} is missing from the file")
            o["array_keys"] = ["bias", "weight"]
    return from_dict(d, arrays, meta={"from_nir": True, "form": meta.get("form")})


def read_layers(source) -> NirLayers:
    """Our NIR file -> :class:`NirLayers`: a chain ``[flatten] synapse neuron ... synapse`` of
    :class:`~lmh_deploy.graph.schema.Layer` (residual / pooling graphs raise NirGraphError naming
    the op)."""

    graph = read_deploy_graph(source)
    meta = _plain(dict(read_graph(source).metadata or {}))
    try:
        chain = graph.layer_chain()
    except UnsupportedModelError as e:
        raise NirGraphError(f"{e}; use read_deploy_graph for other graphs") from None
    return NirLayers(chain, int(meta.get("timesteps", graph.timesteps)), graph.levels,
                     graph.input_shape, graph.input_quantum, graph.input_bound,
                     str(meta.get("form", "temporal")))
