"""lmh-nir/2: the file's literal reading is the model (issue 12).

* ``nir-literal`` (every node by the generic evaluator, no cluster recognition, one float32
  rounding per node) against the reference interpreter: bit-identical on the unrolled form; on
  the temporal form every differing spike is checked to sit within a few float32 ulps of a
  threshold (or to follow an earlier such flip in the same sample) and the count is reported.
* An independent evaluator written below from the convention text alone (``nir.read`` + numpy,
  float64; it imports nothing of lmh_deploy.nir* or any runtime) agrees with ``nir-literal``.
* The LIF t = 0 arithmetic by hand; an edited file (sn0 at theta' = 2 theta) runs as its nodes
  say in every NIR runtime; neuron constants round-trip through the nodes alone.
"""
import warnings

import numpy as np
import pytest
import torch

nir = pytest.importorskip("nir")

from _deploy_models import quick_train  # noqa: E402
from lmh_deploy.data.digits import digits_arrays  # noqa: E402
from lmh_deploy.errors import ExportFormatError, LmhError  # noqa: E402
from lmh_deploy.nir.write import export_nir, write_nir  # noqa: E402
from lmh_deploy.graph.fold import fold  # noqa: E402
from lmh_deploy.graph.interpret import run_reference  # noqa: E402
from lmh_deploy.models import build_model, default_config  # noqa: E402
from lmh_deploy.nir.run_literal import run_literal  # noqa: E402

F32 = np.float32

# =============================================================================================
# The independent evaluator: the convention text, nir.read and numpy (float64). Nothing else.
# =============================================================================================


def _plain(v):
    if isinstance(v, bytes):
        return v.decode()
    if isinstance(v, np.ndarray) and v.ndim == 0:
        return _plain(v.item())
    return v


def _components(nodes, edges):
    """Strongly connected components (Kosaraju, iterative)."""
    succ = {n: [] for n in nodes}
    pred = {n: [] for n in nodes}
    for a, b in edges:
        succ[a].append(b)
        pred[b].append(a)
    seen, finish = set(), []
    for root in nodes:
        if root in seen:
            continue
        seen.add(root)
        stack = [(root, iter(succ[root]))]
        while stack:
            v, it = stack[-1]
            w = next(it, None)
            if w is None:
                stack.pop()
                finish.append(v)
            elif w not in seen:
                seen.add(w)
                stack.append((w, iter(succ[w])))
    comps, done = [], set()
    for root in reversed(finish):
        if root in done:
            continue
        comp, todo = set(), [root]
        done.add(root)
        while todo:
            v = todo.pop()
            comp.add(v)
            for w in pred[v]:
                if w not in done:
                    done.add(w)
                    todo.append(w)
        comps.append(comp)
    return comps


def _delayed_edges(names, edges):
    """"an edge from inside a strongly connected component into its unique entry node carries a
    one-step delay (recursively)" -- entries counted over the edges not yet delayed."""
    delayed = set()

    def solve(sub, idx):
        for comp in _components(sorted(sub), [edges[i] for i in idx]):
            internal = [i for i in idx if edges[i][0] in comp and edges[i][1] in comp]
            if not internal:
                continue
            entries = {b for i, (a, b) in enumerate(edges)
                       if b in comp and a not in comp and i not in delayed}
            assert len(entries) == 1, f"ambiguous cycle {sorted(comp)[:3]}"
            entry = entries.pop()
            delayed.update(i for i in internal if edges[i][1] == entry)
            solve(comp, [i for i in internal if i not in delayed])

    solve(set(names), list(range(len(edges))))
    return delayed


def _conv64(x, w, b, stride, pad):
    x = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    o, c, k, _ = w.shape
    hout = (x.shape[2] - k) // stride + 1
    wout = (x.shape[3] - k) // stride + 1
    y = np.zeros((x.shape[0], o, hout, wout))
    for i in range(k):
        for j in range(k):
            patch = x[:, :, i:i + stride * hout:stride, j:j + stride * wout:stride]
            y += np.einsum("bchw,oc->bohw", patch, w[:, :, i, j])
    return y + b.reshape(1, -1, 1, 1)


