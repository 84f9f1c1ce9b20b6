"""loadtest/greenlet_floor.py: the per-greenlet memory floor it reports is measured, not made up."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "loadtest" / "greenlet_floor.py"


@pytest.mark.timeout(60)
def test_greenlet_floor_reports_a_positive_rss_per_suspended_greenlet():
    out = subprocess.run(
        [sys.executable, str(SCRIPT), "-n", "2000"], capture_output=True, text=True, timeout=50, check=True
    ).stdout
    m = re.search(r"2,000 suspended greenlets, ([0-9.]+) KiB RSS each \(([0-9.]+) KiB of it seen", out)
    assert m, out
    rss, traced = float(m.group(1)), float(m.group(2))
    assert rss > 0 and 0 < traced <= rss + 1
