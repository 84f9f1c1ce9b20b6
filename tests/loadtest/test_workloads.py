"""Each workload of loadtest/load.py against an in-process fibernet server, with small counts,
and the errors it must tell apart (refused, timeout, closed early, wrong bytes, non-2xx)."""

from __future__ import annotations

import itertools
import threading

import pytest

from fibernet.examples.echo import handle as echo_handle
from fibernet.http import Response
from fibernet.net.streams import Stream

from .conftest import each_request

pytest.importorskip("hdrh", exc_type=ImportError, reason="the load generator needs hdrhistogram")

pytestmark = pytest.mark.timeout(30)


def ok(result, n: int) -> None:
    assert result.errors == {}, result.error_samples
    assert result.requests == n
    assert result.hist.get_total_count() == n
    assert sum(result.timeline_ok) == n


# -- echo --------------------------------------------------------------------------------------


def test_echo_round_trips_every_message(load, tcp_server):
    host, port = tcp_server(echo_handle)
    result = load.run_load(load.Config("echo", host, port, connections=4, count=200, size=1000))
    ok(result, 200)
    assert result.connects == 4  # kept connections


def test_echo_checks_every_byte(load, tcp_server):
    def last_byte_wrong(conn):  # echoes all but the very last byte of each message correctly
        got = b""
        while data := conn.recv(65536):
            got += data
            while len(got) >= 100:
                msg, got = got[:100], got[100:]
                conn.sendall(msg[:-1] + bytes([msg[-1] ^ 1]))

    host, port = tcp_server(last_byte_wrong)
    result = load.run_load(load.Config("echo", host, port, connections=2, count=10, size=100))
    assert result.requests == 0
    assert result.errors == {"bad_response": 10}


def test_echo_detects_a_stale_echo(load, tcp_server):
    def replays_first(conn):  # answers every message with the first one it got
        first = None
        got = b""
        while data := conn.recv(65536):
            got += data
            while len(got) >= 64:
                msg, got = got[:64], got[64:]
                first = first or msg
                conn.sendall(first)

    host, port = tcp_server(replays_first)
    result = load.run_load(load.Config("echo", host, port, connections=1, count=4, size=64))
    # the first exchange on each connection is right; the one after it is not and closes it
    assert result.requests == 2
    assert result.errors == {"bad_response": 2}


# -- line --------------------------------------------------------------------------------------


def ping_pong(conn):
    stream = Stream(conn)
    while line := stream.readline():
        conn.sendall(b"PONG\n" if line == b"PING\n" else b"WHAT\n")


def test_line_echo(load, tcp_server):
    host, port = tcp_server(echo_handle)
    ok(load.run_load(load.Config("line", host, port, connections=3, count=90, size=50)), 90)


def test_line_with_expected_answer(load, tcp_server):
    host, port = tcp_server(ping_pong)
    ok(
        load.run_load(load.Config("line", host, port, connections=2, count=40, line="PING", expect="PONG")),
        40,
    )
    any_line = load.run_load(load.Config("line", host, port, connections=1, count=5, line="HI", expect="any"))
    ok(any_line, 5)
    wrong = load.run_load(load.Config("line", host, port, connections=1, count=5, line="HI", expect="PONG"))
    assert wrong.requests == 0
    assert wrong.errors == {"bad_response": 5}


# -- http --------------------------------------------------------------------------------------


class Recorder:
    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.seen: list = []
        self.lock = threading.Lock()

    def __call__(self, request):
        with self.lock:
            self.seen.append((request.method, request.path, request.headers.get("x-test"), request.body()))
        return Response(self.status, b"recorded", headers={"content-type": "text/plain"})


def test_http_sends_method_path_headers_and_body(load, http_server):
    app = Recorder()
    host, port = http_server(app)
    cfg = load.Config(
        "http",
        host,
        port,
        connections=2,
        count=30,
        method="POST",
        path="/upload",
        headers=[("x-test", "yes")],
        body="payload",
    )
    result = load.run_load(cfg)
    ok(result, 30)
    assert result.statuses == {"200": 30}
    assert result.connects == 2
    assert app.seen == [("POST", "/upload", "yes", b"payload")] * 30


def test_http_non_2xx_is_an_error(load, http_server):
    host, port = http_server(Recorder(status=503))
    result = load.run_load(load.Config("http", host, port, connections=2, count=8))
    assert result.requests == 0
    assert result.errors == {"status": 8}
    assert result.statuses == {"503": 8}


def test_http_without_keepalive_opens_a_connection_per_request(load, http_server):
    host, port = http_server(Recorder())
    result = load.run_load(load.Config("http", host, port, connections=3, count=24, keepalive=False))
    ok(result, 24)
    assert result.connects == 24