def independent_run(path, x, timesteps=None):
    """Evaluate the NIR file at ``path`` on ``x`` [B, ...] by the lmh-nir/2 text, float64.

    Returns (per-step outputs [T, B, K], {Threshold node: [T, B, ...] outputs})."""
    g = nir.read(path, type_check=False)
    meta = {k: _plain(v) for k, v in (g.metadata or {}).items()}
    nodes = dict(g.nodes)
    names = sorted(nodes)
    edges = [(str(a), str(b)) for a, b in g.edges]
    delayed = _delayed_edges(names, edges)
    kind = {n: type(nodes[n]).__name__ for n in names}
    ins = {n: [(i, a) for i, (a, b) in enumerate(edges) if b == n] for n in names}
    indeg = {n: sum(1 for i, _ in ins[n] if i not in delayed) for n in names}
    succ = {n: [b for i, (a, b) in enumerate(edges) if a == n and i not in delayed] for n in names}
    order, ready = [], sorted(n for n in names if indeg[n] == 0)
    while ready:
        n = ready.pop(0)
        order.append(n)
        for m in succ[n]:
            indeg[m] -= 1
            if indeg[m] == 0:
                ready.append(m)
    assert len(order) == len(names)
    q, bound = float(meta["input_quantum"]), float(meta["input_bound"])
    xq = np.clip(np.round(np.asarray(x, np.float64) / q), -bound / q, bound / q) * q
    step_of = {n: int(_plain((nodes[n].metadata or {}).get("step", 0))) for n in names}

    def node_v0(n):
        return np.asarray((nodes[n].metadata or {}).get("v0", 0.0), np.float64)

    def evaluate(n, u, state):
        nd = nodes[n]
        k = kind[n]
        if k == "Affine":
            return u @ np.asarray(nd.weight, np.float64).T + np.asarray(nd.bias, np.float64)
        if k == "Linear":
            return u @ np.asarray(nd.weight, np.float64).T
        if k == "Scale":
            return u * np.asarray(nd.scale, np.float64)
        if k == "Conv2d":
            return _conv64(u, np.asarray(nd.weight, np.float64), np.asarray(nd.bias, np.float64),
                           int(np.atleast_1d(nd.stride)[0]), int(np.atleast_1d(nd.padding)[0]))
        if k == "SumPool2d":
            s = int(np.atleast_1d(nd.kernel_size)[0])
            b_, c, h, w = u.shape
            return u.reshape(b_, c, h // s, s, w // s, s).sum((3, 5))
        if k == "Flatten":
            return u.reshape(u.shape[0], -1)
        if k == "Threshold":
            return (u > np.asarray(nd.threshold, np.float64)).astype(np.float64)
        if k == "I":
            return state + np.asarray(nd.r, np.float64) * u
        if k == "Output":
            return u
        raise AssertionError(f"primitive {k} outside the convention")

    def evaluate_all(inputs, prev, state, initial=False):
        cur = {}
        for n in order:
            if kind[n] == "Input":
                cur[n] = inputs(n)
                continue
            if initial and kind[n] == "I":
                cur[n] = state[n]
                continue
            u = 0.0
            for i, a in ins[n]:
                u = u + (prev.get(a, 0.0) if i in delayed else cur[a])
            cur[n] = evaluate(n, u, state.get(n))
            if kind[n] == "I":
                state[n] = cur[n]
        return cur

    batch = len(x)
    state = {n: np.zeros((batch,) + np.shape(nodes[n].r)) + node_v0(n)
             for n in names if kind[n] == "I"}
    first_prev = {} if int(meta.get("format_version", 2)) < 2 else None
    thr = [n for n in names if kind[n] == "Threshold"]
    if meta.get("form") == "unrolled":
        cur = evaluate_all(lambda n: xq, {}, state)
        outs = sorted((step_of[n], n) for n in names if kind[n] == "Output")
        tsteps = sorted({step_of[n] for n in thr})
        per = {n: cur[n][None] for n in thr}
        return np.stack([cur[n] for _, n in outs]), per, tsteps
    # temporal: the t = -1 evaluation (Input 0, I v0, delayed edges 0), then T steps
    zero_in = {n: np.zeros_like(xq) for n in names if kind[n] == "Input"}
    prev = first_prev if first_prev is not None else evaluate_all(
        lambda n: zero_in[n], {}, dict(state), initial=True)
    outs, per = [], {n: [] for n in thr}
    out_node = next(n for n in names if kind[n] == "Output")
    for _ in range(timesteps or int(meta["timesteps"])):
        prev = evaluate_all(lambda n: xq, prev, state)
        outs.append(prev[out_node])
        for n in thr:
            per[n].append(prev[n])
    return np.stack(outs), {n: np.stack(v) for n, v in per.items()}, None


# =============================================================================================
# helpers
# =============================================================================================


def _ulp(a):
    a = np.abs(np.asarray(a, F32))
    return np.nextafter(a, F32(np.inf), dtype=F32) - a


def _node_meta(path):
    g = nir.read(path, type_check=False)
    return {n: {k: _plain(v) for k, v in (node.metadata or {}).items()}
            for n, node in g.nodes.items()}, g


def near_threshold_report(path, ref, lit, trace, ulps=8):
    """Check every spike where ``lit`` differs from ``ref``: the literal membrane at that spike
    lies within ``ulps`` float32 ulps of one of the layer's thresholds, or an earlier
    (t, layer) spike of the same sample already differed (a consequence). Returns
    (differing spikes, near-threshold ones, samples affected)."""
    meta, g = _node_meta(path)
    layers = list(ref.spikes)
    diffs = near = 0
    first = {}
    cases = []
    for li, layer in enumerate(layers):
        d = np.argwhere(ref.spikes[layer] != lit.spikes[layer])
        if not len(d):
            continue
        thr_nodes = [n for n in trace if meta[n].get("op") == layer]
        for idx in d:
            t, b = int(idx[0]), int(idx[1])
            rest = tuple(int(v) for v in idx[2:])
            ok = False
            for n in thr_nodes:
                step = int(meta[n].get("step", t))
                if step != t:
                    continue
                u, _ = trace[n]
                row = 0 if u.shape[0] == 1 else t
                m = F32(u[(row, b) + rest])
                th = F32(np.asarray(g.nodes[n].threshold)[rest])
                ok |= abs(float(m) - float(th)) <= ulps * float(_ulp(th))
            cases.append(((t, li), b, ok))
    for (t, li), b, ok in sorted(cases):
        diffs += 1
        near += ok
        if b not in first:
            first[b] = ok
            assert ok, f"{path}: sample {b} first differs at step {t}, layer {layers[li]}, " \
                       f"with a membrane farther than {ulps} ulps from every threshold"
    return diffs, near, len(first)


def _train(arch, kind, extra, data, steps=20, seed=0):
    return quick_train(arch, kind, extra, data, steps, seed)


#: label -> (neuron kind, extra config); hybrid-style thetas are not powers of two
FAMILIES = {
    "lif": ("lif", {}),
    "lmh": ("lmh", {}),
    "lmh-hybrid": ("lmh", {"theta": 0.9}),
    "lmh-radical": ("lmh-radical", {}),
    "lmht-L1": ("lmht", {"levels": 1}),
    "lmht-L2": ("lmht", {"levels": 2}),
    "lmht-L4-hybrid": ("lmht", {"levels": 4, "theta": 1.1, "v0_frac": 0.5}),
    "mht-L1": ("lmht", {"levels": 1, "learn_omega": False}),
    "mht-L2": ("lmht", {"levels": 2, "learn_omega": False}),
    "mht-L4-hybrid": ("lmht", {"levels": 4, "learn_omega": False, "theta": 1.1,
                               "v0_frac": 0.5}),
}


@pytest.fixture(scope="module")
def digits():
    return digits_arrays()


def check_file(graph, path, form, x, x_indep):
    """The acceptance checks on one written file; returns the near-threshold report."""
    ref = run_reference(graph, x)
    trace: dict = {}
    lit = run_literal(path, x, trace=trace)
    if form == "unrolled":
        for k in ref.spikes:
            np.testing.assert_array_equal(lit.spikes[k], ref.spikes[k], err_msg=k)
        np.testing.assert_array_equal(lit.logits, ref.logits)
        report = (0, 0, 0)
    else:
        report = near_threshold_report(path, ref, lit, trace)
    # the independent evaluator vs nir-literal (float32 and float64), on a few samples
    n = len(x_indep)
    logits, thr, _ = independent_run(path, x_indep)
    lit64_trace: dict = {}
    lit64 = run_literal(path, x_indep, precision="float64", trace=lit64_trace)
    g = nir.read(path, type_check=False)
    for node, out in thr.items():
        th = np.asarray(g.nodes[node].threshold, F32)
        # float64 against float64: equal unless the membrane is at the threshold itself
        u64, y64 = lit64_trace[node]
        assert not np.any((out != y64) & (np.abs(u64 - th) > 1e-9)), node
        # float64 against float32 rounding per node: equal away from the threshold
        u32, y32 = trace[node][0][:, :n], trace[node][1][:, :n]
        near = np.abs(u32 - th.astype(np.float64)) <= 8 * _ulp(th)
        bad = (out != y32) & ~near
        assert not bad.any(), f"{node}: independent evaluator differs away from the threshold"
    np.testing.assert_allclose(logits, lit64.logits, rtol=0, atol=1e-9 * max(
        1.0, float(np.abs(logits).max())))
    return report


# =============================================================================================
# tests
# =============================================================================================


def _lif_graph(version):
    """One LIF neuron written by the convention: x -> M (I, v0 = 0.5), M -> Scale(lam-1) -> M,
    M -> Threshold(nextafter(1)) -> spikes -> Scale(-lam*theta) -> M;  lam = 0.5, theta = 1."""
    one = np.ones(1, F32)
    nodes = {"a_in": nir.Input(input_type={"input": np.array([1])}),
             "b_mem": nir.I(r=one, metadata={"v0": np.full(1, 0.5, F32)}),
             "c_decay": nir.Scale(scale=np.full(1, -0.5)),
             "d_spk": nir.Threshold(threshold=np.full(1, np.nextafter(F32(1), F32(-np.inf)))),
             "e_reset": nir.Scale(scale=np.full(1, -0.5)),
             "f_out": nir.Output(output_type={"output": np.array([1])})}
    edges = [("a_in", "b_mem"), ("b_mem", "c_decay"), ("c_decay", "b_mem"), ("b_mem", "d_spk"),
             ("d_spk", "e_reset"), ("e_reset", "b_mem"), ("d_spk", "f_out")]
    meta = {"format": "lmh-nir", "format_version": version, "form": "temporal", "timesteps": 6,
            "input_quantum": 2.0 ** -24, "input_bound": 4.0}
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata=meta, type_check=False)


