#!/usr/bin/env python
"""Copy a checkpoint without its optimizer/scheduler state (for small committed test models),
adding the content hash when it has none: ``python scripts/strip_checkpoint.py IN.pt OUT.pt``."""
import sys

import torch

from lmh_deploy.atomic import atomic_output
from lmh_deploy.checkpoint import HASH_KEY, content_hash, load_checkpoint

ck = load_checkpoint(sys.argv[1])
ck["optimizer"] = ck["scheduler"] = None
ck[HASH_KEY] = content_hash(ck["model_config"], ck["state_dict"])
with atomic_output(sys.argv[2]) as tmp:
    torch.save(ck, tmp)
