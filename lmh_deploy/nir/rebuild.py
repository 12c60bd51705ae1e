"""A NIR file's NODES -> the DeployGraph they describe (the graph is the truth, DESIGN §3).

Temporal form: a walk over the checked program (:mod:`lmh_deploy.nir.program`) in topological
order. Every recognised neuron cluster (:mod:`lmh_deploy.nir.match`, structural: it reads no
names or tags) becomes a ``neuron`` op whose constants come from the cluster (theta from the
reset Scale, checked against every Threshold under the cascade rule thr_k = nextafter(fl(k
theta), -inf); decays from the loops; v0 from the I nodes); ``Affine``/``Linear``/``Conv2d``
become synapses, ``SumPool2d`` sum pools, ``Flatten`` flattens, a two-input ``Scale(1)`` a
residual add and a one-input ``Scale`` a shortcut scale. Any other stateful node (an ``I``,
``Threshold`` or ``LIF`` outside a recognised cluster, a cycle that is not one) is no
DeployGraph: a one-line NirGraphError naming the node.

Unrolled form: the nodes are grouped by their ``op``/``role``/``step`` tags, the constants read
from the nodes, and the rebuilt graph is exported again and compared with the file node by node
and edge by edge; any difference (a file edited at some steps only) is a one-line error naming
the node, so what runs is exactly what the nodes say.

The file's ``deploy`` metadata (the exporter's source parameters) is only cross-checked
(:mod:`lmh_deploy.nir.crosscheck`): a difference is one warning line and the nodes win.
"""
from __future__ import annotations

import json

import numpy as np

from lmh_deploy.errors import NirGraphError
from lmh_deploy.graph.schema import DeployGraph, DeployOp
from lmh_deploy.nir.convention import META_DEPLOY


def _per_channel(a: np.ndarray, node: str) -> np.ndarray:
    """A full-shape float32 constant -> [1, C]: [1, 1] when uniform, else one value per channel
    (axis 0 of the per-sample shape) -- what a DeployGraph neuron can hold."""
    a = np.asarray(a, np.float32)
    if a.size == 0 or np.all(a == a.flat[0]):
        return np.full((1, 1), a.flat[0] if a.size else 0, np.float32)
    rows = a.reshape(a.shape[0], -1)
    if not np.all(rows == rows[:, :1]):
        raise NirGraphError(f"node {node!r}: a neuron constant varies inside a channel; a "
                            f"DeployGraph (Lava) holds per-layer or per-channel values only; run "
                            f"this file with --runtime nir or nir-literal")
    return rows[:, 0].reshape(1, -1).copy()


def _scalar(a, node: str, what: str) -> np.float32:
    a = np.asarray(a, np.float32)
    if a.size == 0 or not np.all(a == a.flat[0]):
        raise NirGraphError(f"node {node!r}: {what} must be one value for the whole layer")
    return np.float32(a.flat[0])


def _source_kind(model: str, params: dict, doc: dict | None) -> str:
    if doc is not None and doc.get("kind") == "neuron" and doc["attrs"].get("model") == model:
        return str(doc["attrs"].get("source_kind", model))
    if model == "lmh":
        p = params
        lif = (not np.any(p["mu_d"]) and not np.any(p["mu_s"]) and np.all(p["lam_d"] == 1))
        return "lif" if lif else "lmh"
    return "lmht"


def metadata_ops(prog) -> dict:
    """{op name: op dict} of the file's ``deploy`` metadata ({} when it has none)."""
    try:
        return {o["name"]: o for o in json.loads(prog.metadata[META_DEPLOY])["ops"]}
    except (KeyError, TypeError, ValueError):
        return {}


def _mark_split_synapses(ops: list) -> None:
    """A two-input ``Scale(1)`` summing two synapses of the same input and kind is the fold's
    split synapse (``<s>_hi`` + ``<s>_lo``, :func:`lmh_deploy.graph.fold._round_synapse`): mark
    the add ``split`` (inputs ordered hi, lo: the part with the larger max |w|; the float32 sum
    is commutative) so every runtime evaluates it as the DeployGraph does."""
    by = {o.name: o for o in ops}
    for o in ops:
        if o.kind != "add" or len(o.inputs) != 2:
            continue
        a, c = (by.get(i) for i in o.inputs)
        if not (a is not None and c is not None and a.kind == c.kind == "synapse"
                and a.inputs == c.inputs and a.attrs == c.attrs
                and np.shape(a.arrays["weight"]) == np.shape(c.arrays["weight"])):
            continue
        if np.max(np.abs(c.arrays["weight"])) > np.max(np.abs(a.arrays["weight"])):
            a, c = c, a
        o.inputs = (a.name, c.name)
        o.attrs = dict(o.attrs, split=True)
        a.attrs, c.attrs = dict(a.attrs, part="hi"), dict(c.attrs, part="lo")