def test_lif_initial_state_is_decayed_at_t0(tmp_path):
    """lambda = 0.5, theta = 1, v(0) = 0.5, input 0.6 for 6 steps. By hand (model):
    m0 = 0.5*0.5 + 0.6 = 0.85 (no spike), m1 = 0.425 + 0.6 = 1.025 (spike, v = 0.025),
    m2 = 0.6125, m3 = 0.90625, m4 = 1.053125 (spike), m5 = 0.6265625 -> [0,1,0,0,1,0].
    lmh-nir/1's literal reading (delayed edges 0 at t = 0) starts at m0 = 1.1: [1,0,0,1,0,0]."""
    from lmh_deploy.nir.run_numpy import run_nir

    x = np.full((1, 1), 0.6, F32)
    p2, p1 = tmp_path / "lif2.nir", tmp_path / "lif1.nir"
    nir.write(p2, _lif_graph(2))
    nir.write(p1, _lif_graph(1))
    xq = F32(np.round(F32(0.6) * F32(2.0 ** 24)) / F32(2.0 ** 24))
    assert xq == F32(0.6)
    want = np.array([0, 1, 0, 0, 1, 0], F32)
    m_hand = [0.85, 1.025, 0.6125, 0.90625, 1.053125, 0.6265625]
    for precision in ("float32", "float64"):
        trace: dict = {}
        run = run_literal(p2, x, precision=precision, trace=trace)
        np.testing.assert_array_equal(run.logits[:, 0, 0], want)
        np.testing.assert_allclose(trace["d_spk"][0][:, 0, 0], m_hand, rtol=1e-6)
    np.testing.assert_array_equal(run_nir(p2, x).logits[:, 0, 0], want)
    logits, _, _ = independent_run(p2, x)
    np.testing.assert_array_equal(logits[:, 0, 0], want)
    # the old convention keeps its own literal reading, with a one-line warning
    with pytest.warns(UserWarning, match=r"lmh-nir/1.*t = 0"):
        old = run_literal(p1, x)
    np.testing.assert_array_equal(old.logits[:, 0, 0], np.array([1, 0, 0, 1, 0, 0], F32))
    logits, _, _ = independent_run(p1, x)
    np.testing.assert_array_equal(logits[:, 0, 0], np.array([1, 0, 0, 1, 0, 0], F32))


