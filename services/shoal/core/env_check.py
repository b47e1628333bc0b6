"""Finds `SHOAL_*` environment variables that no setting reads, so a typo is never silent.

The valid names are derived from the settings classes themselves (every field of every group
in `Settings.GROUPS`, under its `SHOAL_` prefix), so a setting added to any group is known at
once. `OTHER_VARIABLES` lists the few names that are read outside the settings classes.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping

from pydantic_settings import BaseSettings

PREFIX = "SHOAL_"

OTHER_VARIABLES: tuple[tuple[str, str, str, str], ...] = (
    (
        "SHOAL_RUN_DIR",
        "`run`",
        "path",
        "Where `make up` / `shoal dev` keep the private Redis' data and logs.",
    ),
    (
        "SHOAL_REDIS_PASSWORD",
        "(unset)",
        "text",
        "Set by the chart only, to build SHOAL_REDIS_URL from the Secret by `$(VAR)` expansion.",
    ),
    (
        "SHOAL_TEST_REDIS_URL",
        "`redis://127.0.0.1:6379/15`",
        "text",
        "The Redis the test suite uses (`make test`; tests/conftest.py).",
    ),
)
"""Variables read outside the settings classes: (env, default, values, meaning) for the settings
reference (shoal.settings_reference), which documents them beside the groups."""


def variable_names(group: type[BaseSettings]) -> set[str]:
    """The environment variables one settings class reads."""
    prefix = str(group.model_config.get("env_prefix", "")).upper()
    names = set()
    for name, field in group.model_fields.items():
        alias = field.validation_alias if isinstance(field.validation_alias, str) else None
        names.add((alias or f"{prefix}{name}").upper())
    return names


def known_variables(groups: Mapping[str, type[BaseSettings]]) -> frozenset[str]:
    """Every `SHOAL_*` name some part of Shoal reads."""
    names = {env for env, *_ in OTHER_VARIABLES}
    for group in groups.values():
        names |= variable_names(group)
    return frozenset(names)


def unknown_variables(environ: Mapping[str, str], known: Iterable[str]) -> list[str]:
    """One message per `SHOAL_*` variable in `environ` that is not in `known`, naming the
    closest valid name when there is one."""
    valid = sorted(set(known))
    problems = []
    for name in sorted(environ):
        upper = name.upper()
        if not upper.startswith(PREFIX) or upper in valid:
            continue
        close = difflib.get_close_matches(upper, valid, n=1, cutoff=0.75)
        hint = f"; did you mean {close[0]}?" if close else " (docs/contracts.md lists the valid names)"
        problems.append(f"{name} is not a Shoal setting{hint}")
    return problems
