"""Pipelined batch schedule shared by the Lava neuron models (pure Python, no Lava import).

A batch of B samples streams through the network back to back, ``period`` steps per sample.
A neuron whose first valid input arrives at global step ``offset`` (0-based; each Dense hop adds
one step, a windowed neuron adds ``window - 1``) sees sample b, step i at global step
``offset + b * period + i`` and resets its state whenever ``i == 0``. Steps before ``offset`` carry
no data (the pipeline is filling) and are ignored.
"""
from __future__ import annotations


def sample_step(time_step: int, offset: int, period: int) -> int:
    """Lava's 1-based ``time_step`` -> the step ``i`` within the current sample, or -1 while the
    pipeline is still filling: ``i = (time_step - 1 - offset) mod period``."""
    k = time_step - 1 - offset
    if k < 0:
        return -1
    return k % period
