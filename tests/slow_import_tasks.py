"""A task module that takes long to import (as one importing a heavy library does), for the
start-up tests: it writes the file named by SLOW_IMPORT_MARKER, then sleeps."""

import os
import time
from pathlib import Path

Path(os.environ["SLOW_IMPORT_MARKER"]).write_text("importing")
time.sleep(30)
