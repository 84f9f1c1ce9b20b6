"""How load.py drives connections and parses answers: every workload's ``parse`` on answers
cut at every byte, the closed loop driven by readiness callbacks (answers in parts, requests
larger than the socket buffer, errors and reconnects), and the request bytes wrk sends."""

from __future__ import annotations

import socket
import threading

import pytest

from fibernet.http import Response

pytest.importorskip("hdrh", exc_type=ImportError, reason="the load generator needs hdrhistogram")

pytestmark = pytest.mark.timeout(30)


def workloads():
    from _load_workloads import Echo, Http, Line

    return Echo, Http, Line


def cut_everywhere(parse, answer: bytes, seq: int = 0) -> None:
    """``parse`` wants more for every proper prefix (end of stream there: ClosedEarly),
    takes exactly the answer when it is whole, and leaves what follows it."""
    from _load_workloads import ClosedEarly

    for k in range(len(answer)):
        for kind in (bytes, bytearray):
            assert parse(kind(answer[:k]), seq, False) is None, k
        with pytest.raises(ClosedEarly):
            parse(answer[:k], seq, True)
    assert parse(answer, seq, False) == len(answer)
    assert parse(bytearray(answer + b"HTTP/1.1 200"), seq, False) == len(answer)


def test_echo_and_line_answers_cut_anywhere():
    from _load_workloads import BadResponse

    Echo, _, Line = workloads()
    echo = Echo(300)
    cut_everywhere(echo.parse, bytes(echo.request(7)), seq=7)
    with pytest.raises(BadResponse):  # the echo of another request
        echo.parse(bytes(echo.request(8)), 7, False)

    line = Line(40)
    cut_everywhere(line.parse, line.request(3), seq=3)
    with pytest.raises(BadResponse):
        line.parse(line.request(4), 3, False)
    pong = Line(line=b"PING", expect="PONG")
    cut_everywhere(pong.parse, b"PONG\n")
    with pytest.raises(BadResponse):
        pong.parse(b"PANG\n", 0, False)


def test_http_answers_cut_anywhere_and_counted_once():
    from _load_workloads import BadStatus, ClosedEarly

    _, Http, _ = workloads()
    http = Http("127.0.0.1", 80)
    length = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ndate: x\r\n\r\nhello"
    chunked = (
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=1\r\nde\r\n0\r\nt: 1\r\n\r\n"
    )
    interim = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n"
    for answer in (length, chunked, interim):
        cut_everywhere(http.parse, answer)
    # each whole answer counted once, however often its parts were looked at
    assert http.statuses == {200: 4, 204: 2}
    # the same head again is taken without a search (the last head), and still checked
    assert http.parse(length, 0, False) == len(length)
    with pytest.raises(BadStatus):
        http.parse(length.replace(b"200 OK", b"503 No"), 0, False)
    # delimited by the close: whole only at the end of the stream; a kept connection must not close
    close = b"HTTP/1.1 200 OK\r\n\r\nup to the close"
    assert http.parse(close, 0, False) is None
    with pytest.raises(ClosedEarly, match="no keep-alive"):
        http.parse(close, 0, True)
    assert Http("127.0.0.1", 80, keepalive=False).parse(close, 0, True) == len(close)


