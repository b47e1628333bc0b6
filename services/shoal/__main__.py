"""`python -m shoal` is the `shoal` CLI."""

import sys

from shoal.cli import main

sys.exit(main())
