"""Import checkpoints trained with the papers' original code (``lmh-import``).

* :mod:`.stbp_lmh` -- https://github.com/hzc1208/STBP_LMH (LM-H, ICLR 2024)
* :mod:`.lmht_snn` -- https://github.com/hzc1208/LMHT_SNN (LM-HT, NeurIPS 2024)
* :mod:`.common`   -- safe loading, key grouping and the layer-by-layer mapping onto our models
* :mod:`lmh_deploy.cli.importer` -- the ``lmh-import`` command

Both importers return an :class:`ImportResult`; :func:`import_checkpoint` dispatches by source.
"""
from __future__ import annotations

from .common import ForeignCheckpointError, ImportResult

SOURCES = ("stbp-lmh", "lmht-snn")


def import_checkpoint(source: str, path, arch: str, **options) -> ImportResult:
    """Read ``path`` (a checkpoint of ``source``'s code, network ``arch`` in its naming) and
    return our model with their weights (see :func:`.stbp_lmh.import_stbp_lmh`,
    :func:`.lmht_snn.import_lmht_snn` for the options). Raises :class:`ForeignCheckpointError` (an
    ``LmhError``) with a one-line message for every bad input."""
    if source == "stbp-lmh":
        from .stbp_lmh import import_stbp_lmh

        return import_stbp_lmh(path, arch, **options)
    if source == "lmht-snn":
        from .lmht_snn import import_lmht_snn

        return import_lmht_snn(path, arch, **options)
    raise ForeignCheckpointError(f"unknown source {source!r}; choose one of {', '.join(SOURCES)}")


__all__ = ["ForeignCheckpointError", "ImportResult", "SOURCES", "import_checkpoint"]
