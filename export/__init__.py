"""The export layer's entry point (installed as ``lmh_deploy.export``): ``python -m
lmh_deploy.export`` is ``lmh-export``. The writers live in :mod:`lmh_deploy.onnx.write` and
:mod:`lmh_deploy.nir.write`, the command in :mod:`lmh_deploy.cli.export`."""
