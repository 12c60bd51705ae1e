"""The export layer (installed as ``lmh_deploy.export``): DeployGraph -> files.

* :mod:`.onnx_export` -- exact ONNX export (the interpreter traced by a symbolic back-end).
* :mod:`.cli` -- the ``lmh-export`` command and its format table ``FORMATS``.
"""
