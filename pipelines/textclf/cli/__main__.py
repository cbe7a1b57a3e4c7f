"""``python -m textclf.cli``: the same as the ``textclf`` command."""

import sys

from textclf.cli import main

sys.exit(main())
