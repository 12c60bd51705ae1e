"""The paper-scale training options, as hooks the training loop calls (issue 6).

``train()`` (``loop.py``) stays one plain loop; these functions add, when their option is set:

* ``dataset_options(cfg)``     -- loader options of the real data sets (AutoAugment, Cutout,
  DVS frames = T).
* ``prepare_hybrid(...)``      -- ``--hybrid``: stage 1 trains a QCFS ANN (or loads
  ``--ann-checkpoint``), stage 2 converts it (:mod:`.hybrid`); fine-tuning is the normal loop.
* ``StepRunner``               -- one optimization step per batch (or per time slice with
  ``--slice k``, :mod:`.slicing`), STDS around each optimizer step (``--sparsity-width D``,
  :mod:`.sparse`), bf16 autocast and channels-last on CUDA (``--amp``, ``--channels-last``),
  spike counts instead of layer outputs kept for backward (``--compact-spikes``,
  :mod:`lmh_deploy.spike_memory`).
* DDP wrapping and samplers come from :mod:`.distributed`.
"""
from __future__ import annotations

import contextlib
import math
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from lmh_deploy.spike_memory import CompactSpikes

from .distributed import autocast, to_channels_last
from .evaluation import _to_device, evaluate
from .slicing import check_sliceable, num_slices, train_step_sliced
from .sparse import STDS

#: loaders that take the augmentation options (digits takes none)
_AUGMENTED = ("cifar10", "cifar100", "tinyimagenet", "imagenet")


def dataset_options(cfg: dict) -> dict:
    """Keyword options for ``get_dataset`` of the configured data set."""
    if cfg["dataset"] in _AUGMENTED:
        return {"autoaugment": bool(cfg["autoaugment"]), "cutout": cfg["cutout"]}
    if cfg["dataset"] == "dvscifar10":
        return {"frames": int(cfg["timesteps"])}
    return {}


def updates_per_epoch(cfg: dict, n_train: int, world_size: int = 1) -> int:
    """Optimizer updates per epoch: batches per rank, times slices per batch with ``--slice``."""
    batches = math.ceil(math.ceil(n_train / world_size) / cfg["batch_size"])
    return batches * (num_slices(cfg["timesteps"], cfg["slice"]) if cfg["slice"] else 1)


class StepRunner:
    """``runner(x, y) -> (loss, logits [T, B, K])`` for one batch, with the configured
    slicing / STDS / autocast / channels-last. ``model`` may be DDP-wrapped; ``net`` is the
    SpikingNet inside (STDS manages its weights)."""

    def __init__(self, cfg: dict, model, net, optimizer, loss_fn, device: torch.device,
                 total_updates: int, start_update: int = 0):
        self.cfg, self.model, self.optimizer, self.loss_fn, self.device = cfg, model, optimizer, loss_fn, device
        self.net = net
        self.k = cfg["slice"]
        if self.k:
            check_sliceable(net, self.k)
        self.stds = None
        if cfg["sparsity_width"]:
            self.stds = (STDS.from_sparse(net, cfg["sparsity_width"], total_updates, start_update)
                         if start_update else STDS(net, cfg["sparsity_width"], total_updates))

    def _ac(self):
        return autocast(self.device, self.cfg["amp"])

    def _compact(self):
        """Spiking-layer outputs kept as uint8 counts for backward (exact; see spike_memory)."""
        return CompactSpikes(self.net) if self.cfg["compact_spikes"] else contextlib.nullcontext()

    def __call__(self, x, y):
        x = to_channels_last(x, self.device, self.cfg["channels_last"])
        pre = self.stds.pre_step if self.stds else None
        post = self.stds.post_step if self.stds else None
        if self.k:
            return train_step_sliced(self.model, x, y, self.optimizer, self.loss_fn, self.k,
                                     timesteps=self.cfg["timesteps"], before_step=pre,
                                     after_step=post, autocast=self._ac)
        with self._ac(), self._compact():
            logits = self.model(x)
            loss = self.loss_fn(logits.float(), y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if pre:
            pre()
        self.optimizer.step()
        if post:
            post()
        return float(loss.detach()), logits.detach().float()

    def metrics(self) -> dict:
        return self.stds.metrics() if self.stds else {}


# ---------------------------------------------------------------------------------------------
# hybrid training
# ---------------------------------------------------------------------------------------------


def prepare_hybrid(cfg: dict, model_cfg: dict, data, log=print):
    """Stage 1 + conversion. Returns ``(snn, snn_model_cfg, report)``; the ANN checkpoint is
    written to ``<out>/ann/model.pt`` (or read from ``cfg['ann_checkpoint']``)."""
    from lmh_deploy.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
    from lmh_deploy.models import build_model

    from .hybrid import ann_config, convert
    from .optim import build_optimizer, build_scheduler

    device = torch.device(cfg["device"])
    if cfg["ann_checkpoint"]:
        ann = model_from_checkpoint(load_checkpoint(cfg["ann_checkpoint"]), cfg["ann_checkpoint"])
        log(f"hybrid: QCFS ANN from {cfg['ann_checkpoint']}")
    else:
        ann_cfg = ann_config(model_cfg, tq=cfg["tq"])
        torch.manual_seed(cfg["seed"])
        ann = build_model(ann_cfg).to(device)
        stage = {**cfg, "epochs": cfg["ann_epochs"], "lr": cfg["ann_lr"], "optimizer": "sgd",
                 "loss": "ce", "slice": None, "sparsity_width": None}
        opt = build_optimizer(ann.parameters(), stage)
        sched = build_scheduler(opt, stage)
        step = StepRunner(stage, ann, ann, opt, lambda o, y: torch.nn.functional.cross_entropy(o.mean(0), y),
                          device, total_updates=1)
        for epoch in range(stage["epochs"]):
            ann.train()
            g = torch.Generator().manual_seed(cfg["seed"] * 1_000_003 + 7919 + epoch)
            for x, y in DataLoader(data.train, batch_size=cfg["batch_size"], shuffle=True, generator=g,
                                   num_workers=cfg["num_workers"]):
                step(*_to_device(x, y, device, data.frames))
            sched.step()
            acc = evaluate(ann, data.test, {**cfg, "timesteps": 1}, data.frames)["test_accuracy"]
            log(f"hybrid ANN epoch {epoch + 1}/{stage['epochs']}  test {acc:.4f}")
        path = Path(cfg["out"]) / "ann" / "model.pt"
        path.parent.mkdir(parents=True, exist_ok=True)
        save_checkpoint(path, ann, metrics={"test_accuracy": acc}, train_config=stage,
                        epoch=stage["epochs"])
        log(f"hybrid: QCFS ANN written to {path}")
    ann = ann.to(device)
    ann_acc = evaluate(ann, data.test, cfg, data.frames)["test_accuracy"]
    snn = convert(ann.cpu(), cfg["neuron"], timesteps=cfg["timesteps"],
                  levels=cfg["levels"] if cfg["levels"] is not None else 2,
                  per_channel=bool(cfg["per_channel"])).to(device)
    conv_acc = evaluate(snn, data.test, cfg, data.frames)["test_accuracy"]
    log(f"hybrid: ANN {ann_acc:.4f} -> converted {cfg['neuron']} T={cfg['timesteps']} {conv_acc:.4f} "
        f"before fine-tuning")
    return snn, dict(snn.config), {"ann_accuracy": ann_acc, "converted_accuracy": conv_acc}


__all__ = ["StepRunner", "dataset_options", "prepare_hybrid", "updates_per_epoch"]
