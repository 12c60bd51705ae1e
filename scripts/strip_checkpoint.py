#!/usr/bin/env python
"""Copy a checkpoint without its optimizer/scheduler state (for small committed test models):
``python scripts/strip_checkpoint.py IN.pt OUT.pt``."""
import sys

import torch

from lmh_deploy.atomic import atomic_output
from lmh_deploy.checkpoint import load_checkpoint

ck = load_checkpoint(sys.argv[1])
ck["optimizer"] = ck["scheduler"] = None
with atomic_output(sys.argv[2]) as tmp:
    torch.save(ck, tmp)