def test_http_pipelining_keeps_depth_requests_in_flight(load, tcp_server):
    """A server that answers only once it holds four whole requests: it serves a client
    that pipelines four deep, and would stall (a timeout) one that does not."""
    response = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"

    def batches_of_four(conn):
        got = b""
        while data := conn.recv(65536):
            got += data
            while got.count(b"\r\n\r\n") >= 4:
                for _ in range(4):
                    got = got.split(b"\r\n\r\n", 1)[1]
                conn.sendall(response * 4)

    host, port = tcp_server(batches_of_four)
    result = load.run_load(load.Config("http", host, port, connections=1, count=40, pipeline=4, timeout=5))
    ok(result, 40)
    shallow = load.run_load(load.Config("http", host, port, connections=1, count=1, pipeline=1, timeout=0.2))
    assert shallow.errors == {"timeout": 1}


def test_http_reads_chunked_and_close_delimited_bodies(load, tcp_server):
    chunked = (
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=1\r\nde\r\n0\r\nt: 1\r\n\r\n"
    )

    def answer_chunked(conn):
        got = b""
        while data := conn.recv(65536):
            got += data
            while b"\r\n\r\n" in got:
                got = got.split(b"\r\n\r\n", 1)[1]
                conn.sendall(chunked)

    host, port = tcp_server(answer_chunked)
    ok(load.run_load(load.Config("http", host, port, connections=2, count=10)), 10)

    def answer_then_close(conn):
        conn.recv(65536)
        conn.sendall(b"HTTP/1.1 200 OK\r\n\r\nbody up to the close")

    host, port = tcp_server(answer_then_close)
    ok(load.run_load(load.Config("http", host, port, connections=2, count=6, keepalive=False)), 6)


def test_http_counts_length_chunked_and_bad_answers(load, tcp_server):
    """The generator's HTTP answers go through httptools' response parser: a server that
    answers in turn with a content-length body, a chunked one (in two writes), another
    content-length one and, every fourth request, a chunk size that is not hex.  Each good
    answer counts once by status; each bad one is one bad_response error and costs its
    connection (the next request opens another)."""
    length = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello"
    chunked = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
    bad = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n"
    turn = itertools.count()

    def answer(conn):
        for _ in each_request(conn):
            k = next(turn) % 4
            if k == 1:
                conn.sendall(chunked[:50])
                conn.sendall(chunked[50:])
            else:
                conn.sendall((length, None, length, bad)[k])

    host, port = tcp_server(answer)
    result = load.run_load(load.Config("http", host, port, connections=1, count=20, timeout=5))
    assert result.requests == 15
    assert result.errors == {"bad_response": 5}
    assert result.statuses == {"200": 15}
    assert result.connects == 5  # the first, and one after each bad answer but the last


# -- churn -------------------------------------------------------------------------------------


def test_churn_connects_exchanges_and_closes(load, tcp_server):
    accepted = itertools.count()

    def counting_echo(conn):
        next(accepted)
        echo_handle(conn)

    host, port = tcp_server(counting_echo)
    result = load.run_load(load.Config("churn", host, port, connections=3, count=30, size=200))
    ok(result, 30)
    assert result.connects == 30
    assert next(accepted) == 30


# -- failures ----------------------------------------------------------------------------------


@pytest.mark.parametrize("workload", ["echo", "http", "churn"])
@pytest.mark.parametrize("rate", [None, 500.0])
def test_a_refused_connection_is_an_error_not_a_crash(load, refused_port, workload, rate):
    result = load.run_load(
        load.Config(workload, "127.0.0.1", refused_port, connections=2, count=6, rate=rate)
    )
    assert result.requests == 0
    assert result.errors == {"refused": 6}
    assert result.percentile(50) is None


def test_a_silent_server_times_out(load, tcp_server):
    def never_answers(conn):
        while conn.recv(65536):
            pass

    host, port = tcp_server(never_answers)
    result = load.run_load(load.Config("echo", host, port, connections=1, count=2, timeout=0.2))
    assert result.errors == {"timeout": 2}
    assert result.elapsed < 2.0


def test_a_server_that_closes_early_is_an_error(load, tcp_server):
    def reads_then_closes(conn):
        conn.recv(65536)

    host, port = tcp_server(reads_then_closes)
    for workload in ("echo", "line", "http"):
        result = load.run_load(load.Config(workload, host, port, connections=1, count=3))
        assert result.errors == {"closed": 3}, workload


def test_every_run_is_bounded_and_loopback_by_default(load):
    with pytest.raises(ValueError, match="exactly one of duration and count"):
        load.Config("echo", "127.0.0.1", 1).validate()
    with pytest.raises(ValueError, match="exactly one"):
        load.Config("echo", "127.0.0.1", 1, duration=1, count=1).validate()
    with pytest.raises(ValueError, match="not a loopback"):
        load.Config("echo", "192.0.2.1", 1, count=1).validate()
    with pytest.raises(ValueError, match="pipelining"):
        load.Config("churn", "127.0.0.1", 1, count=1, pipeline=2).validate()
    load.Config("echo", "192.0.2.1", 1, count=1, allow_remote=True).validate()