def _graph(prog, ops: list, output: str) -> DeployGraph:
    _mark_split_synapses(ops)
    md = prog.metadata
    t = int(md.get("trained_timesteps", md.get("timesteps", 1)))
    q, b = md.get("input_quantum"), md.get("input_bound")
    if q is None or b is None:
        raise NirGraphError("this NIR file has no input_quantum / input_bound metadata: it was not "
                            "written by lmh-export --format nir; run it with --runtime nir or "
                            "nir-literal")
    shape = prog.nodes[prog.inputs[0]].out_shape
    k = prog.nodes[prog.outputs[0]].out_shape
    return DeployGraph(ops=ops, output=output, timesteps=t, input_shape=tuple(shape),
                       num_classes=int(np.prod(k)), input_quantum=float(q), input_bound=float(b),
                       meta={"from_nir": True, "form": prog.form,
                             **({"input_norm": norm} if (norm := _input_norm(md)) else {})})


def _input_norm(md: dict) -> dict | None:
    """The normalization folded into the first layer (metadata ``input_norm``, JSON), or None."""
    raw = md.get("input_norm")
    raw = raw.decode() if isinstance(raw, bytes) else raw
    return json.loads(raw) if isinstance(raw, str) and raw else None


def _stateless_op(prog, n: str, name: str, srcs: list) -> DeployOp:
    node = prog.nodes[n]
    p, k = node.params, node.kind
    need = 2 if (k == "Scale" and len(srcs) == 2) else 1
    if len(srcs) != need:
        raise NirGraphError(f"node {n!r}: a {k} with {len(srcs)} inputs; a DeployGraph op reads "
                            f"one (two for a residual add)")
    if k in ("Affine", "Linear"):
        return DeployOp(name, "synapse", tuple(srcs), {"weight": p["weight"], "bias": p["bias"]},
                        {"op": "linear"})
    if k == "Conv2d":
        return DeployOp(name, "synapse", tuple(srcs), {"weight": p["weight"], "bias": p["bias"]},
                        {"op": "conv", "stride": p["stride"], "padding": p["padding"]})
    if k == "SumPool2d":
        return DeployOp(name, "sumpool", tuple(srcs), attrs={"kernel": p["kernel"]})
    if k == "Flatten":
        if node.out_shape is None or len(node.out_shape) != 1:
            raise NirGraphError(f"node {n!r}: only a full per-sample Flatten is a DeployGraph op")
        return DeployOp(name, "flatten", tuple(srcs))
    if k == "Scale" and len(srcs) == 2:
        if not np.all(p["scale64"] == 1):
            raise NirGraphError(f"node {n!r}: a two-input Scale is a residual add only with scale "
                                f"1")
        return DeployOp(name, "add", tuple(srcs))
    if k == "Scale":
        f = _scalar(p["scale64"], n, "a shortcut Scale")
        if not np.all(p["scale64"] == np.float64(f)):
            raise NirGraphError(f"node {n!r}: a shortcut Scale must be a float32 value")
        return DeployOp(name, "scale", tuple(srcs), {"factor": np.asarray(f, np.float32)})
    raise NirGraphError(f"node {n!r}: a {k} outside a recognised LM-H / multi-level neuron "
                        f"cluster is not a DeployGraph op (Lava cannot build it); run this file "
                        f"with --runtime nir or nir-literal")


def cluster_neuron_op(prog, f, name: str, src: str, doc: dict | None) -> DeployOp:
    """The ``neuron`` op of the recognised cluster ``f`` (:class:`~lmh_deploy.nir.match.Fused`)
    reading value ``src``: its constants as [1, C] tables, theta, levels, v0 (``doc``: the
    metadata op of that name, used only for the documentary ``source_kind``)."""
    params = {k: _per_channel(v, f.entry) for k, v in f.params.items()}
    if f.model == "lmh":
        if np.any(f.v0[0]):
            raise NirGraphError(f"node {f.entry!r}: a dendrite with v0 != 0 is not a DeployGraph "
                                f"neuron (v_D(0) = 0); run this file with --runtime nir")
        v0 = _scalar(f.v0[1], f.entry, "the soma's v0")
    else:
        v0 = _scalar(f.v0[0], f.entry, "the membrane's v0")
    attrs = {"model": f.model, "source_kind": _source_kind(f.model, params, doc),
             "levels": int(f.levels), "theta": np.float32(f.theta), "v0": v0,
             "timesteps": int(prog.metadata.get("trained_timesteps", 1))}
    return DeployOp(name, "neuron", (src,), params, attrs)


