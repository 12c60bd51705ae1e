"""A NIR file -> ``nir.NIRGraph``: node types checked before ``nir.read`` (one-line errors naming
the node), metadata values made plain, and the timestep rule of a file's form."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from lmh_deploy.errors import NirGraphError, require
from lmh_deploy.graph.schema import check_timesteps
from lmh_deploy.errors import TimestepsError

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


def check_file_timesteps(form: str, exported_t: int | None, timesteps,
                         period: int | None = None) -> int:
    """A temporal (streaming) file runs any number of steps; an unrolled one exactly its T.
    ``period`` (metadata ``omega_period``, LM-HT with a learned Omega): T a multiple of it."""
    check_timesteps(timesteps, period)
    if form == "unrolled" and exported_t is not None and timesteps != exported_t:
        raise TimestepsError(f"this NIR file is the unrolled form for T={exported_t} and runs "
                             f"exactly that many steps; for T={timesteps} re-export with "
                             f"lmh-export --format nir --timesteps {timesteps}, or run the checkpoint")
    return int(timesteps)
