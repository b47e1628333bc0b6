"""docs/contracts.md documents every setting exactly as the settings classes define it."""

from __future__ import annotations

import ast
import importlib
import pkgutil
import re
from pathlib import Path

import pytest
from pydantic_settings import BaseSettings

import shoal
from shoal import settings_reference as ref

ROOT = Path(__file__).resolve().parents[1]
CONTRACTS = ROOT / "docs" / "contracts.md"
SERVICES = ROOT / "services" / "shoal"


def test_contracts_hold_the_generated_settings_reference() -> None:
    text = CONTRACTS.read_text()
    assert ref.rewrite(text) == text, (
        "docs/contracts.md's settings tables differ from the settings classes: run `make settings-docs`"
    )


def _settings_classes() -> set[type[BaseSettings]]:
    for module in pkgutil.walk_packages(shoal.__path__, "shoal."):
        if module.name.startswith("shoal.dashboard.pages") or module.name.endswith("__main__"):
            continue  # scripts that run on import (pages draw, __main__ starts a program)
        importlib.import_module(module.name)
    found: set[type[BaseSettings]] = set()
    todo = list(BaseSettings.__subclasses__())
    while todo:
        cls = todo.pop()
        todo.extend(cls.__subclasses__())
        if cls.__module__.startswith("shoal."):
            found.add(cls)
    return found


def test_every_settings_class_is_in_the_reference() -> None:
    assert _settings_classes() == {cls for _, cls in ref.GROUPS}


@pytest.mark.parametrize(("title", "cls"), ref.GROUPS, ids=[title for title, _ in ref.GROUPS])
def test_every_setting_says_what_it_means(title: str, cls: type[BaseSettings]) -> None:
    docs = ref.attribute_docstrings(cls)
    undocumented = [
        name for name in cls.model_fields if not (docs.get(name) or cls.model_fields[name].description)
    ]
    assert not undocumented, f"{title}: give these fields a docstring: {undocumented}"


def _shoal_names_in_strings() -> set[str]:
    """Every SHOAL_* variable name the package's code writes in a string."""
    names: set[str] = set()
    for path in SERVICES.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                names |= set(re.findall(r"\bSHOAL_[A-Z0-9_]*[A-Z0-9]\b", node.value))
    return names


def test_every_variable_the_code_names_is_documented() -> None:
    documented = set(re.findall(r"^\| (SHOAL_[A-Z0-9_]+) \|", CONTRACTS.read_text(), flags=re.MULTILINE))
    missing = _shoal_names_in_strings() - documented
    assert not missing, f"named in services/ but not in the settings reference: {sorted(missing)}"


def test_the_reference_states_defaults_bounds_and_choices() -> None:
    text = ref.reference()
    rows = {
        line.split(" | ")[0].lstrip("| "): line for line in text.splitlines() if line.startswith("| SHOAL_")
    }
    assert rows["SHOAL_LEASE_S"].startswith("| SHOAL_LEASE_S | `10` | number, > 0.2, <= 3600 |")
    assert "| `none` / `local` / `kubernetes` |" in rows["SHOAL_SCALER_BACKEND"]
    assert "| `auto` / `json` / `text` |" in rows["SHOAL_LOG_FORMAT"]
    assert "(unset) | text (may be unset)" in rows["SHOAL_API_TOKEN"]
    assert "computed: the number of CPUs" in rows["SHOAL_PROCESS_POOL_SIZE"]


def test_rewrite_refuses_a_file_without_markers() -> None:
    with pytest.raises(ValueError, match="no settings block"):
        ref.rewrite("# a document without the block\n")
