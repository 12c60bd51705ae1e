"""Write the foreign-NIR fixtures of tests/fixtures/nir/ (issue 15).

For every installed producer (snnTorch, Norse, SpikingJelly, Sinabs, Rockpool) a few small networks are built
with fixed random weights, run in the PRODUCER's own simulator on a fixed input, and exported with
the PRODUCER's own NIR exporter. Each ``<tool>_<net>.nir`` gets a ``<tool>_<net>.npz`` beside it:

* ``input``            float32 [T, B, *shape]  the input given to the producer, step by step
* ``dt``               the time step (seconds) the producer's exporter assumed
* ``spikes/<node>``    float32 [T, B, *shape]  the producer's spike output of the neuron layer that
                       became NIR node ``<node>``
* ``producer``         tool name and version

The networks use the settings each tool's own NIR importer builds, so that the file read the way
that tool reads it reproduces the producer: snnTorch ``reset_mechanism="zero", reset_delay=False``
(with snnTorch's default ``reset_delay=True`` a ``Synaptic`` / ``RLeaky`` membrane is held at 0 for
one extra step after a spike, which NIR cannot express), SpikingJelly hard reset, Norse defaults,
Sinabs ``IAFSqueeze`` defaults (multi-spike, subtractive reset, ``min_v_mem = -threshold``),
Rockpool defaults (multi-spike, subtractive reset).
Known defects of the
producers' exporters that the script works around (and nothing else):

* snnTorch 1.0.0, Norse 1.1.0 and Sinabs 3.1.3 leave ``Conv2d.input_shape`` None, which ``nir.write`` cannot
  store.
* snnTorch 1.0.0 ``export_to_nir`` ends with ``infer_types()``, which fails on every graph under
  nir 1.0.8 (the Input keeps the batch axis, scalar neuron parameters have shape ``()``), and
  ``nir.write`` cannot store 0-d arrays: the script disables that final call, gives the neurons
  per-neuron parameters, and fills the ``input_shape`` of ``Conv2d`` nodes and the ``input_type`` of
  ``Flatten`` nodes (None as exported) with the shapes the model sees -- what ``infer_types``
  would have set.

The NIR paper's graphs (github.com/neuromorphs/NIR, ``paper/``) are copied by ``--paper DIR``
(a checkout of that repository): the single Norse LIF neuron with its published trace
(``lif_norse.csv``: input, voltage, spike per step at dt = 1e-4), the Braille CubaLIF network
(snnTorch, dt = 1e-4) and the Sinabs N-MNIST CNN, the latter two on fabricated inputs (their
data sets are not public here), each with the spikes of a tool that imports it (snnTorch's
modules for Braille, Sinabs' ``from_nir`` for the CNN). The paper's nested-subgraph Braille file
is kept as a bad file: its subgraph's edges name a node ``lif`` that it does not have.

Usage: ``python scripts/make_nir_fixtures.py [--out tests/fixtures/nir] [--paper NIR_CHECKOUT]``.
"""
from __future__ import annotations

import argparse
import importlib
import shutil
import subprocess
from pathlib import Path

import numpy as np

T, B = 24, 2


def _rng(seed):
    return np.random.default_rng(seed)


def _save(out: Path, name: str, graph, x, spikes: dict, dt: float, producer: str, nir):
    nir.write(out / f"{name}.nir", graph)
    names = set(nir.read(out / f"{name}.nir", type_check=False).nodes)
    arrays = {"input": np.asarray(x, np.float32), "dt": np.float64(dt),
              "producer": np.array(producer)}
    for node, s in spikes.items():
        if node not in names:
            raise SystemExit(f"{name}: recorded layer {node!r} is not a node of the exported graph "
                             f"({sorted(names)})")
        arrays[f"spikes/{node}"] = np.asarray(s, np.float32)
    np.savez_compressed(out / f"{name}.npz", **arrays)
    total = sum(float(np.sum(s)) for s in spikes.values())
    print(f"  {name}: {len(graph.nodes)} nodes, {len(spikes)} spike layers, {total:.0f} spikes")


