"""``python -m lmh_deploy.export`` = ``lmh-export``."""
import sys

from lmh_deploy.cli.export import main

sys.exit(main())
