"""Every command: :mod:`.common` (one-line errors, exit 2) and one module per command --
:mod:`.export` (lmh-export), :mod:`.run` (lmh-run), :mod:`.verify` (lmh-verify), :mod:`.sweep`
(lmh-sweep), :mod:`.train` (``python training/fit.py``, lmh-train). The core never imports it."""