def test_literal_float64_option_and_bad_precision(tmp_path):
    p = tmp_path / "lif.nir"
    nir.write(p, _lif_graph(2))
    run = run_literal(p, np.full((1, 1), 0.6, F32), precision="float64")
    assert run.logits.dtype == np.float64
    with pytest.raises(LmhError, match="float32.*float64"):
        run_literal(p, np.full((1, 1), 0.6, F32), precision="half")


@pytest.mark.parametrize("family", list(FAMILIES))
def test_mlp_digits_literal_reading_is_the_model(family, digits, tmp_path):
    kind, extra = FAMILIES[family]
    graph = fold(_train("mlp", kind, extra, digits))
    x = digits[2]
    forms = ["unrolled"] + (["temporal"] if graph.time_invariant else [])
    if not graph.time_invariant:
        with pytest.raises(ExportFormatError, match="unrolled"):
            export_nir(graph, form="temporal")
    for form in forms:
        path = write_nir(graph, tmp_path / f"{family}-{form}.nir", form=form)
        diffs, near, samples = check_file(graph, path, form, x, x[:24])
        print(f"\nmlp {family} {form}: {diffs} differing spikes ({near} near a threshold, "
              f"{samples} samples) of {sum(v.size for v in run_reference(graph, x).spikes.values())}")
        assert diffs == 0, f"target 0 on digits models: {diffs} differing spikes"


