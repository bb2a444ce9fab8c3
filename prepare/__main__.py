"""`python -m prepare`: the same as `autoresearch prepare`."""

import sys

from prepare.cli import main

sys.exit(main())
