"""``python -m uslkit`` is the same command line as ``uslkit``."""

import sys

from .cli import main

sys.exit(main())
