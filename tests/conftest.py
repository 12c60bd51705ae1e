"""Test-session set-up shared by all test modules.

Without a CUDA GPU the fused Triton kernels run in Triton's interpreter on CPU tensors; the
switch (``TRITON_INTERPRET=1``) must be set before triton is first imported, by whichever test
module imports it first, so it is set here, once.
"""
import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
