"""The HTTP drain (a stop, or a worker retired by a rolling restart) loses no request that a
client sent on a keep-alive connection: an idle connection is not closed under its client,
the request that comes is answered with ``Connection: close``.  Synchronised on the server's
"draining" log line, which it writes once the drain has begun."""

from __future__ import annotations

import time

import pytest

from tests.server._support import LogEvent

from .conftest import RawClient, Recorder, request

pytestmark = pytest.mark.timeout(30)


def test_a_request_on_an_idle_keep_alive_connection_during_the_drain_is_answered_then_closed(http_server):
    app = Recorder()
    server = http_server(app, keepalive_timeout=30.0, graceful_timeout=20.0)
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


def test_an_idle_keep_alive_connection_ends_the_drain_at_its_keep_alive_timeout(http_server):
    """Not closed early, not kept for the whole grace period either: the keep-alive timeout
    (0.5 s here) is when an idle connection ends, draining or not."""
    server = http_server(Recorder(), keepalive_timeout=0.5, graceful_timeout=20.0)
    with RawClient(server.address) as c, LogEvent("fibernet.server", "draining 1 connection") as draining:
        c.send(request("GET", "/one"))
        assert c.response().status == 200
        t0 = time.monotonic()
        server.stop()
        assert draining.event.wait(10)
        assert c.at_eof()  # closed quietly, with no response
        assert server.wait(10)
    assert time.monotonic() - t0 < 10, "the idle connection held the drain for the grace period"
