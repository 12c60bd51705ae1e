"""``python -m lmh_deploy.training``: the training command (same as ``lmh-train``)."""
import sys

from lmh_deploy.cli.train import main

sys.exit(main())