@pytest.mark.slow
@pytest.mark.parametrize("family", list(FAMILIES))
def test_cnn_digits_literal_reading_is_the_model(family, digits, tmp_path):
    kind, extra = FAMILIES[family]
    graph = fold(_train("cnn", kind, extra, digits, steps=10))
    x = digits[2][:120]
    forms = ["unrolled"] + (["temporal"] if graph.time_invariant else [])
    for form in forms:
        path = write_nir(graph, tmp_path / f"{family}-{form}.nir", form=form)
        diffs, near, samples = check_file(graph, path, form, x, x[:6])
        print(f"\ncnn {family} {form}: {diffs} differing spikes ({near} near a threshold, "
              f"{samples} samples)")
        assert diffs == 0, f"target 0 on digits models: {diffs} differing spikes"


@pytest.mark.slow
@pytest.mark.parametrize("family", ["lmh", "lmht-L2", "mht-L4-hybrid"])
def test_resnet20_random_literal_reading_is_the_model(family, tmp_path):
    from _deploy_models import grid_inputs, random_model

    kind, extra = FAMILIES[family]
    extra = dict(extra)
    levels = extra.pop("levels", 2)
    graph = fold(random_model("resnet20", kind, 2, input_shape=(3, 8, 8), levels=levels,
                              **extra))
    x = grid_inputs(8, (3, 8, 8), seed=1)
    forms = ["unrolled"] + (["temporal"] if graph.time_invariant else [])
    for form in forms:
        path = write_nir(graph, tmp_path / f"r20-{family}-{form}.nir", form=form)
        diffs, near, samples = check_file(graph, path, form, x, x[:2])
        print(f"\nresnet20 {family} {form}: {diffs} differing spikes ({near} near a threshold, "
              f"{samples} samples)")


# ---------------------------------------------------------------------------------------------
# the graph is the truth: an edited file runs as its nodes say, in every NIR runtime
# ---------------------------------------------------------------------------------------------


