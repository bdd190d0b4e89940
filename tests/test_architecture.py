"""docs/architecture.md stays true: every module, object and table it names exists where it says."""

from __future__ import annotations

import importlib
import importlib.util
import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit
DOC = (Path(__file__).resolve().parents[1] / "docs" / "architecture.md").read_text()


def resolve(dotted: str) -> object:
    """The module `dotted` names, or the attribute of its longest module prefix (LookupError: neither)."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        module = ".".join(parts[:cut])
        try:
            found = importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:  # a name inside a module, not a submodule
            found = False
        if found:
            target: object = importlib.import_module(module)
            for name in parts[cut:]:
                target = getattr(target, name)
            return target
    raise LookupError(dotted)


NAMED = sorted(set(re.findall(r"`(mlkube(?:\.\w+)+)`", DOC)))
TABLES = sorted(
    {
        (table, module)
        for *tables, module in re.findall(
            r"`([A-Z_]+)`(?: or `([A-Z_]+)`)?(?:\s+table)?\s+of\s+`(mlkube(?:\.\w+)+)`", DOC
        )
        for table in tables
        if table
    }
)


def test_the_page_names_modules():
    assert len(NAMED) > 20 and len(TABLES) >= 6


@pytest.mark.parametrize("dotted", NAMED)
def test_every_named_module_or_object_exists(dotted):
    resolve(dotted)


@pytest.mark.parametrize(("table", "module"), TABLES)
def test_every_named_table_is_in_its_module(table, module):
    assert isinstance(getattr(importlib.import_module(module), table), (dict, list, tuple))
