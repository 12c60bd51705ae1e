"""The training loop: ``train(cfg) -> metrics``.

One epoch = one pass over the training split in an order drawn from a generator seeded by
``(seed, epoch)``, so a run resumed from the checkpoint of epoch e replays exactly the batches of
an uninterrupted run. After every epoch the model is evaluated on the test split and
``<out>/model.pt`` (with optimizer and scheduler state) and ``<out>/metrics.json`` are written
atomically.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from lmh_deploy.checkpoint import (CheckpointError, atomic_write_text, load_checkpoint,
                                   model_from_checkpoint, save_checkpoint)
from lmh_deploy.data import get_dataset
from lmh_deploy.models import build_model, default_config
from lmh_deploy.neurons import check_finite_neurons

from .config import ConfigError, resolve_config
from .distributed import (broadcast_buffers, channels_last, cleanup, init_distributed, rank_device,
                          train_sampler, wrap_model)
from .evaluation import _to_device, accuracy_per_t, evaluate  # noqa: F401 (accuracy_per_t: public here too)
from .extensions import StepRunner, dataset_options, prepare_hybrid, updates_per_epoch
from .losses import get_loss
from .optim import build_optimizer, build_scheduler, rescale_cosine

CHECKPOINT_NAME = "model.pt"  # the last epoch's checkpoint (resume from it)
BEST_NAME = "best.pt"  # the epoch with the highest test accuracy (keep_best)
METRICS_NAME = "metrics.json"


def model_config_for(cfg: dict, data) -> dict:
    """The model config (``SpikingNet.config``) of a resolved training config and data set."""
    extra = {}
    if cfg["per_channel"]:
        extra["per_channel"] = True
    if cfg["neuron"] == "lif":
        extra["lif_decay"] = float(cfg["lif_decay"])
    if data.input_quantum is not None:
        extra["input_quantum"], extra["input_bound"] = data.input_quantum, data.input_bound
    if getattr(data, "input_norm", None):
        extra["input_norm"] = data.input_norm
    return default_config(arch=cfg["arch"], neuron=cfg["neuron"], timesteps=cfg["timesteps"],
                          num_classes=data.num_classes, input_shape=data.input_shape,
                          levels=cfg["levels"] if cfg["levels"] is not None else 2, bn=cfg["bn"], **extra)


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The generator that orders epoch ``epoch``'s batches (a function of seed and epoch only)."""
    return torch.Generator().manual_seed(int(seed) * 1_000_003 + int(epoch))


def train_one_epoch(model, data, cfg: dict, epoch: int, runner, sampler=None) -> dict:
    """One pass over ``data.train``; returns mean loss and train accuracy (of the mean logits).
    ``runner(x, y) -> (loss, logits)`` makes one update (:class:`extensions.StepRunner`: plain,
    slicing, STDS, AMP); ``sampler``: a DistributedSampler under torchrun."""
    from tqdm import tqdm

    device = torch.device(cfg["device"])
    model.train()
    if sampler is not None:
        sampler.set_epoch(epoch)
    loader = DataLoader(data.train, batch_size=cfg["batch_size"], shuffle=sampler is None,
                        sampler=sampler,
                        generator=epoch_generator(cfg["seed"], epoch) if sampler is None else None,
                        num_workers=cfg["num_workers"], pin_memory=device.type == "cuda")
    total_loss, correct, n = 0.0, 0, 0
    bar = tqdm(loader, desc=f"epoch {epoch + 1}/{cfg['epochs']}", leave=False,
               disable=None if cfg["progress"] is None else not cfg["progress"])
    for x, y in bar:
        x, y = _to_device(x, y, device, data.frames)
        loss_v, logits = runner(x, y)
        b = y.shape[0]
        total_loss += loss_v * b
        correct += int((logits.mean(0).argmax(-1) == y).sum())
        n += b
        bar.set_postfix(loss=f"{total_loss / n:.4f}", acc=f"{correct / n:.4f}")
    bar.close()
    return {"train_loss": total_loss / n, "train_accuracy": correct / n}


def _check_device(name: str) -> None:
    kind = name.split(":")[0]
    if kind == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} requested but CUDA is not available; use --device cpu")
    if kind == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device {name!r} requested but MPS is not available; use --device cpu")


def _resume_state(path: str, model_cfg: dict) -> dict:
    ckpt = load_checkpoint(path)
    if ckpt["model_config"] != model_cfg:
        raise CheckpointError(f"{path}: cannot resume, its model config {ckpt['model_config']} differs "
                              f"from this run's {model_cfg}; use the same model options or a new --out")
    if ckpt.get("optimizer") is None or ckpt.get("scheduler") is None:
        raise CheckpointError(f"{path}: cannot resume, it holds no optimizer/scheduler state")
    return ckpt


def _summary(rec: dict) -> str:
    return (f"epoch {rec['epoch']:>3}/{rec['epochs']}  lr {rec['lr']:.4g}  "
            f"loss {rec['train_loss']:.4f}  train {rec['train_accuracy']:.4f}  "
            f"test {rec['test_accuracy']:.4f}  {rec['epoch_time_s']:.1f}s")


def train(cfg: dict | None = None, on_epoch_end=None, log=print) -> dict:
    """Train a spiking network as configured by ``cfg`` (keys of ``config.DEFAULTS``; missing ones
    take their defaults) and return the final metrics (also written to ``<out>/metrics.json``).

    ``on_epoch_end(epoch, record)`` is called after each epoch's checkpoint is written
    (``epoch`` counts completed epochs); raising from it stops the run the way an interruption
    would. ``log`` receives the one-line summary of each epoch (``None``: silent).
    """
    cfg = resolve_config(cfg)
    _check_device(cfg["device"])
    log = log or (lambda *_: None)
    threads_before = torch.get_num_threads()
    if cfg["threads"] is not None:
        torch.set_num_threads(cfg["threads"])
    try:
        return _train(cfg, on_epoch_end, log)
    finally:
        torch.set_num_threads(threads_before)


