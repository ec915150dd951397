"""``python -m latentseek_fast``: the same command line as the ``latentseek-fast`` script."""

import sys

from .app.cli import main

sys.exit(main())
