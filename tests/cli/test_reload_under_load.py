"""A rolling restart under a real load generator loses no request: ``fibernet serve
fibernet.examples.hello:app --workers 2`` under ``wrk -t2 -c50`` and ``h2load --h1 -t2 -c50``
with ``kill -HUP`` to the supervisor 1 s into a 5 s run, three runs each, 0 failed requests
(wrk: socket errors and non-2xx answers; h2load: failed, errored and timed-out requests), and
every worker of before the SIGHUP gone before the load ends (4 s for a new generation to
start and the old one to drain: ample on an idle machine, where it takes under a second).
``loadtest/sighup.py`` runs the same procedure and also measures gunicorn (gevent workers)
beside it.

The SIGHUP is sent at a point in the run on purpose (the load must be running around it);
the outcome is read from the tools' reports and the supervisor's children, never from time.
"""

from __future__ import annotations

import importlib
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RUNS = 3

pytestmark = pytest.mark.timeout(150)


def _sighup(monkeypatch):
    """loadtest/sighup.py, imported from the loadtest folder (for this test only)."""
    monkeypatch.syspath_prepend(os.path.join(ROOT, "loadtest"))
    monkeypatch.delitem(sys.modules, "sighup", raising=False)
    return importlib.import_module("sighup")


@pytest.mark.parametrize("tool", ["wrk", "h2load"])
def test_sighup_under_load_fails_no_request(tool, tmp_path, monkeypatch, requires):
    requires(tool)  # skips naming the Debian package when it is absent
    sighup = _sighup(monkeypatch)
    runs = [sighup.run_once("fibernet", tool, duration=5.0, hup_at=1.0, log_dir=str(tmp_path))
            for _ in range(RUNS)]
    report = "\n".join(f"{r.requests} requests, {r.failed} failed, old workers gone after {r.reload_s}s: "
                       f"{r.detail}" for r in runs)
    print(f"\n{tool}:\n{report}")
    assert all(r.reloaded for r in runs), f"the workers were not replaced within the run:\n{report}"
    assert all(r.requests > 0 for r in runs), report
    assert [r.failed for r in runs] == [0] * RUNS, report
