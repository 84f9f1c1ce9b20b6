"""Open loop: the rate is kept, and latency counts from the intended send time, so a server
that stalls shows in the percentiles (no coordinated omission), where a closed loop hides it."""

from __future__ import annotations

import itertools
import threading
import time

import pytest

from fibernet.http import Response

pytest.importorskip("hdrh", exc_type=ImportError, reason="the load generator needs hdrhistogram")

pytestmark = pytest.mark.timeout(30)

STALL = 1.0


def test_open_loop_at_a_low_rate_hits_the_rate(load, tcp_server):
    arrivals: list[float] = []
    lock = threading.Lock()

    def timed_echo(conn):
        while data := conn.recv(65536):
            with lock:
                arrivals.append(time.monotonic())
            conn.sendall(data)

    host, port = tcp_server(timed_echo)
    result = load.run_load(load.Config("echo", host, port, connections=2, duration=1.0, rate=200.0))
    assert result.errors == {}
    assert result.requests == 200  # tokens due at t0 + k/200 for t < 1 s
    assert result.rate == pytest.approx(200.0, rel=0.05)
    # paced, not a burst followed by waiting: the server saw them over the whole second
    assert len(arrivals) == 200
    assert arrivals[-1] - arrivals[0] >= 0.9
    per_tenth = result.timeline_ok[:10]
    assert all(15 <= n <= 25 for n in per_tenth), per_tenth


def stalling_app(at: int):
    """An HTTP app that blocks its whole server (its scheduler thread) for STALL seconds on
    request number ``at``, as a long GC pause or a blocking call would."""
    counter = itertools.count()
    hello = Response(200, b"hello", headers={"content-type": "text/plain"})

    def app(request):
        if next(counter) == at:
            time.sleep(STALL)
        return hello

    return app


def test_a_stall_shows_in_the_open_loop_p99_not_only_the_max(load, http_server):
    host, port = http_server(stalling_app(at=100))  # about 0.5 s into the run
    result = load.run_load(load.Config("http", host, port, connections=4, duration=2.0, rate=200.0))
    assert result.errors == {}
    assert result.requests == 400
    p99, p90, top = result.percentile(99), result.percentile(90), result.latency()["max"]
    assert top >= 0.9 * STALL * 1000
    # every request due during the stall waited for it: about 200 of 400 are late
    assert p99 >= 0.8 * STALL * 1000, result.latency()
    assert p90 >= 0.5 * STALL * 1000, result.latency()


def test_a_closed_loop_shows_the_same_stall_only_in_the_max(load, http_server):
    """The contrast that the open loop exists for (coordinated omission): the same stall
    delays one request per connection in a closed loop, so its p99 stays small."""
    host, port = http_server(stalling_app(at=500))
    result = load.run_load(load.Config("http", host, port, connections=4, count=2000))
    assert result.errors == {}
    assert result.latency()["max"] >= 0.9 * STALL * 1000
    assert result.percentile(99) < 0.25 * STALL * 1000, result.latency()


def test_open_loop_with_pipelining_keeps_the_rate(load, tcp_server):
    from fibernet.examples.echo import handle

    host, port = tcp_server(handle)
    result = load.run_load(load.Config("echo", host, port, connections=2, count=100, rate=250.0, pipeline=3))
    assert result.errors == {}
    assert result.requests == 100
    assert result.rate == pytest.approx(250.0, rel=0.05)
