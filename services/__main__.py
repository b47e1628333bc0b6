"""`python -m services` is the `shoal` CLI."""

import sys

from services.cli import main

sys.exit(main())
