"""``python -m mailfleet``: the ``mailfleet`` command."""

import sys

from mailfleet.cli import main

sys.exit(main())
