"""The HTTP drain (a stop, or a worker retired by a rolling restart) loses no request that a
client sent on a keep-alive connection: an idle connection is not closed under its client,
the request that comes is answered with ``Connection: close``.  Synchronised on the server's
"draining" log line, which it writes once the drain has begun.  Each runs with the
connection idle in its fiber (the default park_after) and parked with none (park_after=0)."""

from __future__ import annotations

import time

import pytest

from tests.server._support import LogEvent

from .conftest import RawClient, Recorder, request

pytestmark = pytest.mark.timeout(30)


PARK_AFTER = pytest.mark.parametrize("park_after", [1.0, 0.0], ids=["in-fiber", "parked"])


@PARK_AFTER
def test_a_request_on_an_idle_keep_alive_connection_during_the_drain_is_answered_then_closed(
    http_server, park_after
):
    app = Recorder()
    server = http_server(app, keepalive_timeout=30.0, graceful_timeout=20.0, park_after=park_after)
    with RawClient(server.address) as c, LogEvent("fibernet.server", "draining 1 connection") as draining:
        c.send(request("GET", "/one"))
        first = c.response()
        assert first.status == 200 and not first.closes
        server.stop()  # the connection is idle, between requests
        assert draining.event.wait(10), "the server never began to drain"
        c.send(request("GET", "/two"))  # a client that did not know
        second = c.response()
        assert second.status == 200
        assert second.closes, "the answer during the drain must say Connection: close"
        assert c.at_eof()
    assert server.wait(10)
    assert app.targets == ["/one", "/two"]


@PARK_AFTER
def test_an_idle_keep_alive_connection_ends_the_drain_at_its_keep_alive_timeout(http_server, park_after):
    """Not closed early, not kept for the whole grace period either: the keep-alive timeout
    (0.5 s here) is when an idle connection ends, draining or not."""
    server = http_server(Recorder(), keepalive_timeout=0.5, graceful_timeout=20.0, park_after=park_after)
    with RawClient(server.address) as c, LogEvent("fibernet.server", "draining 1 connection") as draining:
        c.send(request("GET", "/one"))
        assert c.response().status == 200
        t0 = time.monotonic()
        server.stop()
        assert draining.event.wait(10)
        assert c.at_eof()  # closed quietly, with no response
        assert server.wait(10)
    assert time.monotonic() - t0 < 10, "the idle connection held the drain for the grace period"


@PARK_AFTER
def test_an_idle_keep_alive_connection_is_closed_at_the_end_of_the_grace_period(http_server, park_after):
    server = http_server(Recorder(), keepalive_timeout=60.0, graceful_timeout=60.0, park_after=park_after)
    with RawClient(server.address) as c:
        c.send(request("GET", "/one"))
        assert c.response().status == 200
        t0 = time.monotonic()
        server.stop(0.2)
        assert c.at_eof()  # closed with no response when the grace period ends
        assert server.wait(10)
    assert time.monotonic() - t0 < 10, "the connection outlived the grace period"