def _edit_sn0(path, out, theta):
    """sn0's Threshold at 2 theta and both reset Scales doubled: a valid neuron, theta' = 2 theta."""
    from lmh_deploy.nir.convention import binary_threshold

    g = nir.read(path, type_check=False)
    done = set()
    for node in g.nodes.values():
        m = {k: _plain(v) for k, v in (node.metadata or {}).items()}
        if m.get("op") != "sn0":
            continue
        if m["role"] == "spikes":
            node.threshold = np.full_like(node.threshold, binary_threshold(2 * theta))
        elif m["role"] in ("soma_reset", "dendrite_reset"):
            node.scale = np.asarray(node.scale, np.float64) * 2
        else:
            continue
        done.add(m["role"])
    assert done == {"spikes", "soma_reset", "dendrite_reset"}
    nir.write(out, g)
    return out


@pytest.mark.lava
@pytest.mark.timeout(400, method="signal")
def test_edited_file_runs_as_its_nodes_say_in_every_runtime(digits, tmp_path):
    import copy

    pytest.importorskip("lava", reason="Lava is installed by scripts/setup.sh")
    from lmh_deploy.nir.read import read_deploy_graph
    from lmh_deploy.lava.nir import run_lava_nir
    from lmh_deploy.nir.run_numpy import run_nir
    from lmh_deploy.nir.run_torch import run_nir_torch

    graph = fold(_train("mlp", "lmh", {}, digits))
    theta = graph.neuron("sn0").theta
    path = write_nir(graph, tmp_path / "m.nir", form="temporal")
    edited = _edit_sn0(path, tmp_path / "edited.nir", theta)
    x, y = digits[2][:40], digits[3][:40]
    want_graph = copy.deepcopy(graph)
    want_graph.op("sn0").attrs["theta"] = np.float32(2 * theta)
    want = run_reference(want_graph, x)
    before = run_reference(graph, x)
    with pytest.warns(UserWarning, match=r"disagree.*sn0: theta"):
        rebuilt = read_deploy_graph(edited)
    assert rebuilt.neuron("sn0").theta == F32(2 * theta)
    runs = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        runs["nir"] = run_nir(edited, x)
        runs["nir-torch"] = run_nir_torch(edited, x)
        runs["nir-literal"] = run_literal(edited, x)
        runs["lava"] = run_lava_nir(edited, x, timeout_s=120)
    acc = {k: float((r.logits.mean(0).argmax(1) == y).mean()) for k, r in runs.items()}
    acc["unedited"] = float((before.logits.mean(0).argmax(1) == y).mean())
    print(f"\nedited sn0 (theta' = 2 theta) accuracy on 40 digits: {acc}")
    for name, run in runs.items():
        for k in want.spikes:
            np.testing.assert_array_equal(run.spikes[k], want.spikes[k], err_msg=f"{name} {k}")
    assert not np.array_equal(want.spikes["sn0"], before.spikes["sn0"])


def test_cluster_runtimes_warn_when_nodes_disagree_with_metadata(digits, tmp_path):
    from lmh_deploy.nir.run_numpy import load_nir
    from lmh_deploy.nir.run_torch import run_nir_torch

    graph = fold(_train("mlp", "lif", {}, digits, steps=5))
    path = write_nir(graph, tmp_path / "m.nir", form="temporal")
    edited = _edit_sn0(path, tmp_path / "edited.nir", graph.neuron("sn0").theta)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_nir(path)  # the unedited file: no warning
    msg = r"nodes disagree with its 'deploy' metadata \(sn0: theta 2 in the nodes, 1 in the metadata\)"
    with pytest.warns(UserWarning, match=msg):
        prog = load_nir(edited)
    assert {f.theta for f in prog.fused} == {F32(1), F32(2)}
    with pytest.warns(UserWarning, match=msg):
        run_nir_torch(edited, digits[2][:4])


# ---------------------------------------------------------------------------------------------
# every value training accepts round-trips through the nodes alone
# ---------------------------------------------------------------------------------------------