def _train(cfg: dict, on_epoch_end, log) -> dict:
    out = Path(cfg["out"])
    device = torch.device(cfg["device"])

    data = get_dataset(cfg["dataset"], root=cfg["data_dir"], seed=cfg["seed"], **dataset_options(cfg))
    model_cfg = model_config_for(cfg, data)
    if cfg["hybrid"]:  # the config the converted SNN will have (for --resume)
        from .hybrid import ann_config, snn_config
        model_cfg = snn_config(ann_config(model_cfg, cfg["tq"]), cfg["neuron"], cfg["timesteps"],
                               cfg["levels"] or 2, bool(cfg["per_channel"]))
    dist_info = init_distributed(cfg["device"])
    device = rank_device(cfg["device"], dist_info)
    if not dist_info.is_main:  # under torchrun only rank 0 logs
        log = lambda *_: None  # noqa: E731
    torch.manual_seed(cfg["seed"])
    model = build_model(model_cfg)
    start_epoch, history, wall_before, extra = 0, [], 0.0, {}
    ckpt = _resume_state(cfg["resume"], model_cfg) if cfg["resume"] else None
    if ckpt is not None:
        model = model_from_checkpoint(ckpt, cfg["resume"])
        extra = {"hybrid": ckpt["metrics"]["hybrid"]} if "hybrid" in ckpt["metrics"] else {}
    elif cfg["hybrid"]:
        if dist_info.enabled and not cfg["ann_checkpoint"]:
            raise ConfigError("under torchrun, hybrid training needs --ann-checkpoint: train the QCFS ANN "
                              "first (one process: --hybrid --epochs 1) and pass its <out>/ann/model.pt")
        model, model_cfg, report = prepare_hybrid(cfg, model_cfg, data, log)
        extra["hybrid"] = report
    model.to(device)
    channels_last(model, device, cfg["channels_last"])
    ddp_model = wrap_model(model, dist_info, device, cfg["sync_bn"])
    if ddp_model is not model and cfg["sync_bn"]:
        model = ddp_model.module  # SyncBN conversion replaced the BN modules
    optimizer = build_optimizer(model.parameters(), cfg)
    scheduler = build_scheduler(optimizer, cfg)
    if ckpt is not None:
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        if scheduler.T_max != cfg["epochs"]:  # --epochs changed on resume: re-place the cosine
            rescale_cosine(optimizer, scheduler, cfg["epochs"])
        start_epoch = int(ckpt["epoch"])
        history = list(ckpt["metrics"].get("history", []))
        wall_before = float(ckpt["metrics"].get("wall_time_s", 0.0))
        log(f"resuming from {cfg['resume']} after epoch {start_epoch}")
    loss_fn = get_loss(cfg["loss"])
    per_epoch = updates_per_epoch(cfg, len(data.train), dist_info.world_size)
    runner = StepRunner(cfg, ddp_model, model, optimizer, loss_fn, device,
                        total_updates=cfg["epochs"] * per_epoch, start_update=start_epoch * per_epoch)
    sampler = train_sampler(data.train, dist_info, cfg["seed"])
    t0 = time.perf_counter()

    def metrics_now(ev: dict) -> dict:
        return {
            "test_accuracy": ev["test_accuracy"],
            "test_accuracy_per_t": ev["test_accuracy_per_t"],
            "test_samples": ev["test_samples"],
            "train_samples": len(data.train),
            "epochs_completed": len(history),
            "wall_time_s": wall_before + time.perf_counter() - t0,
            "history": list(history),
            "config": cfg,
            "model_config": model_cfg,
            "torch_version": str(torch.__version__),
            **extra,
            **runner.metrics(),
        }

    def write(ev: dict, epoch: int) -> dict:
        m = metrics_now(ev)
        if not dist_info.is_main:  # under torchrun only rank 0 writes
            return m
        save_checkpoint(out / CHECKPOINT_NAME, model, metrics=m, train_config=cfg, epoch=epoch,
                        optimizer=optimizer, scheduler=scheduler)
        if cfg["keep_best"] and history and ev["test_accuracy"] >= max(h["test_accuracy"] for h in history):
            save_checkpoint(out / BEST_NAME, model, metrics=m, train_config=cfg, epoch=epoch,
                            optimizer=optimizer, scheduler=scheduler)
        atomic_write_text(out / METRICS_NAME, json.dumps(m, indent=2) + "\n")
        return m

    final = None
    for epoch in range(start_epoch, cfg["epochs"]):
        te = time.perf_counter()
        lr = optimizer.param_groups[0]["lr"]
        rec = train_one_epoch(model, data, cfg, epoch, runner, sampler)
        broadcast_buffers(model, dist_info)
        check_finite_neurons(model, f"after epoch {epoch + 1}")
        scheduler.step()
        ev = evaluate(model, data.test, cfg, data.frames)
        rec = {"epoch": epoch + 1, "epochs": cfg["epochs"], "lr": lr, **rec,
               "test_accuracy": ev["test_accuracy"], "epoch_time_s": time.perf_counter() - te,
               **runner.metrics()}
        history.append(rec)
        final = write(ev, epoch + 1)
        log(_summary(rec))
        if on_epoch_end is not None:
            on_epoch_end(epoch + 1, rec)
    if final is None:  # nothing left to train (resumed a finished run): evaluate and rewrite
        final = write(evaluate(model, data.test, cfg, data.frames), start_epoch)
    cleanup(dist_info)
    return final
