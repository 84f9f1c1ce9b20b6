"""Fixtures for the net-layer tests.

``_no_leaks`` (autouse): every test here ends with no runtime alive, no thread left behind
(the process-wide thread pool's workers excepted: they live as long as the process) and no
descriptor left open.
"""

from __future__ import annotations

import threading

import pytest

import fibernet as fn
from fibernet.runtime.runtime import runtimes


def _threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if not t.name.startswith("fibernet-pool")}


@pytest.fixture(autouse=True)
def _no_leaks(open_fds):
    threads_before = _threads()
    fds_before = open_fds()
    yield
    assert runtimes() == [], "a runtime is still alive after the test"
    assert fn.schedulers() == []
    assert _threads() <= threads_before, _threads() - threads_before
    leaked = open_fds().leaked_since(fds_before)
    assert not leaked, f"descriptors left open: {leaked}"