def _extreme(model, seed=0):
    """Raw neuron parameters at +-30 (sigmoid -> exactly 1.0 / 0.0 in float32: lambda = 1.5 /
    0.5, mu = 0.5 / -0.5) mixed with random values, per channel / per step where they exist."""
    from lmh_deploy.neurons import LMHNeuron, LMHTNeuron

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for mod in model.modules():
            ps = [mod.x_mu_d, mod.x_mu_s, mod.x_lam_s, mod.x_lam_d] if isinstance(
                mod, LMHNeuron) else [mod.a] if isinstance(mod, LMHTNeuron) else []
            for p in ps:
                v = torch.randn(p.shape, generator=g)
                flat = v.view(-1)
                flat[0::3] = 30.0
                flat[1::3] = -30.0
                if p.dim() == 0:
                    v = torch.tensor(30.0 if torch.rand((), generator=g) > 0.5 else -30.0)
                p.copy_(v)
    return model.eval()


ROUND_TRIP = {
    "lmh-per-channel-ends": ("mlp", "lmh", {"per_channel": True}),
    "lmh-scalar-ends": ("cnn", "lmh", {}),
    "lif-decay-1.5": ("mlp", "lif", {"lif_decay": 1.5}),
    "lmh-radical-per-channel": ("cnn", "lmh-radical", {"per_channel": True}),
    "lmht-L4-hybrid-per-channel": ("cnn", "lmht", {"levels": 4, "theta": 1.1, "v0_frac": 0.5,
                                                   "per_channel": True}),
    "mht-L3-hybrid": ("mlp", "lmht", {"levels": 3, "theta": 0.9, "v0_frac": 0.5,
                                      "learn_omega": False}),
}


@pytest.mark.parametrize("case", list(ROUND_TRIP))
def test_every_trainable_value_round_trips_through_the_nodes(case, tmp_path):
    from _deploy_models import grid_inputs, random_model

    from lmh_deploy.nir.read import read_deploy_graph

    arch, kind, extra = ROUND_TRIP[case]
    extra = dict(extra)
    levels = extra.pop("levels", 2)
    model = _extreme(random_model(arch, kind, 3, levels=levels, **extra))
    graph = fold(model)
    vals = np.concatenate([np.ravel(a) for n in graph.neuron_names()
                           for k, a in graph.neuron(n).params.items()])
    if kind != "lmht":
        assert {0.5, 1.5} <= set(vals.tolist()) or kind == "lif"
    x = grid_inputs(4, (1, 8, 8), seed=2)
    ref = run_reference(graph, x)
    for form in ["unrolled"] + (["temporal"] if graph.time_invariant else []):
        path = write_nir(graph, tmp_path / f"{case}-{form}.nir", form=form)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # nodes and metadata agree
            back = read_deploy_graph(path)
        for n in graph.neuron_names():
            a, b = graph.neuron(n), back.neuron(n)
            assert (a.model, a.levels, a.theta, a.v0) == (b.model, b.levels, b.theta, b.v0), n
            for k in a.params:
                pa, pb = a.params[k], b.params[k]
                rows = max(pa.shape[0], pb.shape[0])
                np.testing.assert_array_equal(
                    np.broadcast_to(pa[np.minimum(np.arange(rows), pa.shape[0] - 1)],
                                    (rows, max(pa.shape[1], pb.shape[1]))),
                    np.broadcast_to(pb[np.minimum(np.arange(rows), pb.shape[0] - 1)],
                                    (rows, max(pa.shape[1], pb.shape[1]))), err_msg=f"{n} {k}")
            if a.omega is None:
                assert b.omega is None
            else:
                np.testing.assert_array_equal(a.omega, b.omega)
        again = run_reference(back, x)
        for k in ref.spikes:
            np.testing.assert_array_equal(again.spikes[k], ref.spikes[k], err_msg=k)
        lit = run_literal(path, x)
        if form == "unrolled":
            for k in ref.spikes:
                np.testing.assert_array_equal(lit.spikes[k], ref.spikes[k], err_msg=k)


def test_non_finite_neuron_parameters_are_refused(tmp_path):
    from _deploy_models import random_model

    from lmh_deploy.neurons import LMHNeuron

    model = random_model("mlp", "lmh", 2)
    graph = fold(model)
    next(m for m in model.modules() if isinstance(m, LMHNeuron)).x_lam_s.data.fill_(float("nan"))
    with pytest.raises(LmhError, match=r"sn0.*x_lam_s is not finite") as e:
        fold(model)
    assert "\n" not in str(e.value)
    graph.op("sn1").arrays["mu_d"][:] = np.inf
    with pytest.raises(LmhError, match=r"sn1.*mu_d.*not finite") as e:
        export_nir(graph, form="unrolled")
    assert "\n" not in str(e.value)


