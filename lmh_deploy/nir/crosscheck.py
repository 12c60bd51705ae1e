"""Cross-check a NIR file's nodes against its ``deploy`` metadata (the exporter's source
parameters, :func:`lmh_deploy.graph.schema.to_dict`): the nodes are the truth, a difference is
one warning line naming the first differing layers and constants (DESIGN §3)."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from lmh_deploy.errors import NirGraphError
from lmh_deploy.graph.schema import DeployGraph, DeployOp
from lmh_deploy.nir.rebuild import metadata_ops, cluster_neuron_op


def _differences(ops: list, doc: dict) -> list:
    out = []
    for op in ops:
        d = doc.get(op.name)
        if d is None or d["kind"] != op.kind or tuple(d["inputs"]) != tuple(op.inputs):
            out.append(f"{op.name}: structure")
            continue
        if op.kind == "neuron":
            a = d["attrs"]
            for k in ("model", "levels", "theta", "v0"):
                mine, theirs = op.attrs[k], a.get(k)
                if k in ("theta", "v0"):
                    mine, theirs = float(mine), float(np.float32(theirs))
                if mine != theirs:
                    out.append(f"{op.name}: {k} {mine:g} in the nodes, {theirs:g} in the metadata"
                               if k in ("theta", "v0") else f"{op.name}: {k}")
            for k, v in d.get("arrays", {}).items():
                v = np.asarray(v, np.float32)
                mine = op.arrays.get(k)
                if mine is None or not _same_behaviour(mine, v, k):
                    out.append(f"{op.name}: {k}")
        elif op.kind == "scale":
            if float(op.arrays["factor"]) != float(np.float32(d["arrays"]["factor"])):
                out.append(f"{op.name}: factor")
    names = {o.name for o in ops}
    out += [f"{n}: missing from the nodes" for n in doc if n not in names]
    return out


def _same_behaviour(a: np.ndarray, b: np.ndarray, key: str) -> bool:
    """Equal as [P, C] tables (rows held past P, C = 1 broadcast) or as Omega."""
    if key == "omega":
        return a.shape == b.shape and np.array_equal(a, b)
    p = max(a.shape[0], b.shape[0])
    c = max(a.shape[1], b.shape[1])
    try:
        ra = np.broadcast_to(a[np.minimum(np.arange(p), a.shape[0] - 1)], (p, c))
        rb = np.broadcast_to(b[np.minimum(np.arange(p), b.shape[0] - 1)], (p, c))
    except ValueError:
        return False
    return np.array_equal(ra, rb)


# ---------------------------------------------------------------------------------------------
# public
# ---------------------------------------------------------------------------------------------


def warn_metadata_differences(prog, where: str, graph: DeployGraph | None = None,
                              clusters_only: bool = False) -> list:
    """Cross-check the nodes against the file's ``deploy`` metadata (the exporter's source
    parameters): one warning line listing the first differences (the nodes run). ``graph``:
    the DeployGraph rebuilt from the nodes; ``clusters_only``: compare only the recognised
    neuron clusters of ``prog`` (the cluster runtimes). Returns the differences."""
    doc = metadata_ops(prog)
    if not doc:
        return []
    if clusters_only:
        ops = []
        for f in prog.fused:
            name = str(prog.nodes[f.spikes].meta.get("op", f.spikes))
            d = doc.get(name)
            if d is None:
                continue
            try:
                ops.append(cluster_neuron_op(prog, f, name, tuple(d["inputs"])[0], d))
            except NirGraphError:
                ops.append(DeployOp(name, "unexpressible", (), {}, {}))
        diff = _differences(ops, {o.name: doc[o.name] for o in ops})
    else:
        diff = _differences(graph.ops, doc)
    if diff:
        warnings.warn(f"{where}: its nodes disagree with its 'deploy' metadata ("
                      f"{'; '.join(diff[:3])}{'; ...' if len(diff) > 3 else ''}); running what "
                      f"the nodes say", stacklevel=3)
    return diff




def load_crosschecked(source, fuse: bool = True):
    """:func:`~lmh_deploy.nir.program.load_program` plus the one-line warning when recognised
    neurons disagree with the file's ``deploy`` metadata (the cluster runtimes' loader)."""
    from lmh_deploy.nir.program import NirProgram, load_program

    if isinstance(source, NirProgram):
        return source
    prog = load_program(source, fuse=fuse)
    if fuse:
        warn_metadata_differences(prog, str(source) if isinstance(source, (str, Path))
                                  else "NIR graph", clusters_only=True)
    return prog

