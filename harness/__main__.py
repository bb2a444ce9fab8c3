"""`python -m harness ...` is the `autoresearch` command."""

import sys

from harness.commands.main import main

sys.exit(main())
