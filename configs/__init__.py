"""The papers' training configs, shipped as package data (``lmh-train --config NAME``)."""
