"""Scale-out helpers: DistributedDataParallel (``torchrun --nproc_per_node N training/fit.py``),
optional SyncBN, bf16 autocast and channels-last on CUDA.

``init_distributed()`` reads the torchrun environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR``, ``MASTER_PORT``); without it the run is single-process and every helper is a
no-op. Gradients are averaged over ranks by DDP, so N ranks with per-rank batch b equal one
process with batch N*b (the loss is a per-sample mean). With BatchNorm the equality holds with
``--sync-bn`` (statistics over the global batch; SyncBN needs CUDA/XPU input) or with BN in eval
mode.
"""
from __future__ import annotations

import os
from contextlib import nullcontext
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str = "cpu", backend: str | None = None) -> DistInfo:
    """Join the process group described by the torchrun environment (no-op without it).
    Backend: NCCL for CUDA, gloo otherwise. Returns this process's :class:`DistInfo`."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device.startswith("cuda"):
        torch.cuda.set_device(local)
    if not dist.is_initialized():
        dist.init_process_group(backend or ("nccl" if device.startswith("cuda") else "gloo"),
                                rank=rank, world_size=world)
    return DistInfo(rank, world, local)


def rank_device(device: str, info: DistInfo) -> torch.device:
    """``cuda`` -> ``cuda:<local_rank>`` under torchrun; other devices unchanged."""
    if device.startswith("cuda") and info.enabled:
        return torch.device("cuda", info.local_rank)
    return torch.device(device)


def wrap_model(model: nn.Module, info: DistInfo, device: torch.device, sync_bn: bool = False) -> nn.Module:
    """SyncBN (optional) + DDP when distributed; the model unchanged otherwise."""
    if not info.enabled:
        return model
    if sync_bn:
        if device.type not in ("cuda", "xpu"):
            raise ValueError("--sync-bn needs CUDA (SyncBatchNorm has no CPU kernel); drop it on the CPU")
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def unwrap(model: nn.Module) -> nn.Module:
    """The SpikingNet inside a DDP wrapper (for checkpoints and evaluation)."""
    return getattr(model, "module", model)


def autocast(device: torch.device, amp: bool):
    """bf16 autocast on CUDA when ``amp``; a null context otherwise (CPU training stays fp32)."""
    if amp and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


def channels_last(model: nn.Module, device: torch.device, enabled: bool = True) -> nn.Module:
    """Channels-last weights for convolutions on CUDA (faster cuDNN kernels); no-op elsewhere."""
    if enabled and device.type == "cuda":
        return model.to(memory_format=torch.channels_last)
    return model


def to_channels_last(x: torch.Tensor, device: torch.device, enabled: bool = True) -> torch.Tensor:
    if enabled and device.type == "cuda" and x.dim() == 4:
        return x.contiguous(memory_format=torch.channels_last)
    return x


def train_sampler(dataset, info: DistInfo, seed: int, shuffle: bool = True):
    """A DistributedSampler giving each rank a disjoint 1/N of every epoch (None when single)."""
    if not info.enabled:
        return None
    from torch.utils.data.distributed import DistributedSampler

    return DistributedSampler(dataset, num_replicas=info.world_size, rank=info.rank, shuffle=shuffle,
                              seed=seed, drop_last=False)


def all_reduce_sum(values: list[float], device: torch.device, info: DistInfo) -> list[float]:
    """Sum a few scalars over ranks (metrics); identity when single-process."""
    if not info.enabled:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


@torch.no_grad()
def broadcast_buffers(model: nn.Module, info: DistInfo) -> None:
    """Copy rank 0's buffers (BN running statistics) to every rank, so that evaluation and the
    checkpoint agree across ranks (each rank updates its running stats on its own shard)."""
    if not info.enabled:
        return
    for b in model.buffers():
        dist.broadcast(b, src=0)


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def cleanup(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()


def loader_kwargs(device: torch.device, num_workers: int) -> dict:
    """Efficient loading: worker processes, pinned memory on CUDA, persistent workers."""
    kw = {"num_workers": num_workers, "pin_memory": device.type == "cuda"}
    if num_workers > 0:
        kw["persistent_workers"] = True
        kw["prefetch_factor"] = 4
    return kw


__all__ = ["DistInfo", "all_reduce_sum", "autocast", "barrier", "broadcast_buffers", "channels_last", "cleanup",
           "init_distributed", "loader_kwargs", "rank_device", "to_channels_last", "train_sampler",
           "unwrap", "wrap_model"]
