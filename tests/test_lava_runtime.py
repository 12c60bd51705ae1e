"""The Lava runtime (CPU simulator) against the numpy step functions, spike for spike.

Every test runs Lava under a hard timeout, and a fixture checks that no worker process outlives
the test (multiprocessing children and any OS-level child of this process).
"""
import multiprocessing
import os

import numpy as np
import pytest

from lmh_deploy.graph.schema import NeuronSpec
from lmh_deploy.graph.interpret import NumpyBackend, run_neuron
from lmh_deploy.errors import LavaRuntimeError
from lmh_deploy.lava.build import LavaLayer, schedule, validate_layers
from lmh_deploy.lava.run import run_lava

pytestmark = [pytest.mark.lava, pytest.mark.timeout(120, method="signal")]


def _os_children(pid):
    """Live PIDs whose parent is ``pid`` (Linux /proc; empty elsewhere), except multiprocessing's
    resource tracker: one per interpreter (Lava's shared memory starts it), it exits with us."""
    out = []
    for d in os.listdir("/proc") if os.path.isdir("/proc") else []:
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                with open(f"/proc/{d}/cmdline", "rb") as f:
                    cmd = f.read()
                if (int(fields[1]) == pid and fields[0] != "Z"
                        and b"multiprocessing.resource_tracker" not in cmd):
                    out.append(int(d))
            except (OSError, IndexError, ValueError):
                pass
    return out


@pytest.fixture(autouse=True)
def no_leftover_workers():
    before = set(_os_children(os.getpid()))
    yield
    assert multiprocessing.active_children() == []
    assert set(_os_children(os.getpid())) - before == set()


# ---------------------------------------------------------------------------------------------
# hand-made networks on an exact grid (every sum exact in float32) and a numpy reference
# ---------------------------------------------------------------------------------------------


def _grid(rng, shape, scale=16):
    return (rng.integers(-scale, scale + 1, size=shape) / 64).astype(np.float32)


def _lmh(rng=None, P=1, C=1, mu_d=0.125, mu_s=-0.25, lam_s=0.75, lam_d=1.25):
    def table(v):
        if rng is None:
            return np.full((P, C), v, np.float32)
        return (v + rng.integers(-2, 3, size=(P, C)) / 16).astype(np.float32)
    return NeuronSpec(model="lmh", source_kind="lmh", theta=np.float32(1.0), levels=1,
                      v0=np.float32(0.5), omega=None,
                      params=dict(mu_d=table(mu_d), mu_s=table(mu_s), lam_s=table(lam_s),
                                  lam_d=table(lam_d)))


def _lif(decay=0.5):
    return _lmh(mu_d=0.0, mu_s=0.0, lam_s=decay, lam_d=1.0)


def _lmht(levels, rng, omega=None, P=1, C=1, v0=0.0):
    lam = (0.75 + rng.integers(0, 8, size=(P, C)) / 16).astype(np.float32)
    return NeuronSpec(model="lmht", source_kind="lmht", theta=np.float32(2.0 / levels),
                      levels=levels, v0=np.float32(v0), params={"lam": lam}, omega=omega)


def _omega(rng, t):
    return (2.0 / t / (1.0 + np.exp(-rng.normal(size=(t, t))))).astype(np.float32)


def _reference(layers, x, timesteps):
    """numpy: the shared step functions via the reference interpreter's run_neuron."""
    xs = [x] * timesteps if x.ndim == 2 else list(x)
    spikes = {}
    for layer in layers:
        cur = [(s @ layer.weight.T + layer.bias).astype(np.float32) for s in xs]
        if layer.neuron is None:
            return np.stack(cur), spikes
        xs = run_neuron(NumpyBackend, layer.neuron, cur, 2)
        spikes[layer.name] = np.stack(xs).astype(np.int32)


def _net(rng, neurons, dims):
    return [LavaLayer(_grid(rng, (dims[i + 1], dims[i])), _grid(rng, (dims[i + 1],), 8),
                      neurons[i] if i < len(neurons) else None, f"n{i}")
            for i in range(len(dims) - 1)]


