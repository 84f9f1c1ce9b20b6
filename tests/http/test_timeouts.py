"""Timeouts, with small limits and measured cuts (generous upper bounds, no sleeps).

- head: an absolute deadline from the head's first byte (408 and close), however slowly the
  bytes keep coming (slowloris), while other connections are served;
- keep-alive: idle between requests (and before the first) closes silently;
- body: inactivity while the app reads the body (408 and close);
- send: a client that does not read is dropped.
"""

from __future__ import annotations

import select
import socket
import time

from fibernet.http import Response

from .conftest import RawClient, Recorder, request

SLACK = 0.05  # timers may fire this much early as measured from the client's side
UPPER = 3.0  # a cut must come within this much of its limit, on a loaded machine too


def readable(sock: socket.socket, timeout: float) -> bool:
    return bool(select.select([sock], [], [], timeout)[0])


def test_slowloris_gets_408_at_the_head_deadline_while_others_are_served(http_server):
    head_timeout = 0.5
    app = Recorder()
    server = http_server(app, head_timeout=head_timeout, keepalive_timeout=30.0, threads=1)
    with RawClient(server.address) as slow:
        slow.send(b"GET / HTTP/1.1\r\nHost: a\r\nX-Slow: ")
        started = time.monotonic()
        # another client on the same scheduler thread is served meanwhile
        with RawClient(server.address) as normal:
            normal.send(request("GET", "/normal"))
            assert normal.response().status == 200
        assert not readable(slow.sock, 0), "the slow client was answered before the normal one"
        # trickle a byte per 50 ms: each is progress, none may extend the deadline
        sent = 0
        while not readable(slow.sock, 0.05):
            assert time.monotonic() - started < head_timeout + UPPER, "the slow head was never cut"
            try:
                slow.send(b"a")
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += 1
        cut = time.monotonic() - started
        reply = slow.response()
        assert reply.status == 408 and reply.closes
        assert slow.at_eof()
    assert head_timeout - SLACK <= cut <= head_timeout + UPPER
    assert sent >= 3, "the client did keep sending"
    assert app.targets == ["/normal"]


def test_partial_head_then_silence_gets_408(http_server):
    server = http_server(Recorder(), head_timeout=0.3, keepalive_timeout=30.0)
    with RawClient(server.address) as c:
        c.send(b"GET / HTTP/1.1\r\nHo")
        started = time.monotonic()
        reply = c.response()
        elapsed = time.monotonic() - started
        assert reply.status == 408 and reply.closes
        assert c.at_eof()
    assert 0.3 - SLACK <= elapsed <= 0.3 + UPPER


def test_keep_alive_idle_connection_is_closed_silently(http_server):
    app = Recorder()
    server = http_server(app, keepalive_timeout=0.3, head_timeout=30.0)
    with RawClient(server.address) as c:
        c.send(request("GET", "/one"))
        assert c.response().status == 200
        started = time.monotonic()
        assert c.at_eof()  # nothing sent (no 408): just closed
        elapsed = time.monotonic() - started
    assert 0.3 - 0.1 <= elapsed <= 0.3 + UPPER  # the server's clock started a little before ours
    assert app.targets == ["/one"]


def test_connection_that_never_sends_is_closed_silently(http_server):
    server = http_server(Recorder(), keepalive_timeout=0.3, head_timeout=30.0)
    with RawClient(server.address) as c:
        started = time.monotonic()
        assert c.at_eof()
        elapsed = time.monotonic() - started
    assert 0.3 - SLACK <= elapsed <= 0.3 + UPPER


def test_body_inactivity_gets_408(http_server):
    app = Recorder(read_body=True)
    server = http_server(app, body_timeout=0.3, keepalive_timeout=30.0, head_timeout=30.0)
    with RawClient(server.address) as c:
        c.send(request("POST", "/slow", headers=[("Content-Length", "10")]) + b"abc")
        started = time.monotonic()
        reply = c.response()
        elapsed = time.monotonic() - started
        assert reply.status == 408 and reply.closes
        assert c.at_eof()
    assert 0.3 - SLACK <= elapsed <= 0.3 + UPPER
    assert app.targets == ["/slow"] and app.completed == []


def test_body_bytes_that_keep_coming_are_not_cut(http_server):
    """body_timeout is inactivity, not a deadline: a slow but steady body is read whole."""
    app = Recorder(lambda r: Response(200, b"%d" % len(r.body())), read_body=False)
    server = http_server(app, body_timeout=0.3, keepalive_timeout=30.0)
    pieces = 6
    with RawClient(server.address) as c:
        c.send(request("POST", "/", headers=[("Content-Length", str(pieces))]))
        started = time.monotonic()
        for _ in range(pieces):
            assert not readable(c.sock, 0.1)  # 0.6 s in all: two body timeouts, never idle 0.3 s
            c.send(b"x")
        reply = c.response()
    assert time.monotonic() - started > 0.3, "the body did outlast one body_timeout"
    assert reply.status == 200 and reply.body == b"%d" % pieces


def test_client_that_does_not_read_is_dropped_after_send_timeout(http_server, spin_until):
    produced = []

    def endless(req):
        def body():
            for _ in range(100_000):  # bounded: 6.4 GB, far more than any socket buffer
                produced.append(1)
                yield b"x" * 65536

        return Response(200, body())

    server = http_server(endless, send_timeout=0.3)
    with socket.create_connection(server.address[:2], timeout=10) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.sendall(request("GET", "/"))
        spin_until(lambda: server.stats()["connections_open"] == 0, "the server to drop the connection", 10.0)
    assert len(produced) < 1000, "the server kept producing for a client that does not read"
