"""Time-slicing online training (LM-H paper Sec. 4.4 and Algorithm 2).

The T steps of a batch are cut into ``ceil(T/k)`` slices of k consecutive steps. Each slice is
run forward from the neuron states left by the previous slice, *detached* (forward values flow
across the boundary, gradients do not), its loss is computed on its own k steps (TET: mean over
the slice of the per-step cross-entropy; CE: cross-entropy of the slice's mean logits), and the
optimizer steps once per slice. The autograd graph therefore never holds more than k steps, so
activation memory is O(k), not O(T).

Constraints (clear errors otherwise): per-step BN needs the global step index inside a synapse
and is refused; an LM-HT neuron with a learned T-GIM needs k to be a multiple of its T (Omega
mixes whole windows).
"""
from __future__ import annotations

import math
from contextlib import contextmanager

import torch

from lmh_deploy.models import PerStepBN


def slice_bounds(timesteps: int, k: int) -> list[tuple[int, int]]:
    """``[(t0, t1), ...]`` covering 0..T-1 in slices of k (the last may be shorter)."""
    if k < 1:
        raise ValueError(f"--slice k must be >= 1, got {k}")
    return [(t0, min(t0 + k, timesteps)) for t0 in range(0, timesteps, k)]


def _unwrap(model):
    return getattr(model, "module", model)


def check_sliceable(model, k: int) -> None:
    """Refuse configurations whose slices cannot be run independently."""
    net = _unwrap(model)
    if any(isinstance(m, PerStepBN) for m in net.modules()):
        raise ValueError("time slicing (--slice) needs tdBN (--bn tdbn): per-step BN indexes the global "
                         "step inside each synapse")
    for m in net.modules():
        if getattr(m, "kind", None) == "lmht" and getattr(m, "learn_omega", False) and k % m.timesteps:
            raise ValueError(f"--slice {k} with LM-HT T={m.timesteps} and a learned T-GIM: k must be a "
                             f"multiple of {m.timesteps}")


def detach_state(state: dict) -> dict:
    """Cut every neuron state out of the graph (Alg. 2 line 14)."""
    def det(v):
        return tuple(det(u) for u in v) if isinstance(v, tuple) else v.detach()
    return {k: det(v) for k, v in state.items()}


def _slice_input(x, net, t0: int, t1: int):
    """Static images stay ``[B, ...]`` (direct encoding, run for t1-t0 steps); frame
    sequences ``[T, B, ...]`` are cut to ``x[t0:t1]``."""
    if x.dim() == len(net.input_shape) + 2:
        return x[t0:t1]
    return x


def train_step_sliced(model, x, y, optimizer, loss_fn, k: int, timesteps: int | None = None,
                      scaler=None, before_step=None, after_step=None, autocast=None):
    """One batch of time-slicing training: one forward/backward/optimizer step per slice.

    ``model`` may be wrapped (DDP): it is called as ``model(x, t, neuron_state=..., t0=...)``.
    ``before_step``/``after_step`` run around each optimizer step (e.g. STDS);
    ``scaler`` is an optional GradScaler, ``autocast`` an optional context factory.
    Returns ``(mean slice loss, logits [T, B, K] detached)``.
    """
    net = _unwrap(model)
    t_total = x.shape[0] if x.dim() == len(net.input_shape) + 2 else (timesteps or net.timesteps)
    state: dict = {}
    losses, logits = [], []
    for t0, t1 in slice_bounds(t_total, k):
        xs = _slice_input(x, net, t0, t1)
        with (autocast() if autocast else _null()):
            out = model(xs, t1 - t0, neuron_state=state, t0=t0)
            loss = loss_fn(out.float(), y)
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            if before_step:
                scaler.unscale_(optimizer)
                before_step()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            if before_step:
                before_step()
            optimizer.step()
        if after_step:
            after_step()
        state = detach_state(state)
        losses.append(float(loss.detach()) * (t1 - t0))
        logits.append(out.detach())
    return sum(losses) / t_total, torch.cat(logits)


@contextmanager
def _null():
    yield


@contextmanager
def saved_tensor_meter():
    """Count the bytes autograd saves for backward (distinct storages), live and peak.

    Yields a dict with ``live`` and ``peak``; call :func:`release` on it after each backward
    (the graph of that slice is freed)."""
    meter = new_meter()
    with torch.autograd.graph.saved_tensors_hooks(lambda t: count_saved(meter, t), lambda t: t):
        yield meter


def new_meter() -> dict:
    """An empty saved-tensor meter: ``live`` and ``peak`` bytes (see :func:`count_saved`)."""
    return {"live": 0, "peak": 0, "_seen": set()}


def count_saved(meter: dict, t: torch.Tensor) -> torch.Tensor:
    """Add ``t``'s storage to ``meter`` (each storage once) and return ``t``: the pack hook of
    :func:`saved_tensor_meter`, usable inside other pack hooks too."""
    try:
        key = (t.untyped_storage().data_ptr(), t.device)
        nbytes = t.untyped_storage().nbytes()
    except (RuntimeError, NotImplementedError):  # pragma: no cover - exotic tensors
        return t
    if key not in meter["_seen"]:
        meter["_seen"].add(key)
        meter["live"] += nbytes
        meter["peak"] = max(meter["peak"], meter["live"])
    return t


def release(meter: dict) -> None:
    """Mark the saved tensors of the finished backward as freed."""
    meter["live"] = 0
    meter["_seen"].clear()


def num_slices(timesteps: int, k: int) -> int:
    return math.ceil(timesteps / k)


__all__ = ["check_sliceable", "count_saved", "detach_state", "new_meter", "num_slices", "release",
           "saved_tensor_meter", "slice_bounds", "train_step_sliced"]
