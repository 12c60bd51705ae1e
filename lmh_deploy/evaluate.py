"""Evaluation helpers shared by lmh-run, lmh-verify and lmh-sweep: test data as arrays, accuracy
after each step, firing statistics."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def load_eval_data(dataset: str, limit: int | None = None, root: str | None = None, **options):
    """The test split of ``dataset`` as float32 ``x`` (``[N, ...]`` or frames ``[T, N, ...]``) and
    int64 labels ``y`` (the first ``limit`` samples); ``root`` (``--data-dir``) and ``options``
    (the loader's keyword options) go to :func:`lmh_deploy.data.get_dataset`."""
    from lmh_deploy.data import get_dataset

    splits = get_dataset(dataset, root=root, **options)
    test = splits.test
    n = len(test) if limit is None else min(int(limit), len(test))
    if hasattr(test, "tensors"):
        x, y = test.tensors[0][:n].numpy(), test.tensors[1][:n].numpy()
    else:
        items = [test[i] for i in range(n)]
        x = np.stack([np.asarray(a) for a, _ in items])
        y = np.asarray([int(b) for _, b in items])
    x = np.asarray(x, np.float32)
    if splits.frames:  # [N, T, ...] -> time-major [T, N, ...]
        x = np.ascontiguousarray(np.swapaxes(x, 0, 1))
    return x, np.asarray(y, np.int64)


def accuracy_per_step(logits: np.ndarray, labels: np.ndarray) -> list:
    """Accuracy after each step t of the cumulative mean logits,
    ``argmax_k (1/t) sum_{u<=t} logits[u, :, k]`` (as in training), for t = 1..T."""
    logits = np.asarray(logits, np.float32)
    t = logits.shape[0]
    cum = np.cumsum(logits, 0, dtype=np.float32) / np.arange(1, t + 1, dtype=np.float32).reshape(-1, 1, 1)
    return [float(v) for v in (cum.argmax(-1) == np.asarray(labels)[None]).mean(1)]


def cross_entropy_per_step(logits: np.ndarray, labels: np.ndarray) -> list:
    """Mean cross-entropy (nats) of the cumulative mean logits after each step t = 1..T:
    ``mean_n -log softmax((1/t) sum_{u<=t} logits[u, n])[y_n]`` (float64 log-sum-exp)."""
    logits = np.asarray(logits, np.float64)
    t = logits.shape[0]
    cum = np.cumsum(logits, 0) / np.arange(1, t + 1).reshape(-1, 1, 1)
    m = cum.max(-1, keepdims=True)
    lse = (m[..., 0] + np.log(np.exp(cum - m).sum(-1)))
    y = np.asarray(labels)
    picked = np.take_along_axis(cum, y[None, :, None].repeat(t, 0), -1)[..., 0]
    return [float(v) for v in (lse - picked).mean(1)]


class SpikeTally:
    """:func:`spike_stats` accumulated over batches (``add`` each batch's spike counts
    ``{layer: [T, B, ...]}``; ``stats()`` the figures of the whole set)."""

    def __init__(self, steps: int | None = None):
        self.steps = steps
        self.sums: dict = {}
        self.sizes: dict = {}
        self.samples = 0
        self.recorded = False

    def add(self, spikes: dict) -> "SpikeTally":
        n = None
        for name, s in spikes.items():
            s = s[:self.steps] if self.steps else s
            n = s.shape[1]
            self.sums[name] = self.sums.get(name, 0.0) + float(s.sum(dtype=np.float64))
            self.sizes[name] = self.sizes.get(name, 0) + int(s.size)
        if spikes:
            self.recorded = True
            self.samples += int(n)
        return self

    def stats(self) -> dict:
        if not self.recorded:
            return {"firing_rate": {}, "spikes_per_sample": None}
        rates = {k: self.sums[k] / self.sizes[k] if self.sizes[k] else 0.0 for k in self.sums}
        total = sum(self.sums.values())
        return {"firing_rate": rates,
                "spikes_per_sample": total / self.samples if self.samples else 0.0}


def spike_stats(spikes: dict, steps: int | None = None) -> dict:
    """Over the first ``steps`` steps: mean spike count per neuron per step of each layer
    (``firing_rate``) and total spike count per sample (``spikes_per_sample``; None when the
    run recorded no spikes, e.g. an ONNX file exported without ``--with-spikes``)."""
    return SpikeTally(steps).add(spikes).stats()


#: the data set of a file that names none
FALLBACK_DATASET = "digits"


def trained_dataset(path) -> str | None:
    """The data set a checkpoint or exported file says it was trained on (None if it says not):
    a checkpoint's ``train_config["dataset"]``, an ONNX file's ``lmh.dataset`` metadata, a NIR
    file's ``dataset`` graph metadata."""
    path = Path(path)
    try:
        if path.suffix == ".onnx":
            import onnx

            props = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
            return props.get("lmh.dataset") or None
        if path.suffix == ".nir":
            from lmh_deploy.nir.file import read_graph

            return (read_graph(path).metadata or {}).get("dataset") or None
        from lmh_deploy.checkpoint import load_checkpoint

        return load_checkpoint(path).get("train_config", {}).get("dataset") or None
    except Exception:  # noqa: BLE001 - only a hint: the command reports a bad file itself
        return None


def resolve_dataset(path, dataset: str | None) -> str:
    """``dataset`` if given, else the file's training data set, else digits."""
    return dataset or trained_dataset(path) or FALLBACK_DATASET
