"""Keep spikes, not layer outputs, for backward: 1 byte per neuron-step instead of 2 (bf16) or 4.

A spiking layer's output ``o = theta * s`` is the input of the next synapse, which saves it for
its weight gradient. ``o`` takes only the values ``theta * k`` for the counts ``k = 0..L``, so
autograd can keep the uint8 counts ``k`` instead and rebuild ``o`` in backward with the very
operation the reference forward uses, ``k.to(o.dtype) * theta`` -- bit for bit the same tensor
(the fused kernels' ``theta * s`` is tested to equal it exactly). Nothing changes in the numbers:
gradients and trained weights are identical; only the memory held between forward and backward
shrinks.

Usage (the training loop does this when ``compact_spikes`` is on, the default)::

    with CompactSpikes(model):
        loss = loss_fn(model(x), y)
    loss.backward()

While the context is active each :class:`~lmh_deploy.neurons.SpikingNeuron` of ``model`` hands its
output and its uint8 counts to the context (:meth:`CompactSpikes.add`; the fused GPU kernels write
the counts in the same pass), and ``torch.autograd.graph.saved_tensors_hooks`` swaps every saved
tensor that is such an output, or a view of one, for the counts. A saved tensor is swapped only if
it still is that output: the same storage, dtype and version (no in-place change since), else
it is kept as is. Backward may run after the context is left.
"""
from __future__ import annotations

import weakref
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class _Output:
    """A registered neuron output (held weakly) and its uint8 counts."""

    ref: weakref.ref
    counts: torch.Tensor
    theta: torch.Tensor
    version: int


@dataclass(frozen=True)
class _Packed:
    """What autograd keeps for a swapped tensor: the counts and how to rebuild the view."""

    counts: torch.Tensor
    theta: torch.Tensor
    dtype: torch.dtype
    size: tuple
    stride: tuple
    offset: int


class CompactSpikes:
    """Context manager: tensors saved for backward that are spiking-layer outputs ``theta * s``
    are kept as uint8 counts ``s`` and rebuilt exactly (``s.to(dtype) * theta``) in backward.

    ``stats``: ``{"swapped": saved tensors swapped, "bytes_saved": bytes of the outputs no
    longer held minus their counts}`` (each output counted once, however many ops saved it).
    """

    def __init__(self, model: torch.nn.Module):
        from .neurons import SpikingNeuron

        self._neurons = [m for m in model.modules() if isinstance(m, SpikingNeuron)]
        self._outputs: dict[int, _Output] = {}
        self._swapped: set[int] = set()
        self._hooks = None
        self.stats = {"swapped": 0, "bytes_saved": 0}

    def __enter__(self) -> "CompactSpikes":
        for m in self._neurons:
            m.spike_sink = self
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, self._unpack)
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._hooks.__exit__(*exc)
        self._hooks = None
        for m in self._neurons:
            m.__dict__.pop("spike_sink", None)  # back to the class default (None)
        self._outputs.clear()
        self._swapped.clear()

    def add(self, out: torch.Tensor, counts: torch.Tensor, theta: torch.Tensor) -> None:
        """Register a neuron output ``out = theta * counts`` (``counts``: uint8, same layout)."""
        if (counts is None or counts.stride() != out.stride() or out.storage_offset() != 0
                or counts.shape != out.shape):
            return  # a layout the rebuild could not reproduce: keep the output as it is
        key = out.untyped_storage().data_ptr()
        self._outputs[key] = _Output(weakref.ref(out), counts, theta.detach(), out._version)

    def _pack(self, t: torch.Tensor):
        entry = self._outputs.get(t.untyped_storage().data_ptr()) if t.numel() else None
        if entry is None:
            return t
        base = entry.ref()
        if (base is None or base.dtype != t.dtype or base._version != entry.version
                or base.untyped_storage().data_ptr() != t.untyped_storage().data_ptr()):
            return t  # freed and the memory reused, or changed in place: not the spikes
        self.stats["swapped"] += 1
        key = t.untyped_storage().data_ptr()
        if key not in self._swapped:
            self._swapped.add(key)
            self.stats["bytes_saved"] += t.untyped_storage().nbytes() - entry.counts.numel()
        return _Packed(entry.counts, entry.theta, t.dtype, tuple(t.size()), tuple(t.stride()),
                       t.storage_offset())

    @staticmethod
    def _unpack(p):
        if not isinstance(p, _Packed):
            return p
        full = p.counts.to(p.dtype) * p.theta  # the reference forward's own operation
        return full.as_strided(p.size, p.stride, p.offset)


__all__ = ["CompactSpikes"]
