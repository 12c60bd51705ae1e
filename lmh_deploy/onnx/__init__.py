"""ONNX: :mod:`.write` (DeployGraph -> exact ONNX, the interpreter traced symbolically) and
:mod:`.run` (an exported file in onnxruntime). Importing this package imports no ``onnx``."""