def _check_same(layers, x, timesteps, **kw):
    run = run_lava(layers, x, timesteps, **kw)
    ref_logits, ref_spikes = _reference(layers, x, timesteps)
    assert set(run.spikes) == set(ref_spikes)
    for name, s in ref_spikes.items():
        np.testing.assert_array_equal(run.spikes[name], s, err_msg=name)
    np.testing.assert_array_equal(run.logits, ref_logits)
    return run, ref_spikes


def test_two_layer_lmh_hand_made():
    rng = np.random.default_rng(0)
    x = (rng.integers(0, 33, size=(5, 12)) / 16).astype(np.float32)
    layers = _net(rng, [_lmh(), _lmh(rng, P=1, C=9)], [12, 16, 9, 4])
    layers[1].bias = layers[1].bias + np.float32(0.5)
    run, ref = _check_same(layers, x, 4)
    assert all(s.sum() > 0 for s in ref.values())           # the test exercises firing
    assert run.offsets == {"n0": 1, "n1": 2, "readout": 3}   # one step per Dense hop
    assert run.steps == 5 * 4 + 3 and run.logits.shape == (4, 5, 4)


def test_single_neuron_trace_on_threshold():
    """Hand trace: LIF with decay 1/2, theta = 1, v(0) = 1/2, weight 1, current I = x.

    x = 1.0 : m = 0.25+1 = 1.25 (s=1, v=.25); m = .125+1 = 1.125 (1); m = 1.0625 (1)
    x = 0.5 : m = 0.75 (0); 0.875 (0); 0.9375 (0)          -- state reset between samples
    x = 0.75: m = 0.25+.75 = 1.0 exactly on threshold (1, v=0); m = 0.75 (0); m = 1.125 (1)
    """
    x = np.array([[1.0], [0.5], [0.75]], np.float32)
    layers = [LavaLayer(np.array([[1.0]], np.float32), np.array([0.0], np.float32), _lif(), "n0"),
              LavaLayer(np.array([[2.0]], np.float32), np.array([0.5], np.float32), None, "out")]
    run, _ = _check_same(layers, x, 3)
    np.testing.assert_array_equal(run.spikes["n0"][:, :, 0].T, [[1, 1, 1], [0, 0, 0], [1, 0, 1]])
    np.testing.assert_array_equal(run.logits[:, :, 0].T, [[2.5, 2.5, 2.5], [0.5, 0.5, 0.5],
                                                          [2.5, 0.5, 2.5]])


def test_lif_and_radical_lmh():
    rng = np.random.default_rng(1)
    x = (rng.integers(0, 17, size=(4, 10)) / 16).astype(np.float32)
    _check_same(_net(rng, [_lif(0.75), _lmh(rng, P=4, C=12)], [10, 12, 12, 3]), x, 4)
    _check_same(_net(rng, [_lmh(rng, P=4), _lif()], [10, 12, 12, 3]), x, 6)  # P=4 held beyond T


def test_multilevel_graded_spikes():
    rng = np.random.default_rng(2)
    x = (rng.integers(0, 33, size=(5, 10)) / 16).astype(np.float32)
    layers = _net(rng, [_lmht(4, rng), _lmht(2, rng, C=14, v0=0.25)], [10, 14, 14, 3])
    _, ref = _check_same(layers, x, 4)
    assert ref["n0"].max() > 1                               # graded payloads really travel


def test_windowed_omega_latency_and_blocks():
    rng = np.random.default_rng(3)
    x = (rng.integers(0, 33, size=(3, 10)) / 16).astype(np.float32)
    om = _omega(rng, 4)
    layers = _net(rng, [_lmht(4, rng, omega=om), _lmht(2, rng, omega=om, P=4)], [10, 14, 14, 3])
    run, _ = _check_same(layers, x, 4)
    # each windowed layer lags T - 1 = 3 steps beyond its Dense hop: T steps per layer
    assert run.offsets == {"n0": 1 + 3, "n1": 5 + 3, "readout": 9}
    _check_same(layers, x, 8)                                # T' = 2T: Omega per window
    mixed = _net(rng, [_lmht(4, rng, omega=om), _lmht(2, rng)], [10, 14, 14, 3])
    _check_same(mixed, x, 8)


def test_frames_input():
    rng = np.random.default_rng(4)
    frames = (rng.integers(0, 17, size=(5, 3, 10)) / 16).astype(np.float32)   # [T, B, N]
    _check_same(_net(rng, [_lmh(), _lmht(2, rng)], [10, 12, 12, 3]), frames, None)


