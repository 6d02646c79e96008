"""``python -m AlignSeriesLib``: the same as the ``alignseries`` command."""

import sys

from .cli import main

sys.exit(main())
