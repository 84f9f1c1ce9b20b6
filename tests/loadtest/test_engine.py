"""How load.py drives connections and parses answers: every workload's ``parse`` on answers
cut at every byte, the closed loop driven by readiness callbacks (answers in parts, requests
larger than the socket buffer, errors and reconnects), and the request bytes wrk sends."""

from __future__ import annotations

import threading

import pytest

from fibernet.http import Response

from .conftest import each_request

pytest.importorskip("hdrh", exc_type=ImportError, reason="the load generator needs hdrhistogram")

pytestmark = pytest.mark.timeout(30)


def workloads():
    from _load_workloads import Echo, Http, Line

    return Echo, Http, Line


def cut_everywhere(workload, answer: bytes, seq: int = 0, follows: bytes = b"HTTP/1.1 200") -> None:
    """A reader of ``workload`` wants more for every proper prefix of ``answer`` (end of
    stream there: ClosedEarly), has it whole when the rest comes, and keeps what follows it."""
    from _load_workloads import ClosedEarly

    for k in range(len(answer)):
        for kind in (bytes, bytearray):
            reader = workload.reader()
            assert reader.take(kind(answer[:k]), seq, False) is False, k
            assert reader.take(kind(answer[k:]), seq, False) is True, k
        with pytest.raises(ClosedEarly):
            workload.reader().take(answer[:k], seq, True)
    reader = workload.reader()
    assert reader.take(answer + follows, seq, False) is True
    assert reader.take(b"", seq, False) is False  # what follows is not an answer yet


def test_echo_and_line_answers_cut_anywhere():
    from _load_workloads import BadResponse

    Echo, _, Line = workloads()
    echo = Echo(300)
    cut_everywhere(echo, bytes(echo.request(7)), seq=7, follows=bytes(echo.request(8))[:9])
    with pytest.raises(BadResponse):  # the echo of another request
        echo.reader().take(bytes(echo.request(8)), 7, False)

    line = Line(40)
    cut_everywhere(line, line.request(3), seq=3, follows=b"abc")
    with pytest.raises(BadResponse):
        line.reader().take(line.request(4), 3, False)
    pong = Line(line=b"PING", expect="PONG")
    cut_everywhere(pong, b"PONG\n", follows=b"PO")
    with pytest.raises(BadResponse):
        pong.reader().take(b"PANG\n", 0, False)


LENGTH = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ndate: x\r\n\r\nhello"
CHUNKED = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=1\r\nde\r\n0\r\nt: 1\r\n\r\n"
INTERIM = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n"


def test_http_answers_cut_anywhere_and_counted_once():
    """httptools' response parser frames each answer by its content-length, its chunks (with
    extensions and trailer fields), or none (1xx, 204): whole only with its last byte, wherever
    the answer is cut, and counted once by status."""
    _, Http, _ = workloads()
    for answer, status in ((LENGTH, 200), (CHUNKED, 200), (INTERIM, 204)):
        http = Http("127.0.0.1", 80)
        cut_everywhere(http, answer)
        # whole once per cut (2 kinds each) and once at the end, never for a prefix or a 1xx
        assert http.statuses == {status: 2 * len(answer) + 1}, answer


def test_http_answers_back_to_back_are_each_taken():
    _, Http, _ = workloads()
    http = Http("127.0.0.1", 80)
    reader = http.reader()
    stream = LENGTH + CHUNKED + INTERIM + LENGTH
    assert reader.take(stream[:-3], 0, False) is True
    assert [reader.take(b"", seq, False) for seq in (1, 2, 3)] == [True, True, False]
    assert reader.take(stream[-3:], 3, False) is True
    assert http.statuses == {200: 3, 204: 1}


def test_bad_http_answers_are_errors_of_their_kind():
    from _load_workloads import BadResponse, BadStatus, ClosedEarly, classify

    _, Http, _ = workloads()
    http = Http("127.0.0.1", 80)
    with pytest.raises(BadStatus) as status:
        http.reader().take(LENGTH.replace(b"200 OK", b"503 No"), 0, False)
    assert classify(status.value) == "status" and http.statuses == {503: 1}
    for bad in (b"HTTP/1.1 200 OK\r\ncontent-length: x\r\n\r\n", b"SMTP ready\r\n\r\n",
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n"):
        with pytest.raises(BadResponse) as error:
            http.reader().take(bad, 0, False)
        assert classify(error.value) == "bad_response", bad
    # a body cut short by the close, then one delimited by the close: a kept connection must not close
    with pytest.raises(ClosedEarly, match="closed inside"):
        http.reader().take(LENGTH[:-1], 0, True)
    close = b"HTTP/1.1 200 OK\r\n\r\nup to the close"
    reader = http.reader()
    assert reader.take(close, 0, False) is False
    with pytest.raises(ClosedEarly, match="no keep-alive"):
        reader.take(b"", 0, True)


def test_connection_close_answers_may_end_with_the_stream():
    from _load_workloads import ClosedEarly

    _, Http, _ = workloads()
    http = Http("127.0.0.1", 80, keepalive=False)
    close = b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nup to the close"
    reader = http.reader()
    assert reader.take(close, 0, False) is False and reader.take(b"", 0, True) is True
    framed = LENGTH.replace(b"date: x", b"connection: close")
    assert http.reader().take(framed, 0, True) is True
    with pytest.raises(ClosedEarly):  # its content-length says more was to come
        http.reader().take(framed[:-2], 0, True)
    assert http.statuses == {200: 2}


def test_head_answers_have_no_body():
    _, Http, _ = workloads()
    http = Http("127.0.0.1", 80, method="HEAD")
    reader = http.reader()
    assert reader.take(LENGTH[: LENGTH.index(b"hello")] * 2, 0, False) is True
    assert reader.take(b"", 1, False) is True and reader.take(b"", 2, False) is False
    assert reader.take(INTERIM, 2, False) is True and http.statuses == {200: 2, 204: 1}


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
        for _ in each_request(conn):
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
