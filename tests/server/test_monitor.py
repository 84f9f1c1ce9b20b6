"""The scheduler monitor in-process: a fiber that blocks its thread in ``time.sleep`` is
logged (its fiber, its stack, for how long) within twice the threshold, counted, shown in
the admin snapshot while it lasts; a scheduler asleep in epoll is not blocked."""

from __future__ import annotations

import logging
import re
import threading
import time

import pytest

import fibernet
from fibernet.server import admin
from fibernet.server.monitor import Monitor

pytestmark = pytest.mark.timeout(20)

THRESHOLD = 0.1


class _Timed(logging.Handler):
    """Keeps each record of fibernet.monitor with the monotonic time it was logged at."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[tuple[float, logging.LogRecord]] = []
        self.ended = threading.Event()  # a block's end was logged

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append((time.monotonic(), record))
        if "was blocked" in record.getMessage():
            self.ended.set()


@pytest.fixture
def monitor_log():
    handler = _Timed()
    logger = logging.getLogger("fibernet.monitor")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(logging.NOTSET)


@pytest.fixture
def monitor():
    m = Monitor(THRESHOLD).start()
    yield m
    m.stop()


def slow_handler(seen: dict) -> None:
    seen["start"] = time.monotonic()
    time.sleep(0.5)  # blocks the scheduler's thread (not patched)
    seen["snapshot"] = None


def test_a_blocking_handler_is_logged_with_its_stack_within_twice_the_threshold(monitor, monitor_log):
    seen: dict = {}
    during: list = []

    def main() -> None:
        f = fibernet.spawn(slow_handler, seen, name="slow-request")
        # a plain thread looks at the admin snapshot while the scheduler is held
        fibernet.run_in_thread(_look_while_blocked, during)
        f.join()

    fibernet.run(main)
    assert monitor_log.ended.wait(5)
    warnings = [(t, r) for t, r in monitor_log.records if "blocked for" in r.getMessage()]
    assert len(warnings) == 2, [r.getMessage() for _, r in monitor_log.records]
    (seen_at, first), (_, last) = warnings
    message = first.getMessage()
    assert seen_at - seen["start"] < 2 * THRESHOLD, (seen_at - seen["start"], message)
    assert "by fiber slow-request" in message
    assert "in slow_handler" in message and "time.sleep(0.5)" in message
    lasted = float(re.search(r"was blocked for ([\d.]+)s", last.getMessage()).group(1))
    assert 0.5 - 2 * THRESHOLD <= lasted < 2.0  # (seen a poll late, ended a poll late)
    assert monitor.blocks == 1 and monitor.blocked() == []
    assert during and during[0]["fiber"] == "slow-request" and during[0]["seconds"] >= THRESHOLD
    assert any("slow_handler" in line for line in during[0]["stack"])


def _look_while_blocked(out: list) -> None:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        blocked = admin.refresh({})["blocked"]
        if blocked:
            out.extend(blocked)
            return
        time.sleep(0.01)


def test_an_idle_scheduler_is_not_blocked(monitor, monitor_log):
    def main() -> None:
        fibernet.sleep(0.5)  # the scheduler sleeps in epoll: not blocked

    fibernet.run(main)
    assert monitor.blocks == 0
    assert not [r for _, r in monitor_log.records if "blocked" in r.getMessage()]


def test_a_monitor_needs_something_to_watch_for():
    with pytest.raises(ValueError):
        Monitor(0)