def _from_temporal(prog, doc: dict) -> DeployGraph:
    in_cluster = {n: f for f in prog.fused for n in f.nodes}
    value: dict = {}
    ops: list = []
    used: set = set()
    output = None

    def op_name(n):
        tag = prog.nodes[n].meta.get("op")
        name = str(tag) if tag is not None and str(tag) not in used else n
        used.add(name)
        return name

    for n in prog.order:
        node = prog.nodes[n]
        f = in_cluster.get(n)
        edges = prog.in_edges(n)
        if f is not None:
            if n != f.entry:
                continue
            ext = [a for _, a in edges if a not in f.nodes]
            if len(ext) != 1:
                raise NirGraphError(f"node {n!r}: a neuron fed by {len(ext)} edges; a DeployGraph "
                                    f"neuron reads one current (write the sum as an add)")
            name = op_name(f.spikes)
            ops.append(cluster_neuron_op(prog, f, name, value[ext[0]], doc.get(name)))
            value[f.spikes] = name
            continue
        bad = [a for i, a in edges if i in prog.delayed]
        if bad:
            raise NirGraphError(f"node {n!r}: a cycle that is not a recognised neuron cluster is "
                                f"not a DeployGraph; run this file with --runtime nir or "
                                f"nir-literal")
        if node.kind == "Input":
            value[n] = "input"
            continue
        srcs = [value[a] for _, a in edges]
        if node.kind == "Output":
            output = srcs[0]
            continue
        name = op_name(n)
        ops.append(_stateless_op(prog, n, name, srcs))
        value[n] = name
    return _graph(prog, ops, output)


# ---------------------------------------------------------------------------------------------
# unrolled form
# ---------------------------------------------------------------------------------------------


def _tag(node) -> tuple:
    m = node.meta
    return (str(m.get("op", "")), str(m.get("role", "")), int(m.get("step", -1)),
            int(m.get("level", 0)))


def _from_unrolled(prog, doc: dict) -> DeployGraph:
    by_op: dict = {}
    first: dict = {}
    for i, n in enumerate(prog.order):
        node = prog.nodes[n]
        if node.kind in ("Input", "Output"):
            continue
        op, role, step, level = _tag(node)
        if not op or not role:
            raise NirGraphError(f"node {n!r}: an unrolled node without op/role tags; run this "
                                f"file with --runtime nir or nir-literal")
        by_op.setdefault(op, {})[(role, step, level)] = n
        first.setdefault(op, i)
    T = len(prog.inputs)
    value_of = {n: "input" for n in prog.inputs}
    for op, roles in by_op.items():
        for n in roles.values():
            value_of[n] = op

    def src_op(n):
        srcs = [a for _, a in prog.in_edges(n)]
        return [value_of[a] for a in srcs]

    ops: list = []
    for op in sorted(by_op, key=first.get):
        roles = by_op[op]
        kinds = {r for r, _, _ in roles}
        if {"dendrite_init", "soma_init"} <= kinds or "membrane_init" in kinds:
            ops.append(_unrolled_neuron(prog, op, roles, T, src_op, doc.get(op)))
            continue
        n0 = [n for (r, s, _), n in roles.items() if s == 0]
        if len(n0) != 1:
            raise NirGraphError(f"node {sorted(roles.values())[0]!r}: op {op!r} has "
                                f"{len(n0)} nodes at step 0; not a file of lmh-export")
        ops.append(_stateless_op(prog, n0[0], op, src_op(n0[0])))
    out = src_op(prog.outputs[0])[0]
    return _graph(prog, ops, out)


