"""lmh-deploy: train LM-H and LM-HT spiking neural networks and deploy them exactly.

Data flow: training -> checkpoint (model.pt) -> fold (DeployGraph) -> export (ONNX, NIR)
-> runtimes (reference, torch, onnxruntime, NIR, Lava) -> verify.
"""
__version__ = "0.1.0"
