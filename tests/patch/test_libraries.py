"""Real client libraries against real servers over loopback, in fibers, patched and not.

The bar (issue 15): 200 fibers on one scheduler, each making one request that the server
answers after 0.5 s, finish in under 2 s with ``patch_all()`` (100 s if they took turns).
Without patching the same library blocks the scheduler's thread, so a few fibers already
take their 0.5 s one after the other.
"""

from __future__ import annotations

import pytest

from .conftest import DELAY, run_clients

BAR_FIBERS = 200
BAR_SECONDS = 2.0
SERIAL_FIBERS = 4  # unpatched: enough to see them take turns, few enough to stay quick


def _check_bar(library: str, target: str) -> None:
    report = run_clients(library, target, BAR_FIBERS, patch=True)
    ok = {"200": BAR_FIBERS} if library in ("http.client", "requests", "urllib3") else None
    ok = ok or {"ok": BAR_FIBERS} if library == "redis" else ok or {"True": BAR_FIBERS}
    assert report["results"] == ok, report
    assert report["wall"] < BAR_SECONDS, report


def _check_serial(library: str, target: str) -> None:
    report = run_clients(library, target, SERIAL_FIBERS, patch=False)
    assert sum(report["results"].values()) == SERIAL_FIBERS, report
    assert report["wall"] >= SERIAL_FIBERS * DELAY * 0.9, report  # one after the other


HTTP_LIBRARIES = ["http.client", "requests", "urllib3"]


@pytest.mark.parametrize("library", HTTP_LIBRARIES)
def test_http_clients_cooperate_when_patched(library, slow_http):
    _check_bar(library, slow_http)


@pytest.mark.parametrize("library", HTTP_LIBRARIES)
def test_http_clients_block_the_scheduler_unpatched(library, slow_http):
    _check_serial(library, slow_http)


def test_redis_cooperates_when_patched(redis_server):
    _check_bar("redis", redis_server)


def test_redis_blocks_the_scheduler_unpatched(redis_server):
    _check_serial("redis", redis_server)


@pytest.mark.parametrize("library", ["psycopg", "pg8000"])
def test_postgres_drivers_cooperate_when_patched(library, postgres):
    _check_bar(library, postgres)


@pytest.mark.parametrize("library", ["psycopg", "pg8000"])
def test_postgres_drivers_block_the_scheduler_unpatched(library, postgres):
    _check_serial(library, postgres)
