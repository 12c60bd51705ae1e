"""Generate the lmh-import test fixtures with the papers' ORIGINAL code (run once; outputs committed).

    python scripts/make_import_fixtures.py --stbp /path/to/STBP_LMH --lmht /path/to/LMHT_SNN \\
        [--out tests/fixtures/import]

``--stbp`` / ``--lmht`` are checkouts of https://github.com/hzc1208/STBP_LMH and
https://github.com/hzc1208/LMHT_SNN (their code is imported from there at run time and never
copied into this repository). For each case the script builds a small-width network with THEIR
classes on the CPU, draws random neuron parameters (raw learnables away from their zero init,
per-layer thresholds as after their QCFS conversion) and random BN statistics, runs their forward
pass on a fixed input, and writes

* ``<case>.pt``      -- the checkpoint exactly as their training script saves it (STBP_LMH: the bare
  ``state_dict``; LMHT_SNN: ``{'model': state_dict, 'optimizer': ..., 'scheduler': ..., 'epoch',
  'max_acc1'}``);
* ``<case>_ref.pt``  -- ``{"x": input [B, C, H, W], "logits": per-step logits [T, B, K],
  "spikes": {their neuron module name: spike counts uint8 [T, B, ...]}, "args": the lmh-import
  options for this case}`` (tensors and plain containers only).

Runtime patches (none edits their files):

* channel widths: ``nn.Conv2d`` / ``nn.BatchNorm2d`` / ``nn.Linear`` are replaced, while their
  model is constructed, by same-named subclasses that divide every channel count >= 16 by a
  factor (so 64 -> 4, 4096 -> 256; 3 input channels and the class count stay);
* ``spikingjelly.clock_driven.layer.SeqToANNContainer`` (LMHT_SNN imports it; not installed here)
  is provided as a stub with SpikingJelly's documented behaviour (merge [T, B] -> [T*B], apply,
  split);
* LMHT_SNN's ``LMHTNeuron.mask_linear`` has shape (T, T, 1, 1, 1), which broadcasts wrongly
  against [T, B, F] activations (their code then returns [T, T, B, F] for a hidden Linear neuron
  layer and cannot run ResNet-19 / VGG). For cases with such layers it is replaced by the shape
  of the commented-out line beside it in their modules.py, (T, T, 1, 1), which gives the
  intended I[t] = sum_j Omega[t, j] x[j]; lmh-import reads either shape.
"""
from __future__ import annotations

import argparse
import contextlib
import sys
import types
from pathlib import Path

import torch
from torch import nn

_THEIR_MODULES = ("modules", "utils", "NetworkFunction", "Models", "models", "ann_models",
                  "dataprocess", "spikingjelly")


def _import_repo(path: Path):
    """Make ``path`` the place their top-level modules (modules.py, utils.py, ...) come from."""
    for name in list(sys.modules):
        if name.split(".")[0] in _THEIR_MODULES:
            del sys.modules[name]
    sys.path[:] = [p for p in sys.path if not p.endswith(("STBP_LMH", "LMHT_SNN"))]
    sys.path.insert(0, str(path))


def _stub_spikingjelly():
    class SeqToANNContainer(nn.Module):  # SpikingJelly's documented behaviour
        def __init__(self, *args):
            super().__init__()
            self.module = args[0] if len(args) == 1 else nn.Sequential(*args)

        def forward(self, x_seq):
            y = self.module(x_seq.flatten(0, 1).contiguous())
            return y.view([x_seq.shape[0], x_seq.shape[1]] + list(y.shape[1:]))

    sj = types.ModuleType("spikingjelly")
    cd = types.ModuleType("spikingjelly.clock_driven")
    layer = types.ModuleType("spikingjelly.clock_driven.layer")
    layer.SeqToANNContainer = SeqToANNContainer
    sj.clock_driven, cd.layer = cd, layer
    sys.modules.update({"spikingjelly": sj, "spikingjelly.clock_driven": cd,
                        "spikingjelly.clock_driven.layer": layer})