def _unrolled_neuron(prog, op, roles, T, src_op, doc):
    def node(role, step=-1, level=0):
        n = roles.get((role, step, level))
        if n is None:
            raise NirGraphError(f"op {op!r}: node with role {role!r} at step {step} is missing")
        return n

    def val(n, key):
        return prog.nodes[n].params[key]

    def table(role):
        rows = [_per_channel(val(node(role, t), "scale"), node(role, t)) for t in range(T)]
        width = max(r.shape[1] for r in rows)
        rows = np.concatenate([np.broadcast_to(r, (1, width)) for r in rows])
        return rows[:1].copy() if np.all(rows == rows[:1]) else rows

    lmh = ("dendrite_init", -1, 0) in roles
    init = node("soma_init" if lmh else "membrane_init")
    thr_nodes = sorted((lv, n) for (r, s, lv), n in roles.items()
                       if s == 0 and prog.nodes[n].kind == "Threshold")
    if not thr_nodes:
        raise NirGraphError(f"op {op!r}: a neuron with no Threshold node (fewer than one level)")
    levels = len(thr_nodes)
    thr1 = _scalar(val(thr_nodes[0][1], "threshold"), thr_nodes[0][1], "a threshold")
    theta = np.nextafter(thr1, np.float32(np.inf), dtype=np.float32)
    if not theta > 0:
        raise NirGraphError(f"node {thr_nodes[0][1]!r}: neuron threshold theta = {theta} <= 0")
    if lmh:
        params = {k: table(k) for k in ("mu_d", "mu_s", "lam_s", "lam_d")}
        if np.any(val(node("dendrite_init"), "v0")):
            raise NirGraphError(f"node {node('dendrite_init')!r}: dendrite v0 must be 0")
    else:
        params = {"lam": table("lam")}
    v0 = _scalar(val(init, "v0"), init, "v0")
    arrays = dict(params)
    omega_roles = {r for r, _, _ in roles if r.startswith("omega")}
    if omega_roles:
        w = len({r.split("_")[0] for r in omega_roles})
        om = np.zeros((w, w), np.float32)
        for i in range(w):
            for j in range(w):
                n = node(f"omega{i}_{j}", i)
                om[i, j] = _scalar(val(n, "scale"), n, "an Omega entry")
        arrays["omega"] = om
    src = src_op(node("dendrite_init" if lmh else "membrane_init"))[0]
    attrs = {"model": "lmh" if lmh else "lmht", "levels": levels, "theta": theta, "v0": v0,
             "timesteps": int(prog.metadata.get("trained_timesteps", T))}
    attrs["source_kind"] = _source_kind(attrs["model"], params, doc)
    return DeployOp(op, "neuron", (src,), arrays, attrs)


def _same_as_export(prog, graph: DeployGraph):
    """Export ``graph`` (unrolled, the file's T) and compare it with the file by node tags."""
    from lmh_deploy.nir.program import _node_from_nir
    from lmh_deploy.nir.write import export_nir

    g = export_nir(graph, form="unrolled", timesteps=len(prog.inputs))

    mine = {}
    for name, nd in g.nodes.items():
        node = _node_from_nir(name, nd)
        mine[_tag(node)] = (name, node)
    theirs = {_tag(nd): n for n, nd in prog.nodes.items()}
    for k, n in theirs.items():
        if k not in mine:
            raise NirGraphError(f"node {n!r}: not part of the graph its constants describe; run "
                                f"this file with --runtime nir or nir-literal")
        ref = mine[k][1]
        node = prog.nodes[n]
        if ref.kind != node.kind or any(
                not np.array_equal(np.asarray(ref.params[p]), np.asarray(node.params[p]))
                for p in ref.params if p not in ("shape", "scale")) or any(
                p not in node.params for p in ref.params):
            raise NirGraphError(f"node {n!r}: differs from the neuron / synapse that the other "
                                f"steps' constants describe (an unrolled file edited at some "
                                f"steps only); run it with --runtime nir or nir-literal")
    if len(mine) != len(theirs):
        missing = sorted(set(mine) - set(theirs))[0]
        raise NirGraphError(f"node {mine[missing][0]!r} ({missing[1]} of {missing[0]}) is missing "
                            f"from the file")
    name_key = {n: _tag(nd) for n, nd in prog.nodes.items()}
    mine_names = {nm: k for k, (nm, _) in mine.items()}
    want = {(mine_names[str(a)], mine_names[str(b)]) for a, b in g.edges}
    have = {(name_key[a], name_key[b]) for a, b in prog.edges}
    if want != have:
        a, b = sorted(want ^ have)[0]
        raise NirGraphError(f"edge {a[0]}.{a[1]} -> {b[0]}.{b[1]} differs from the graph the "
                            f"nodes' constants describe; run this file with --runtime nir")


def deploy_graph_from_nodes(prog) -> DeployGraph:
    """The DeployGraph the nodes of the checked program ``prog`` describe (module docstring).
    Raises NirGraphError (one line, naming the node) where they describe none."""
    doc = metadata_ops(prog)
    if prog.form == "unrolled" or len(prog.inputs) > 1:
        graph = _from_unrolled(prog, doc)
        _same_as_export(prog, graph)
    else:
        graph = _from_temporal(prog, doc)
    return graph
