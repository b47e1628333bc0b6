"""The shape of names: task names, queue names, task ids and batch refs."""

from __future__ import annotations

import re

NAME_PATTERN = re.compile(r"^[A-Za-z0-9_.:\-]{1,128}$")
"""1-128 of [A-Za-z0-9_.:-]."""