@contextlib.contextmanager
def small_width(div: int):
    """While their model is built, every channel count >= 16 is divided by ``div``."""
    def s(c):
        return c // div if c >= 16 else c

    orig = nn.Conv2d, nn.BatchNorm2d, nn.Linear

    class Conv2d(orig[0]):
        def __init__(self, i, o, *a, **k):
            super().__init__(s(i), s(o), *a, **k)

    class BatchNorm2d(orig[1]):
        def __init__(self, n, *a, **k):
            super().__init__(s(n), *a, **k)

    class Linear(orig[2]):
        def __init__(self, i, o, *a, **k):
            super().__init__(s(i), s(o), *a, **k)

    nn.Conv2d, nn.BatchNorm2d, nn.Linear = Conv2d, BatchNorm2d, Linear
    try:
        yield
    finally:
        nn.Conv2d, nn.BatchNorm2d, nn.Linear = orig


def random_qcfs(model, g, lo=0.5, hi=1.5):
    """Random QCFS thresholds (``up`` in STBP_LMH, ``thresh`` in LMHT_SNN) before their code
    converts them into neuron thresholds (and, in LMHT_SNN's hybrid mode, v(0) = theta/2)."""
    with torch.no_grad():
        for m in model.modules():
            if type(m).__name__ == "QCFS":
                p = m.up if hasattr(m, "up") else m.thresh
                p.fill_(float(torch.rand(1, generator=g)) * (hi - lo) + lo)