def test_fixed_point_equals_float_on_representable_net():
    """Grid weights, decays and couplings that are exact in 12 bits, input on the payload grid:
    the integer pipeline (8-bit Dense, Q12 coefficients, 24-bit state) gives the float spikes."""
    rng = np.random.default_rng(5)
    x = (rng.integers(0, 17, size=(4, 10)) / 16).astype(np.float32)
    layers = _net(rng, [_lmh(rng), _lmht(2, rng)], [10, 12, 12, 3])
    fixed = run_lava(layers, x, 4, fixed_point=True, input_quantum=1 / 16)
    _, ref = _reference(layers, x, 4)
    for name, s in ref.items():
        np.testing.assert_array_equal(fixed.spikes[name], s, err_msg=name)
    assert fixed.fixed_point and fixed.input_quantum == 1 / 16


def test_fixed_point_quantization_changes_little():
    rng = np.random.default_rng(6)
    x = rng.uniform(0, 1, size=(6, 10)).astype(np.float32)
    w = [rng.normal(0, 0.3, size=s).astype(np.float32) for s in [(16, 10), (16, 16), (3, 16)]]
    layers = [LavaLayer(w[0], np.zeros(16, np.float32), _lmh(rng), "n0"),
              LavaLayer(w[1], np.zeros(16, np.float32), _lmht(2, rng, omega=_omega(rng, 4)), "n1"),
              LavaLayer(w[2], np.zeros(3, np.float32), None, "out")]
    flt = run_lava(layers, x, 4, input_quantum=2.0 ** -8)
    fix = run_lava(layers, x, 4, fixed_point=True, input_quantum=2.0 ** -8)
    for name in flt.spikes:
        assert (flt.spikes[name] == fix.spikes[name]).mean() > 0.9, name
    assert np.abs(flt.logits - fix.logits).max() < 0.5


def test_bad_layers_are_typed_errors():
    rng = np.random.default_rng(7)
    good = _net(rng, [_lmh()], [4, 5, 2])
    with pytest.raises(LavaRuntimeError, match="n1: weight has 3 inputs"):
        validate_layers([good[0], LavaLayer(np.zeros((2, 3)), np.zeros(2), None, "n1")])
    with pytest.raises(LavaRuntimeError, match="readout"):
        validate_layers(good[:1])
    with pytest.raises(LavaRuntimeError, match="only the last layer"):
        validate_layers([LavaLayer(np.zeros((5, 4)), np.zeros(5), None, "a"), good[1]])
    with pytest.raises(LavaRuntimeError, match="bias shape"):
        validate_layers([LavaLayer(np.zeros((2, 4)), np.zeros(3), None, "a")])
    win = _net(rng, [_lmht(2, rng, omega=_omega(rng, 4))], [4, 5, 2])
    with pytest.raises(LavaRuntimeError, match="multiple of T"):
        schedule(win, 6)
    with pytest.raises(LavaRuntimeError, match="does not match the first layer"):
        run_lava(good, np.zeros((2, 7), np.float32), 4)


@pytest.mark.parametrize("kind", ["lmh", "lmht"])
def test_deploy_graph_mlp_matches_reference(kind):
    """The folded digits-size MLP (64-256-256-10; LM-HT with a learned Omega and L = 2):
    Lava float spikes and logits identical to the reference interpreter."""
    torch = pytest.importorskip("torch")
    from lmh_deploy.graph.fold import fold
    from lmh_deploy.graph.interpret import run_reference
    from lmh_deploy.models import build_model, default_config
    from lmh_deploy.lava.build import layers_from_deploy_graph
    from lmh_deploy.lava.run import run_lava_graph

    torch.manual_seed(0)
    graph = fold(build_model(default_config("mlp", neuron=kind, timesteps=4)).eval())
    assert [layer.name for layer in layers_from_deploy_graph(graph)] == ["sn0", "sn1", "fc2"]
    x = np.random.default_rng(8).uniform(0, 4, size=(12, 1, 8, 8)).astype(np.float32)
    ref = run_reference(graph, x)
    run = run_lava_graph(graph, x)
    assert set(run.spikes) == set(ref.spikes)
    for name in ref.spikes:
        assert ref.spikes[name].sum() > 0
        np.testing.assert_array_equal(run.spikes[name], ref.spikes[name], err_msg=name)
    np.testing.assert_array_equal(run.logits, ref.logits)


