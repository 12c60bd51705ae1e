"""lmh-deploy: train LM-H and LM-HT spiking neural networks and deploy them exactly.

Data flow: training -> checkpoint (model.pt) -> fold (DeployGraph) -> export (ONNX, NIR)
-> runtimes (reference, torch, onnxruntime, NIR, Lava) -> verify.

The Python API (:mod:`lmh_deploy.api`, imported on first use): :func:`load_model`,
:func:`fold_model`, :func:`export_model`, :func:`run_model`, :func:`verify_model`,
:func:`sweep_model`; the neuron modules for your own networks: ``LMHNeuron``, ``LMHTNeuron``,
``LIFNeuron``.
"""
__version__ = "0.1.0"

_API = ("load_model", "fold_model", "export_model", "run_model", "verify_model", "sweep_model")
_NEURONS = ("LMHNeuron", "LMHTNeuron", "LIFNeuron")
__all__ = ["__version__", *_API, *_NEURONS]


def __getattr__(name):  # PEP 562: keep `import lmh_deploy` light (no torch until used)
    import importlib

    if name in _API:
        return getattr(importlib.import_module("lmh_deploy.api"), name)
    if name in _NEURONS:
        return getattr(importlib.import_module("lmh_deploy.neurons"), name)
    raise AttributeError(f"module 'lmh_deploy' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