def test_http_request_bytes_are_wrks(load, tcp_server):
    """By default the request is byte for byte what ``wrk http://HOST:PORT/PATH`` sends."""
    seen: list[bytes] = []
    answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"

    def capture(conn):
        while data := conn.recv(65536):
            seen.append(data)
            conn.sendall(answer)

    host, port = tcp_server(capture)
    result = load.run_load(load.Config("http", host, port, connections=1, count=3, path="/hello"))
    assert result.errors == {} and result.requests == 3
    assert seen == [f"GET /hello HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode()] * 3


def test_closed_loop_answers_written_a_byte_at_a_time(load, tcp_server):
    answer = b"HTTP/1.1 200 OK\r\ncontent-length: 11\r\n\r\nhello world"

    def dribble(conn):
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        got = b""
        while data := conn.recv(65536):
            got += data
            while b"\r\n\r\n" in got:
                got = got.split(b"\r\n\r\n", 1)[1]
                for i in range(len(answer)):
                    conn.sendall(answer[i : i + 1])

    host, port = tcp_server(dribble)
    result = load.run_load(load.Config("http", host, port, connections=3, count=30))
    assert result.errors == {}, result.error_samples
    assert result.requests == 30 and result.statuses == {"200": 30}
    assert result.connects == 3


def test_closed_loop_requests_larger_than_the_socket_buffer(load, http_server):
    """A request body of 4 MB does not fit the socket buffer: the rest is sent by a fiber,
    and the answer is read after it."""
    sizes: list[int] = []
    lock = threading.Lock()

    def app(request):
        size = len(request.body())  # (read before taking the lock: reading suspends the fiber)
        with lock:
            sizes.append(size)
        return Response(200, b"got it", headers={"content-type": "text/plain"})

    body = "x" * (4 << 20)
    host, port = http_server(app, max_body_size=8 << 20)
    result = load.run_load(
        load.Config("http", host, port, connections=2, count=4, method="POST", body=body, timeout=20)
    )
    assert result.errors == {}, result.error_samples
    assert result.requests == 4
    assert sizes == [4 << 20] * 4


def test_closed_loop_reconnects_after_each_failed_exchange(load, tcp_server):
    """A server that answers every second request wrongly: each bad answer is counted,
    the connection closed, and the next token opens a new one."""
    answers = iter([b"ok\n", b"no\n"] * 100)
    lock = threading.Lock()

    def alternate(conn):
        while conn.recv(65536):
            with lock:
                answer = next(answers)
            conn.sendall(answer)

    host, port = tcp_server(alternate)
    result = load.run_load(load.Config("line", host, port, connections=1, count=20, line="hi", expect="ok"))
    assert result.requests == 10
    assert result.errors == {"bad_response": 10}
    assert result.connects == 10  # the first connection, then one after each of 9 errors


def test_closed_loop_a_server_gone_mid_run(load, tcp_server):
    """Connections that the server closes after five exchanges: each loss is one error (the
    sixth exchange: closed, or reset if the request met the closed socket) and a new
    connection, and the run still ends when its tokens do."""

    def five_then_close(conn):
        for _ in range(5):
            data = conn.recv(65536)
            if not data:
                return
            conn.sendall(data)

    host, port = tcp_server(five_then_close)
    result = load.run_load(load.Config("echo", host, port, connections=2, count=60, size=32))
    lost = sum(result.errors.values())
    assert result.requests + lost == 60
    assert set(result.errors) <= {"closed", "reset"}, result.error_samples
    # five answers per connection lost, and at most two connections cut short by the end
    assert 5 * lost <= result.requests <= 5 * lost + 10


def test_closed_loop_answers_larger_than_a_read(load, tcp_server):
    """Echoes of 150 kB arrive in several reads of 64 kB each; every byte is still checked."""
    from fibernet.examples.echo import handle

    host, port = tcp_server(handle)
    result = load.run_load(load.Config("echo", host, port, connections=1, count=4, size=150_000))
    assert result.errors == {}, result.error_samples
    assert result.requests == 4


def test_a_bug_in_a_callback_ends_the_run_with_its_exception(load, tcp_server, monkeypatch):
    """An exception that is not a failed exchange is a bug: the run ends with it (it does
    not hang, and it is not counted as an error of the server)."""
    import _load_workloads

    from fibernet.examples.echo import handle

    def broken(self, buf, seq, eof):
        raise KeyError("a bug in the parser")

    monkeypatch.setattr(_load_workloads.Echo, "parse", broken)
    host, port = tcp_server(handle)
    with pytest.raises(KeyError, match="a bug in the parser"):
        load.run_load(load.Config("echo", host, port, connections=3, count=30))