def test_invalid_nodes_are_one_line_errors_naming_the_node(tmp_path):
    from lmh_deploy.errors import NirGraphError
    from lmh_deploy.nir.program import load_program

    g = _lif_graph(2)
    g.nodes["e_reset"].scale = np.full(1, 0.5)  # -lam*theta = 0.5: theta = -1
    p = tmp_path / "neg.nir"
    nir.write(p, g)
    with pytest.raises(NirGraphError, match=r"'e_reset'.*theta.*<= 0"):
        load_program(p)
    g = _lif_graph(2)
    g.nodes["c_decay"].scale = np.full(1, np.nan)
    nir.write(p, g)
    with pytest.raises(NirGraphError, match=r"'c_decay'.*not finite"):
        load_program(p)


def test_lossy_lif_file_is_not_rebuilt_as_the_exact_model(digits, tmp_path):
    """A --lossy-lif file holds hard-reset nir.LIF nodes: the DeployGraph (what Lava builds) is
    refused naming the node instead of silently running the exact model of the metadata."""
    from lmh_deploy.nir.read import read_deploy_graph
    from lmh_deploy.errors import NirGraphError

    graph = fold(_train("mlp", "lif", {}, digits, steps=5))
    path = write_nir(graph, tmp_path / "lossy.nir", lossy_lif=True)
    with pytest.raises(NirGraphError, match=r"node '.*sn0.*'.*LIF.*nir-literal"):
        read_deploy_graph(path)


@pytest.mark.lava
@pytest.mark.timeout(500, method="signal")
def test_lmh_verify_nir_runtimes_print_ok_on_a_digits_model(capsys):
    """``lmh-verify model.pt --format nir --runtime nir,nir-literal,nir-torch,lava`` prints OK."""
    pytest.importorskip("lava", reason="Lava is installed by scripts/setup.sh")
    from _deploy_models import trained_checkpoint

    from lmh_deploy.cli import verify as cli_verify

    ckpt = trained_checkpoint("mlp", "lmh", timesteps=4, epochs=1)
    rc = cli_verify.main([str(ckpt), "--format", "nir", "--runtime",
                          "nir,nir-literal,nir-torch,lava", "--limit", "60"])
    out = capsys.readouterr().out
    print(out)
    assert rc == 0 and "OK" in out
    for name in ("nir-literal", "nir-torch", "lava"):
        assert name in out


def test_independent_evaluator_uses_only_nir_and_numpy():
    """The evaluator above reads nothing of lmh_deploy: every global name its functions use is
    numpy, nir, a builtin or one of its own helpers."""
    import builtins
    import inspect

    own = {"_plain", "_components", "_delayed_edges", "_conv64", "independent_run"}
    allowed = own | {"np", "nir"} | set(dir(builtins))
    for name in own:
        fn = globals()[name]
        assert "lmh_deploy" not in inspect.getsource(fn)
        codes = [fn.__code__]
        names = set()
        while codes:
            c = codes.pop()
            names |= set(c.co_names)
            codes += [k for k in c.co_consts if inspect.iscode(k)]
        used_globals = {n for n in names if (n in globals() or n in dir(builtins))
                        and not n.startswith("@py")}  # pytest assertion rewriting
        assert used_globals <= allowed, (name, used_globals - allowed)


def test_training_refuses_non_finite_neuron_parameters(tmp_path):
    """A diverging run (lr 1e30) stops after the epoch with a one-line error naming the layer
    and writes no checkpoint carrying NaN constants."""
    from lmh_deploy.errors import NonFiniteNeuronError
    from lmh_deploy.training.loop import train

    out = tmp_path / "run"
    with pytest.raises(NonFiniteNeuronError, match=r"sn0.*not finite.*after epoch 1") as e:
        train({"arch": "mlp", "neuron": "lmh", "timesteps": 2, "epochs": 1, "out": str(out),
               "progress": False, "lr": 1e30})
    assert "\n" not in str(e.value)
    assert not (out / "model.pt").exists()
