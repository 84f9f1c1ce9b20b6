"""The shipped sources point only to what a user can read: no "the seed" (a design source
that does not ship), no DESIGN.md, no "the issue" (a tracker a user of the package does not
see).  Guile Fibers' manual and its source are public, so those are named instead."""

from __future__ import annotations

import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
SHIPPED = ["fibernet", "cli", "loadtest"]
UNREADABLE = re.compile(r"\bthe seed\b|\bseed's\b|DESIGN\.md|\bthe issue\b|\bthe issue's\b", re.IGNORECASE)


def _sources() -> list[pathlib.Path]:
    return sorted(p for folder in SHIPPED for p in (ROOT / folder).rglob("*.py"))


def test_there_are_sources_to_check():
    assert len(_sources()) > 30


@pytest.mark.parametrize("path", _sources(), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_pointer_to_what_does_not_ship(path):
    found = [f"{path.relative_to(ROOT)}:{n}: {line.strip()}"
             for n, line in enumerate(path.read_text().splitlines(), 1) if UNREADABLE.search(line)]
    assert not found, "\n".join(found)
