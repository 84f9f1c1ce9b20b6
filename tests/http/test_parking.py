"""Idle keep-alive connections parked with no fiber (``park_after``; ``tcp.Parked``).

The counts come from a probe the app answers on the server's own (only) scheduler thread:
a connection that sent its response parks in the same run of its fiber, before the thread
can run the probe's, so the probe sees every connection that was answered before it parked
-- no waiting, no polling.  Timers run on a MockClock where the test needs them (the
keep-alive timeout of a parked connection); the head deadline is real time, as in
test_timeouts.py.
"""

from __future__ import annotations

import json
import select
import threading
import time

import pytest

import fibernet as fn
from fibernet.http import Response
from fibernet.runtime.scheduler import current_scheduler
from fibernet.server.http import http_server as make_http_server

from .conftest import RawClient, request

pytestmark = pytest.mark.timeout(60)


class Probed:
    """An app that answers ``/probe`` with its scheduler's live fibers and the server's
    parked connections, and anything else with ``hello <target>``."""

    def __init__(self) -> None:
        self.server = None

    def __call__(self, req):
        if req.path == "/probe":
            stats = self.server.stats()
            counts = {"fibers": len(current_scheduler().fibers()), "parked": stats["connections_parked"]}
            return Response(200, json.dumps(counts).encode(), content_type="application/json")
        return Response(200, b"hello " + req.target.encode())


def readable(sock, timeout: float) -> bool:
    return bool(select.select([sock], [], [], timeout)[0])


def probe(server) -> dict:
    """The counts, asked on a connection of its own (closed after: it parks no more)."""
    with RawClient(server.address) as c:
        c.send(request("GET", "/probe", headers=[("Connection", "close")]))
        return json.loads(c.response().body)


def serve_probed(http_server, **options):
    app = Probed()
    app.server = http_server(app, threads=1, **options)
    return app.server


def test_idle_keep_alive_connections_hold_no_fiber(http_server):
    server = serve_probed(http_server, park_after=0, keepalive_timeout=30.0)
    before = probe(server)
    clients = [RawClient(server.address) for _ in range(200)]
    try:
        for c in clients:
            c.send(request("GET", "/one"))
        for c in clients:
            reply = c.response()
            assert reply.status == 200 and not reply.closes
        during = probe(server)
        assert during["parked"] == 200
        # The probe's own fiber is the one more (before too): none per idle connection.
        assert during["fibers"] == before["fibers"], (before, during)
        # ... and each is served again when it speaks.
        for i, c in enumerate(clients):
            c.send(request("GET", f"/two/{i}"))
        for i, c in enumerate(clients):
            assert c.response().body == f"hello /two/{i}".encode()
        assert probe(server)["fibers"] == before["fibers"]
    finally:
        for c in clients:
            c.close()


def test_a_parked_connection_resumes_with_pipelined_requests_in_one_segment(http_server):
    server = serve_probed(http_server, park_after=0, keepalive_timeout=30.0)
    with RawClient(server.address) as c:
        c.send(request("GET", "/first"))
        assert c.response().body == b"hello /first"
        assert probe(server)["parked"] == 1
        c.send(request("GET", "/a") + request("POST", "/b", body=b"xyz") + request("GET", "/c"))
        bodies = [c.response().body for _ in range(3)]
        assert bodies == [b"hello /a", b"hello /b", b"hello /c"]
        assert probe(server)["parked"] == 1  # parked again once the three are answered
        c.send(request("GET", "/last", headers=[("Connection", "close")]))
        reply = c.response()
        assert reply.body == b"hello /last" and reply.closes
        assert c.at_eof()
    assert probe(server)["parked"] == 0


def test_a_busy_connection_keeps_its_fiber_until_it_idles_for_park_after(http_server):
    """The default: a connection parks only once idle for ``park_after`` (1 s), so a
    keep-alive client that sends its next request sooner never pays for a park."""
    server = serve_probed(http_server, keepalive_timeout=30.0)
    with RawClient(server.address) as c:
        c.send(request("GET", "/one"))
        assert c.response().status == 200
        assert probe(server)["parked"] == 0


def test_slow_input_on_a_parked_connection_still_gets_408_at_the_head_deadline(http_server):
    head_timeout = 0.5
    server = serve_probed(http_server, park_after=0, keepalive_timeout=30.0, head_timeout=head_timeout)
    with RawClient(server.address) as c:
        c.send(request("GET", "/one"))
        assert c.response().status == 200
        assert probe(server)["parked"] == 1
        c.send(b"GET /slow HTTP/1.1\r\nHost: a\r\nX-Slow: ")
        started = time.monotonic()
        for _ in range(int(10 / 0.05)):  # a byte per 50 ms: progress that must not extend it
            try:
                c.send(b"a")
            except (BrokenPipeError, ConnectionResetError):
                break
            if readable(c.sock, 0.05):
                break
        cut = time.monotonic() - started
        reply = c.response()
        assert reply.status == 408 and reply.closes
        assert c.at_eof()
    assert head_timeout - 0.05 <= cut <= head_timeout + 3.0


# -- the keep-alive timeout of a parked connection, on a MockClock ------------------------------


class ClockServer:
    """An HTTP server run by ``fn.run`` on a MockClock (no autojump: the test moves time),
    in a thread of its own."""

    def __init__(self, app, **options) -> None:
        self.clock = fn.MockClock(autojump=False)
        self.server = make_http_server(app, threads=1, **options)
        self.thread = threading.Thread(target=fn.run, args=(self.server.run,), kwargs={"clock": self.clock})

    def __enter__(self):
        self.thread.start()
        assert self.server._started.wait(10), "the server did not start"
        return self.server

    def __exit__(self, *exc) -> None:
        self.server.stop(0)
        self.thread.join(10)
        assert not self.thread.is_alive()


@pytest.mark.parametrize(
    "options",
    [
        {"park_after": 0},
        # Beyond park_over a connection parks as soon as it answered, without waiting
        # park_after first: so its keep-alive timeout is not cut by park_after (it was: 5 - 2 s).
        {"park_after": 2.0, "park_over": 0},
    ],
    ids=["park-after-0", "parked-at-once-beyond-park-over"],
)
def test_the_keep_alive_timeout_closes_a_parked_connection(options):
    app = Probed()
    clock_server = ClockServer(app, keepalive_timeout=5.0, **options)
    with clock_server as server:
        app.server = server
        with RawClient(server.address) as c:
            c.send(request("GET", "/one"))
            assert c.response().status == 200
            assert probe(server)["parked"] == 1
            clock_server.clock.advance(4.9)
            assert probe(server)["parked"] == 1, "closed before its keep-alive timeout"
            clock_server.clock.advance(0.2)
            assert c.at_eof()  # closed quietly, with no response
        assert probe(server)["parked"] == 0


def test_many_connections_park_at_once_beyond_park_over(http_server):
    """Idle connections keep their fibers for park_after (30 s here) only while the
    scheduler runs at most park_over fibers; beyond, they park at once."""
    server = serve_probed(http_server, park_after=30.0, park_over=10, keepalive_timeout=60.0)
    before = probe(server)
    clients = [RawClient(server.address) for _ in range(40)]
    try:
        for c in clients:  # one at a time: each is idle when the next one comes
            c.send(request("GET", "/one"))
            assert c.response().status == 200
        during = probe(server)
        assert during["fibers"] <= 10 + 1, during  # (+1: the probe's own)
        assert during["parked"] >= 40 - 10 + before["fibers"] - 1, during
        for c in clients:
            c.send(request("GET", "/two"))
            assert c.response().body == b"hello /two"
    finally:
        for c in clients:
            c.close()