def _record(net, neuron_types, rename=lambda n: n):
    """Forward hooks on neuron modules -> {node name: list of per-step spike arrays}."""
    rec, hooks = {}, []
    for name, m in net.named_modules():
        if isinstance(m, neuron_types):
            key = rename(name)
            rec[key] = []

            def hook(mod, inp, out, key=key):
                z = out[0] if isinstance(out, tuple) else out
                rec[key].append(z.detach().numpy().copy())

            hooks.append(m.register_forward_hook(hook))
    return rec, hooks


def _fill(g, nir, conv_hw=None, flat_in=None):
    """Fill what an exporter left None and ``nir.write`` cannot store (module docstring)."""
    for name in sorted(g.nodes, key=lambda n: (len(n), n)):
        n = g.nodes[name]
        if isinstance(n, nir.Conv2d) and n.input_shape is None:
            n.input_shape = conv_hw.pop(0)
            n.__post_init__()
        if isinstance(n, nir.Flatten) and (n.input_type or {}).get("input") is None:
            n.input_type = {"input": np.array(flat_in.pop(0))}
    return g


def _uniform(seed, shape, lo, hi):
    return _rng(seed).uniform(lo, hi, size=shape).astype(np.float32)


def _init(torch, net, seed, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    for p in net.parameters():
        if p.dtype.is_floating_point and p.ndim >= 1 and p.requires_grad:
            with torch.no_grad():
                p.copy_((torch.rand(p.shape, generator=g) * 2 - 1) * scale / max(1, p[0].numel()) ** 0.5
                        if p.ndim > 1 else (torch.rand(p.shape, generator=g) * 2 - 1) * 0.1)


# ------------------------------------------------------------------------------------- snnTorch


def snntorch_fixtures(out, nir):
    import torch
    import snntorch as snn
    from snntorch import export_nir, utils

    def leaky(shape, beta):
        return snn.Leaky(beta=torch.full(shape, beta), threshold=torch.ones(shape),
                         init_hidden=True, reset_mechanism="zero", reset_delay=False)

    def export(net, x0, conv_hw=None, flat_in=None):
        orig = nir.NIRGraph.infer_types
        nir.NIRGraph.infer_types = lambda self: None   # see module docstring
        try:
            g = export_nir.export_to_nir(net, torch.as_tensor(x0[:1]))
        finally:
            nir.NIRGraph.infer_types = orig
        return _fill(g, nir, conv_hw, flat_in)

    def run(name, net, x, conv_hw=None, flat_in=None):
        rec, hooks = _record(net, (snn.Leaky, snn.Synaptic, snn.RLeaky),
                             lambda n: n + ".lif" if isinstance(net.get_submodule(n), snn.RLeaky) else n)
        utils.reset(net)
        with torch.no_grad():
            for t in range(T):
                net(torch.as_tensor(x[t]))
        for h in hooks:
            h.remove()
        utils.reset(net)
        g = export(net, x[0], conv_hw, flat_in)
        _save(out, f"snntorch_{name}", g, x, {k: np.stack(v) for k, v in rec.items()}, 1e-4,
              f"snntorch {snn.__version__}", nir)

    torch.manual_seed(0)
    mlp = torch.nn.Sequential(torch.nn.Linear(8, 16), leaky((16,), 0.9), torch.nn.Linear(16, 4),
                              leaky((4,), 0.8))
    _init(torch, mlp, 1, 2.5)
    run("lif_mlp", mlp, _uniform(2, (T, B, 8), 0, 1))

    conv = torch.nn.Sequential(torch.nn.Conv2d(2, 4, 3, padding=1), leaky((4, 8, 8), 0.9),
                               torch.nn.AvgPool2d(2), torch.nn.Flatten(), torch.nn.Linear(64, 5),
                               leaky((5,), 0.85))
    _init(torch, conv, 3, 3.0)
    run("conv", conv, _uniform(4, (T, B, 2, 8, 8), 0, 1), conv_hw=[(8, 8)], flat_in=[(4, 4, 4)])

    cuba = torch.nn.Sequential(
        torch.nn.Linear(8, 10),
        snn.Synaptic(alpha=torch.full((10,), 0.7), beta=torch.full((10,), 0.85),
                     threshold=torch.ones(10), init_hidden=True, reset_mechanism="zero",
                     reset_delay=False),
        torch.nn.Linear(10, 3), leaky((3,), 0.8))
    _init(torch, cuba, 5, 1.5)
    run("cubalif", cuba, _uniform(6, (T, B, 8), 0, 1))

    rec = torch.nn.Sequential(
        torch.nn.Linear(8, 10),
        snn.RLeaky(beta=torch.full((10,), 0.85), threshold=torch.ones(10), linear_features=10,
                   init_hidden=True, reset_mechanism="zero", reset_delay=False),
        torch.nn.Linear(10, 3), leaky((3,), 0.8))
    _init(torch, rec, 7, 2.5)
    with torch.no_grad():  # a visible recurrent bias: it enters at t = 0 (W * 0 + b)
        rec[1].recurrent.bias.copy_(torch.linspace(-0.2, 0.3, 10))
    run("rec_lif", rec, _uniform(8, (T, B, 8), 0, 1))


# ----------------------------------------------------------------------------------------- Norse


def norse_fixtures(out, nir):
    import torch
    import norse
    import norse.torch as nt

    dt = 1e-3

    def run(name, net, x, cells, conv_hw=None):
        rec, hooks = _record(net, cells)
        s = None
        with torch.no_grad():
            for t in range(T):
                _, s = net(torch.as_tensor(x[t]), s)
        for h in hooks:
            h.remove()
        g = _fill(nt.to_nir(net, torch.as_tensor(x[0]), dt=dt), nir, conv_hw)
        _save(out, f"norse_{name}", g, x, {k: np.stack(v) for k, v in rec.items()}, dt,
              f"norse {norse.__version__}", nir)

    def box(n, tau_inv, vth=1.0):  # per-neuron parameters (nir needs equal shapes, no 0-d)
        n = n if isinstance(n, tuple) else (n,)
        return nt.LIFBoxCell(nt.LIFBoxParameters(
            tau_mem_inv=torch.full(n, tau_inv), v_th=torch.full(n, vth), v_leak=torch.zeros(n),
            v_reset=torch.zeros(n)), dt=dt)

    mlp = nt.SequentialState(torch.nn.Linear(8, 16), box(16, 200.0), torch.nn.Linear(16, 4),
                             box(4, 250.0))
    _init(torch, mlp, 11, 8.0)
    run("lif_mlp", mlp, _uniform(12, (T, B, 8), 0, 1), (nt.LIFBoxCell,))

    conv = nt.SequentialState(
        torch.nn.Conv2d(2, 4, 3, padding=1), box((4, 8, 8), 200.0, 0.5),
        torch.nn.Conv2d(4, 4, 3, stride=2, padding=1), box((4, 4, 4), 250.0, 0.5))
    _init(torch, conv, 13, 8.0)
    run("conv", conv, _uniform(14, (T, B, 2, 8, 8), 0, 1), (nt.LIFBoxCell,), [(8, 8), (8, 8)])

    cuba = nt.SequentialState(
        torch.nn.Linear(8, 10),
        nt.LIFCell(nt.LIFParameters(tau_syn_inv=torch.full((10,), 300.0),
                                    tau_mem_inv=torch.full((10,), 150.0),
                                    v_th=torch.full((10,), 0.3), v_leak=torch.zeros(10),
                                    v_reset=torch.zeros(10))), torch.nn.Linear(10, 3),
        box(3, 200.0, 0.3))
    _init(torch, cuba, 15, 2.0)
    run("cubalif", cuba, _uniform(16, (T, B, 8), 0, 1), (nt.LIFCell, nt.LIFBoxCell))


# ---------------------------------------------------------------------------------- SpikingJelly


def spikingjelly_fixtures(out, nir):
    import torch
    import spikingjelly
    from spikingjelly.activation_based import functional, neuron
    from spikingjelly.activation_based.nir_exchange import to_nir

    dt = 1e-4
    cells = (neuron.LIFNode, neuron.IFNode, neuron.CUBALIFNode)

    def run(name, net, x):
        rec, hooks = _record(net, cells, lambda n: "_" + n.replace(".", "_"))  # SJ's node names
        functional.reset_net(net)
        with torch.no_grad():
            for t in range(T):
                net(torch.as_tensor(x[t]))
        for h in hooks:
            h.remove()
        functional.reset_net(net)
        g = to_nir.export_to_nir(net, torch.as_tensor(x[0]), dt=dt)
        version = getattr(spikingjelly, "__version__", "2")
        _save(out, f"spikingjelly_{name}", g, x, {k: np.stack(v) for k, v in rec.items()}, dt,
              f"spikingjelly {version}", nir)

    mlp = torch.nn.Sequential(torch.nn.Linear(8, 16), neuron.LIFNode(tau=2.0),
                              torch.nn.Linear(16, 4), neuron.LIFNode(tau=3.0))
    _init(torch, mlp, 21, 3.0)
    run("lif_mlp", mlp, _uniform(22, (T, B, 8), 0, 1))

    conv = torch.nn.Sequential(torch.nn.Conv2d(2, 4, 3, padding=1), neuron.IFNode(),
                               torch.nn.AvgPool2d(2), torch.nn.Flatten(), torch.nn.Linear(64, 5),
                               neuron.LIFNode(tau=2.0))
    _init(torch, conv, 23, 3.0)
    run("conv", conv, _uniform(24, (T, B, 2, 8, 8), 0, 1))

    cuba = torch.nn.Sequential(torch.nn.Linear(8, 10),
                               neuron.CUBALIFNode(c_decay=0.5, v_decay=0.75, v_threshold=0.5),
                               torch.nn.Linear(10, 3), neuron.LIFNode(tau=2.0))
    _init(torch, cuba, 25, 1.5)
    run("cubalif", cuba, _uniform(26, (T, B, 8), 0, 1))


# ---------------------------------------------------------------------------------------- Sinabs


def sinabs_fixtures(out, nir):
    import torch
    import sinabs
    import sinabs.activation as sa
    import sinabs.layers as sl
    from sinabs.nir import to_nir

    def iaf():  # Sinabs' defaults, as its from_nir builds an IF node (multi-spike, subtract)
        return sl.IAFSqueeze(batch_size=B, min_v_mem=-1.0)

    net = torch.nn.Sequential(torch.nn.Conv2d(2, 4, 3, padding=1, bias=False), iaf(),
                              sl.SumPool2d(2), torch.nn.Flatten(),
                              torch.nn.Linear(64, 5, bias=False), iaf())
    _init(torch, net, 31, 3.0)
    x = _uniform(32, (T, B, 2, 8, 8), 0, 1)
    rec, hooks = _record(net, (sl.IAFSqueeze,))
    with torch.no_grad():  # Squeeze layers take [B*T, ...] with the batch outermost
        net(torch.as_tensor(x).transpose(0, 1).reshape(B * T, 2, 8, 8))
    for h in hooks:
        h.remove()
    spikes = {k: v[0].reshape(B, T, *v[0].shape[1:]).swapaxes(0, 1) for k, v in rec.items()}
    for m in net.modules():
        if isinstance(m, sl.IAFSqueeze):
            m.reset_states()
    g = _fill(to_nir(net, torch.as_tensor(x[0])), nir, [(8, 8)], [(4, 4, 4)])
    _save(out, "sinabs_conv", g, x, spikes, 1e-3, f"sinabs {sinabs.__version__}", nir)


# ------------------------------------------------------------------------------------- Rockpool


def rockpool_fixtures(out, nir):
    """Rockpool 3.1 torch modules (``LIFNeuronTorch`` -> LIF, ``LIFTorch`` -> CubaLIF), run by
    Rockpool (its ``record=True`` spikes) and exported by its own ``to_nir``. Multi-spike,
    subtractive reset, dt = 1e-3; the exporter writes ``r = tau e^(-dt/tau) / dt``, ``w_in = 1``
    and ``v_leak = 0``."""
    import importlib.metadata as md

    import torch
    from rockpool.nn.combinators import Sequential
    from rockpool.nn.modules import LIFNeuronTorch, LIFTorch, LinearTorch
    from rockpool.nn.modules.torch.nir import to_nir

    version = f"rockpool {md.version('rockpool')}"
    dt = 1e-3

    def lin(n_in, n_out, seed, scale):  # fixed random weights, as _init does for the others
        w = _uniform(seed, (n_in, n_out), -1, 1) * scale / n_in ** 0.5
        return LinearTorch((n_in, n_out), weight=torch.as_tensor(w), has_bias=False)

    def run(name, net, seed):
        x = _uniform(seed, (T, B, 8), 0, 1)
        with torch.no_grad():
            _, _, rec = net(torch.as_tensor(x).transpose(0, 1), record=True)
        g = to_nir(net)
        spikes = {k[: -len("_output")]: v.detach().numpy().swapaxes(0, 1)
                  for k, v in rec.items() if k.endswith("Torch_output") and "LIF" in k}
        _save(out, name, g, x, spikes, dt, version, nir)

    run("rockpool_lif_mlp", Sequential(
        lin(8, 16, 41, 2.5), LIFNeuronTorch(16, tau_mem=0.01, dt=dt),
        lin(16, 4, 42, 2.5), LIFNeuronTorch(4, tau_mem=0.02, dt=dt)), 43)
    run("rockpool_cubalif", Sequential(
        lin(8, 10, 44, 0.5), LIFTorch(10, tau_mem=0.02, tau_syn=0.01, dt=dt),
        lin(10, 3, 45, 0.5), LIFTorch(3, tau_mem=0.02, tau_syn=0.005, dt=dt)), 46)


# ----------------------------------------------------------------------------------- NIR paper


def paper_fixtures(out, repo: Path, nir):
    """Copy the NIR paper's graphs; write the published LIF trace and fabricated inputs."""
    def show(path):
        return subprocess.run(["git", "-C", str(repo), "show", f"HEAD:{path}"], check=True,
                              capture_output=True).stdout

    (out / "paper_lif_norse.nir").write_bytes(show("paper/01_lif/lif_norse.nir"))
    rows = np.loadtxt(show("paper/01_lif/lif_norse.csv").decode().splitlines(), delimiter=",")
    np.savez_compressed(out / "paper_lif_norse.npz", input=rows[:, 0:1, None].astype(np.float32),
                        dt=np.float64(1e-4), producer=np.array("norse (NIR paper, lif_norse.csv)"),
                        **{"spikes/1": rows[:, 2:3, None].astype(np.float32),
                           "voltage/1": rows[:, 1:2, None].astype(np.float32)})
    for n in ("braille_noDelay_bias_zero", "braille_noDelay_noBias_subtract"):
        (out / f"paper_{n}.nir").write_bytes(show(f"paper/03_rnn/{n}.nir"))
    (out / "paper_braille_noDelay_bias_zero_subgraph.nir").write_bytes(
        show("paper/03_rnn/extras/braille_noDelay_bias_zero_subgraph.nir"))
    # Braille: 12 taxels, 256 steps of 5 ms bins in the paper; fabricated sparse events, 2 samples
    xb = (_rng(41).random((256, 2, 12)) < 0.15).astype(np.float32)
    for n in ("braille_noDelay_bias_zero", "braille_noDelay_noBias_subtract"):
        arrays = {"input": xb, "dt": np.float64(1e-4)}
        ref = _braille_snntorch(out / f"paper_{n}.nir", xb, nir)
        if ref is not None:
            arrays.update({f"spikes/{k}": v for k, v in ref[0].items()}, producer=np.array(ref[1]))
        np.savez_compressed(out / f"paper_{n}.npz", **arrays)
    (out / "paper_cnn_sinabs.nir").write_bytes(show("paper/02_cnn/cnn_sinabs.nir"))
    xc = (_rng(42).random((20, 2, 2, 34, 34)) < 0.05).astype(np.float32)
    arrays = {"input": xc, "dt": np.float64(1.0)}
    ref = _cnn_sinabs(out / "paper_cnn_sinabs.nir", xc, nir)
    if ref is not None:
        arrays.update({f"spikes/{k}": v for k, v in ref[0].items()}, producer=np.array(ref[1]))
    np.savez_compressed(out / "paper_cnn_sinabs.npz", **arrays)
    print("  paper graphs: lif_norse (+ published trace), braille x3, cnn_sinabs")


def _braille_snntorch(path, x, nir):
    """snnTorch's reading of a Braille graph: the modules its importer maps each node to
    (``_nir_to_snntorch_module``: RSynaptic / Synaptic, reset to zero), stepped by hand because
    ``import_from_nir`` fails on this graph in snnTorch 1.0.0 / nirtorch 2.6. Both neurons run
    with ``reset_delay=True``: snnTorch 1.0.0's RSynaptic ignores ``reset_delay=False`` (its
    reset branch updates a local variable), so that is what snnTorch actually simulates."""
    try:
        import torch
        import snntorch
        from snntorch import import_nir as sin
    except ImportError:
        return None
    g = nir.read(path)
    lif = g.nodes["lif1.lif"]
    sub = nir.NIRGraph(nodes={"input": nir.Input(lif.input_type), "lif": lif,
                              "w_rec": g.nodes["lif1.w_rec"], "output": nir.Output(lif.output_type)},
                       edges=[("input", "lif"), ("lif", "w_rec"), ("w_rec", "lif"), ("lif", "output")])
    fc1, fc2 = sin._nir_to_snntorch_module(g.nodes["fc1"]), sin._nir_to_snntorch_module(g.nodes["fc2"])
    lif1 = sin._nir_to_snntorch_module(sub, init_hidden=False)
    lif2 = sin._nir_to_snntorch_module(g.nodes["lif2"], init_hidden=False)
    lif1.reset_delay = lif2.reset_delay = True
    n1, n2, b = lif.v_threshold.size, g.nodes["lif2"].v_threshold.size, x.shape[1]
    spk1, syn1, mem1 = (torch.zeros(b, n1) for _ in range(3))
    syn2, mem2 = torch.zeros(b, n2), torch.zeros(b, n2)
    r1, r2 = [], []
    with torch.no_grad():
        for t in range(x.shape[0]):
            spk1, syn1, mem1 = lif1(fc1(torch.as_tensor(x[t])), spk1, syn1, mem1)
            spk2, syn2, mem2 = lif2(fc2(spk1), syn2, mem2)
            r1.append(spk1.numpy().copy())
            r2.append(spk2.numpy().copy())
    return ({"lif1.lif": np.stack(r1), "lif2": np.stack(r2)},
            f"snntorch {snntorch.__version__} (importer's modules, reset_delay=True)")


def _cnn_sinabs(path, x, nir):
    """Sinabs' own reading of the paper CNN (``sinabs.nir.from_nir``) on frames [T, B, 2, 34, 34]."""
    try:
        import torch
        import sinabs
        import sinabs.layers as sl
        from sinabs.nir import from_nir
    except ImportError:
        return None
    T_, b = x.shape[:2]
    net = from_nir(nir.read(path), batch_size=b)
    rec = {}
    for name, m in net.named_modules():
        if isinstance(m, sl.IAFSqueeze):
            m.register_forward_hook(lambda mod, i, o, name=name: rec.__setitem__(name, o.detach().numpy().copy()))
    with torch.no_grad():
        net(torch.as_tensor(x).transpose(0, 1).reshape(b * T_, *x.shape[2:]))
    return ({k: v.reshape(b, T_, *v.shape[1:]).swapaxes(0, 1) for k, v in rec.items()},
            f"sinabs {sinabs.__version__} from_nir")


PRODUCERS = {"snntorch": ("snntorch", snntorch_fixtures), "norse": ("norse", norse_fixtures),
             "spikingjelly": ("spikingjelly", spikingjelly_fixtures),
             "sinabs": ("sinabs", sinabs_fixtures),
             "rockpool": ("rockpool", rockpool_fixtures)}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="tests/fixtures/nir")
    ap.add_argument("--paper", help="checkout of github.com/neuromorphs/NIR (git directory)")
    ap.add_argument("--only", help="comma-separated producers")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    import nir

    only = set(args.only.split(",")) if args.only else set(PRODUCERS)
    for tool, (module, fn) in PRODUCERS.items():
        if tool not in only:
            continue
        try:
            importlib.import_module(module)
        except ImportError as e:
            print(f"{tool}: not installed ({e}); skipped")
            continue
        print(tool)
        fn(out, nir)
    if args.paper:
        paper_fixtures(out, Path(args.paper), nir)
    total = sum(f.stat().st_size for f in out.iterdir())
    print(f"{out}: {total / 1e6:.2f} MB")
    if shutil.which("du") is None:  # pragma: no cover
        pass


if __name__ == "__main__":
    main()