def randomize(model, g, neuron_types):
    """Random BN statistics and affine, random raw neuron learnables (not the thresholds)."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.BatchNorm2d, nn.BatchNorm3d, nn.BatchNorm1d)):
                n = m.num_features
                m.running_mean.copy_(torch.rand(n, generator=g) * 0.4 - 0.2)
                m.running_var.copy_(torch.rand(n, generator=g) * 1.0 + 0.5)
                m.weight.copy_(torch.rand(n, generator=g) * 0.8 + 0.6)
                m.bias.copy_(torch.rand(n, generator=g) * 0.6 - 0.1)
                m.num_batches_tracked.fill_(int(torch.randint(1, 1000, (1,), generator=g)))
            elif isinstance(m, nn.Linear) and m.bias is not None:
                m.bias.copy_(torch.rand(m.bias.shape, generator=g) * 0.4 - 0.1)
            elif isinstance(m, neuron_types):
                for name, p in m.named_parameters(recurse=False):
                    if name != "v_threshold":
                        p.copy_(torch.rand(p.shape, generator=g) * 3.0 - 1.5)


def record_neurons(model, neuron_types):
    """Forward hooks on every neuron module; returns (outputs dict name -> list, handles)."""
    outs, handles = {}, []
    for name, m in model.named_modules():
        if isinstance(m, neuron_types):
            outs[name] = []
            handles.append(m.register_forward_hook(
                lambda mod, i, o, name=name: outs[name].append((mod, o.detach().clone()))))
    return outs, handles


def to_counts(name, mod, o, levels):
    """Their layer output o = theta * s -> counts s (uint8), checked to round-trip bit for bit."""
    th = mod.v_threshold.detach()
    s = torch.round(o / th)
    assert s.min() >= 0 and s.max() <= levels, (name, float(s.max()))
    assert torch.equal(s * th, o), f"{name}: output is not theta * counts"
    return s.to(torch.uint8)


def fixed_input(g, b, shape):
    """Inputs on a 1/16 grid in [-2, 2] (exact on the deployed input grid)."""
    return torch.randint(-32, 33, (b,) + tuple(shape), generator=g).float() / 16.0


def rates(spikes):
    return {k: round(float((v > 0).float().mean()), 3) for k, v in spikes.items()}


# ----------------------------------------------------------------------------------------------
# STBP_LMH (LM-H)
# ----------------------------------------------------------------------------------------------

STBP_CASES = [
    # name, arch, width divisor, input shape, T, layout (per-step | tebn)
    ("stbp_resnet20_perstep", "resnet20", 8, (3, 8, 8), 4, "per-step"),
    ("stbp_resnet19_tebn", "resnet19", 32, (3, 8, 8), 4, "tebn"),
    ("stbp_vgg11_perstep", "vgg11", 64, (3, 32, 32), 3, "per-step"),
]


def make_stbp(repo: Path, out: Path, seed: int):
    _import_repo(repo)
    import modules as M  # noqa: N812  (their modules.py)
    import utils as U
    from Models.ResNet import resnet19, resnet20
    from Models.VGG import vgg11

    ctor = {"resnet20": resnet20, "resnet19": resnet19, "vgg11": vgg11}
    ntypes = (M.LearnableNeuron, M.OnlineNeuron)
    for i, (case, arch, div, shape, T, layout) in enumerate(STBP_CASES):
        g = torch.Generator().manual_seed(seed + i)
        torch.manual_seed(seed + i)
        with small_width(div):
            model = ctor[arch](num_classes=10)
        model = U.replace_maxpool2d_by_avgpool2d(model)
        tebn = layout == "tebn"
        if tebn:
            model = U.replace_batchnorm2d_by_TEBN(model, T)
        model = U.replace_activation_by_QCFS(model, 4, 8.0)   # their main.py: ANN with QCFS, then
        random_qcfs(model, g)
        model = U.replace_QCFS_by_Lneuron(model, tebn, False, T)  # LM-H neurons with theta = up
        randomize(model, g, ntypes)
        model.eval()
        x = fixed_input(g, 2, shape)
        outs, handles = record_neurons(model, ntypes)
        with torch.no_grad():
            if tebn:  # their train/eval_snn: repeat over T, merge into the batch axis
                y = model(x.unsqueeze(0).repeat(T, 1, 1, 1, 1).flatten(0, 1).contiguous())
                logits = y.view([T, x.shape[0]] + list(y.shape[1:]))
            else:  # per step: T calls with the same image, state kept in the neurons
                logits = torch.stack([model(x) for _ in range(T)])
                U.reset_net(model)
        for h in handles:
            h.remove()
        spikes = {}
        for name, lst in outs.items():
            if tebn:
                (mod, o), = lst
                o = o.view([T, x.shape[0]] + list(o.shape[1:]))
            else:
                mod = lst[0][0]
                o = torch.stack([o for _, o in lst])
            spikes[name] = to_counts(name, mod, o, 1)
        torch.save(model.state_dict(), out / f"{case}.pt")
        args = ["--from", "stbp-lmh", "--arch", arch, "--timesteps", str(T),
                "--input-shape", ",".join(map(str, shape))]
        torch.save({"x": x, "logits": logits.float(), "spikes": spikes, "args": args},
                   out / f"{case}_ref.pt")
        print(case, "logits", tuple(logits.shape), "spike rates", rates(spikes))


# ----------------------------------------------------------------------------------------------
# LMHT_SNN (LM-HT)
# ----------------------------------------------------------------------------------------------

LMHT_CASES = [
    # name, arch, mode, width divisor, input shape, T, L
    ("lmht_resnet19_direct", "resnet19", "direct", 32, (3, 8, 8), 2, 4),
    ("lmht_resnet20_hybrid", "resnet20", "hybrid", 8, (3, 8, 8), 4, 2),
    ("lmht_vgg16_hybrid", "vgg16", "hybrid", 64, (3, 32, 32), 2, 4),
    ("lmht_resnet18_if", "resnet18", "direct", 64, (3, 8, 8), 3, 1),  # L = 1: IFNeuron
]


def _fix_mask_linear(model, ntype, T):
    for m in model.modules():
        if isinstance(m, ntype):
            m.mask_linear = nn.Parameter(torch.zeros((T, T, 1, 1)))  # the commented-out shape


def make_lmht(repo: Path, out: Path, seed: int):
    _import_repo(repo)
    _stub_spikingjelly()
    import modules as M  # noqa: N812
    import utils as U

    ntypes = (M.LMHTNeuron, M.IFNeuron)
    for i, (case, arch, mode, div, shape, T, L) in enumerate(LMHT_CASES):
        g = torch.Generator().manual_seed(seed + 100 + i)
        torch.manual_seed(seed + 100 + i)
        if mode == "direct":  # main.py
            from models.ResNet import resnet18, resnet19

            with small_width(div):
                model = resnet19(num_classes=10, T=T, use_resnet19=True) if arch == "resnet19" \
                    else resnet18(num_classes=10, T=T)
            model = U.replace_activation_by_LMHT(model, L, T)  # theta = 2/L, v(0) = 0
        else:  # hybrid_train.py: ANN with QCFS -> SeqToANN layers -> IF (T=16) -> LM-HT
            from ann_models.ResNet import resnet20
            from ann_models.VGG import vgg16

            with small_width(div):
                model = {"resnet20": resnet20, "vgg16": vgg16}[arch](num_classes=10)
            model = U.replace_activation_by_QCFS(model, 8, 8.0)
            random_qcfs(model, g, 0.6, 1.6)
            model = U.replace_layer_by_snn_layer(model)
            model = U.replace_QCFS_by_IFNode(model, 16)
            model.ann_mode = False
            model = U.replace_IFNode_by_LMHT(model, L, T)
            model.T = T
            first = {"resnet20": lambda: model.conv1[2], "vgg16": lambda: model.layer1[2]}[arch]()
            first.scale = L  # hybrid_train.py: first-layer input gain
        _fix_mask_linear(model, M.LMHTNeuron, T)
        randomize(model, g, ntypes)
        model.eval()
        x = fixed_input(g, 2, shape)
        outs, handles = record_neurons(model, ntypes)
        with torch.no_grad():
            logits = model(x.clone())  # [T, B, K] (their forward unsqueezes in place)
        for h in handles:
            h.remove()
        spikes = {}
        for name, lst in outs.items():
            (mod, o), = lst
            spikes[name] = to_counts(name, mod, o, L)
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=10)
        torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(),
                    "scheduler": sched.state_dict(), "epoch": 3, "max_acc1": 0.5},
                   out / f"{case}.pt")
        args = ["--from", "lmht-snn", "--arch", arch, "--levels", str(L),
                "--input-shape", ",".join(map(str, shape))]
        if L == 1:  # IF neurons store no T
            args += ["--timesteps", str(T)]
        torch.save({"x": x, "logits": logits.float(), "spikes": spikes, "args": args},
                   out / f"{case}_ref.pt")
        print(case, "logits", tuple(logits.shape), "spike rates", rates(spikes))


def make_lmht_edges(repo: Path, out: Path, seed: int):
    """Their ``LMHTNeuron`` alone (hybrid style: theta = 0.9, v(0) = theta/2, L = 4, T = 2,
    random alpha) on inputs that put the first step's membrane on every float32 value within
    +-20 ulps of each threshold level fl(k * theta): the spike rule's rounding edges (their
    cascade ``m >= k*th`` differs from ``floor(m / th)`` on some of them)."""
    _import_repo(repo)
    _stub_spikingjelly()
    import modules as M  # noqa: N812

    g = torch.Generator().manual_seed(seed + 200)
    T, L, th = 2, 4, 0.9
    neuron = M.LMHTNeuron(L, T, th, 0.5)
    with torch.no_grad():
        neuron.alpha.copy_(torch.rand(1, generator=g) * 3.0 - 1.5)
    # mask = 0: Omega = 1/2, so I[0] = x/2 + x/2 = x exactly for an input constant over t
    theta = neuron.v_threshold.detach()
    lam_v0 = (neuron.alpha.sigmoid() + 0.5).detach() * (torch.ones(1) * neuron.inital_mem)
    cols = []
    for k in range(1, L + 1):
        target = k * theta  # fl(k * theta), their comparison value
        m = target.clone()
        for _ in range(20):
            m = torch.nextafter(m, torch.tensor([-1.0]))
        for _ in range(41):
            cols.append(m - lam_v0)  # I with fl(lam*v0 + I) at or next to m
            m = torch.nextafter(m, torch.tensor([10.0]))
    x = torch.cat(cols).reshape(1, 1, 1, -1).expand(T, 1, 1, -1).contiguous()
    with torch.no_grad():
        o = neuron(x.clone())
    spikes = to_counts("edges", neuron, o, L)
    torch.save({"x": x, "spikes": spikes, "levels": L, "v0_frac": 0.5,
                "state": {k: v.detach().clone() for k, v in neuron.state_dict().items()}},
               out / "lmht_neuron_edges.pt")
    print("lmht_neuron_edges", tuple(x.shape), "spike counts", torch.bincount(spikes.flatten().long()).tolist())


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--stbp", type=Path, help="checkout of hzc1208/STBP_LMH")
    p.add_argument("--lmht", type=Path, help="checkout of hzc1208/LMHT_SNN")
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "tests/fixtures/import")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    a.out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    if a.stbp:
        make_stbp(a.stbp, a.out, a.seed)
    if a.lmht:
        make_lmht(a.lmht, a.out, a.seed)
        make_lmht_edges(a.lmht, a.out, a.seed)


if __name__ == "__main__":
    main()