def test_isolated_run_and_hard_timeout(tmp_path):
    from lmh_deploy.errors import LavaTimeoutError
    from lmh_deploy.lava.run import load_layers, run_lava_isolated, save_layers

    rng = np.random.default_rng(9)
    x = (rng.integers(0, 17, size=(3, 10)) / 16).astype(np.float32)
    layers = _net(rng, [_lmh(rng), _lmht(2, rng, omega=_omega(rng, 4))], [10, 12, 12, 3])
    save_layers(tmp_path / "l.npz", layers, x, 4, {"fixed_point": False})
    back, xb, t, opts = load_layers(tmp_path / "l.npz")
    assert t == 4 and opts == {"fixed_point": False} and np.array_equal(xb, x)
    assert [b.neuron.model if b.neuron else None for b in back] == ["lmh", "lmht", None]

    run = run_lava_isolated(layers, x, 4, timeout_s=100)
    ref_logits, ref_spikes = _reference(layers, x, 4)
    for name, s in ref_spikes.items():
        np.testing.assert_array_equal(run.spikes[name], s)
    np.testing.assert_array_equal(run.logits, ref_logits)
    with pytest.raises(LavaTimeoutError, match="exceeded 0.3 s"):
        run_lava_isolated(layers, x, 4, timeout_s=0.3)


def test_lava_discovers_our_models_without_exception_map(recwarn):
    """Other builders (e.g. from NIR) may rely on Lava's own ProcessModel search."""
    from lmh_deploy.lava import import_lava

    import_lava()
    from lava.magma.core.run_conditions import RunSteps
    from lava.magma.core.run_configs import Loihi2SimCfg
    from lava.proc.dense.process import Dense
    from lava.proc.io.source import RingBuffer

    from lmh_deploy.lava.procs.lmht import MultiLevelProcess

    src = RingBuffer(data=np.full((2, 6), 3.0))
    dense = Dense(weights=np.eye(2) * 0.5, num_message_bits=8)
    neuron = MultiLevelProcess(shape=(2,), lam=np.ones((1, 2)), theta=1.0, levels=2,
                               bias=np.zeros(2), v0=np.zeros(2), period=6, offset=1)
    src.s_out.connect(dense.s_in)
    dense.a_out.connect(neuron.a_in)
    try:
        src.run(condition=RunSteps(num_steps=4), run_cfg=Loihi2SimCfg(select_tag="floating_pt"))
        # I = 1.5 per step from step 1: m = 1.5 (s=1, v=.5), m = 2.0 (s=2, v=0), m = 1.5 (1, v=.5)
        np.testing.assert_allclose(neuron.v.get(), [0.5, 0.5])
    finally:
        src.stop()
    assert not [w for w in recwarn if "Cannot import module" in str(w.message)]


def test_deploy_graph_isolated_at_two_windows():
    """LM-HT with learned Omega at T' = 2T through the isolated (process-group) path."""
    torch = pytest.importorskip("torch")
    from lmh_deploy.graph.fold import fold
    from lmh_deploy.graph.interpret import run_reference
    from lmh_deploy.models import build_model, default_config
    from lmh_deploy.lava.run import run_lava_graph

    torch.manual_seed(1)
    cfg = default_config("mlp", neuron="lmht", timesteps=4)
    cfg["neuron"]["levels"] = 4
    graph = fold(build_model(cfg).eval())
    x = np.random.default_rng(10).uniform(0, 4, size=(6, 1, 8, 8)).astype(np.float32)
    ref = run_reference(graph, x, 8)
    run = run_lava_graph(graph, x, 8, isolate=True, timeout_s=100)
    for name in ref.spikes:
        np.testing.assert_array_equal(run.spikes[name], ref.spikes[name], err_msg=name)
    np.testing.assert_array_equal(run.logits, ref.logits)


def test_fixed_point_input_payload_must_fit_24_bits():
    rng = np.random.default_rng(11)
    layers = _net(rng, [_lmh()], [4, 5, 2])
    with pytest.raises(LavaRuntimeError, match="exceed 24 bits"):
        run_lava(layers, np.full((1, 4), 1.0, np.float32), 2, fixed_point=True,
                 input_quantum=2.0 ** -30)
