"""The connection loop over loopback: keep-alive, pipelining, draining, HTTP/1.0, Expect,
HEAD, errors, logs, header injection, upgrades, overload."""

from __future__ import annotations

import logging

import pytest

from fibernet.http import Response

from .conftest import RawClient, Recorder, drive, parse_responses, request


def logged_errors(caplog, exc_type=BaseException):
    """Records of fibernet.http that carry an exception of ``exc_type``."""
    return [r for r in caplog.records
            if r.name == "fibernet.http" and r.exc_info and isinstance(r.exc_info[1], exc_type)]


def echo(req):
    """method, target and body, so each response names the request it answers."""
    return Response(200, b"%s %s %s" % (req.method.encode(), req.target.encode(), req.body()))


# -- keep-alive and pipelining --------------------------------------------------------------


def test_pipelined_requests_are_answered_in_request_order(http_server):
    app = Recorder(echo)
    server = http_server(app)
    with RawClient(server.address) as c:
        c.send(request("GET", "/one") + request("POST", "/two", b"payload") + request("GET", "/three?x=1"))
        replies = [c.response() for _ in range(3)]
    assert [r.body for r in replies] == [b"GET /one ", b"POST /two payload", b"GET /three?x=1 "]
    assert all(r.status == 200 and not r.closes for r in replies)
    assert app.targets == ["/one", "/two", "/three?x=1"]
    assert len({r.client for r in app.calls}) == 1, "the three requests came on one connection"


def test_keep_alive_serves_sequential_requests_on_one_connection(http_server):
    app = Recorder(echo)
    server = http_server(app)
    with RawClient(server.address) as c:
        for i in range(5):
            c.send(request("GET", f"/{i}"))
            reply = c.response()
            assert reply.body == f"GET /{i} ".encode()
            assert not reply.closes
    assert len({r.client for r in app.calls}) == 1


def test_http10_without_keep_alive_is_closed_after_the_response(http_server):
    app = Recorder(echo)
    server = http_server(app)
    with RawClient(server.address) as c:
        c.send(request("GET", "/old", version="1.0", host=None))
        reply = c.response()
        assert reply.version == "HTTP/1.0"
        assert reply.status == 200 and reply.closes
        assert reply.body == b"GET /old "
        assert c.at_eof()
    assert app.calls[0].http_version == "1.0"


def test_http10_with_keep_alive_stays_open(http_server):
    app = Recorder(echo)
    server = http_server(app)
    with RawClient(server.address) as c:
        for target in ("/a", "/b"):
            c.send(request("GET", target, version="1.0", host=None, headers=[("Connection", "keep-alive")]))
            reply = c.response()
            assert reply.version == "HTTP/1.0"
            assert reply.header("connection").lower() == "keep-alive"
            assert reply.body == f"GET {target} ".encode()
    assert app.targets == ["/a", "/b"]
    assert len({r.client for r in app.calls}) == 1


def test_connection_close_from_the_client_is_honoured(http_server):
    app = Recorder(echo)
    server = http_server(app)
    with RawClient(server.address) as c:
        # the second request, pipelined after "Connection: close", must never be served
        c.send(request("GET", "/first", headers=[("Connection", "close")]) + request("GET", "/second"))
        reply = c.response()
        assert reply.status == 200 and reply.closes
        assert c.at_eof()
    assert app.targets == ["/first"]


def test_connection_close_from_the_app_is_honoured(http_server):
    app = Recorder(lambda r: Response(200, b"bye", {"Connection": "close"}))
    server = http_server(app)
    with RawClient(server.address) as c:
        c.send(request("GET", "/first") + request("GET", "/second"))
        reply = c.response()
        assert reply.body == b"bye" and reply.closes
        assert c.at_eof()
    assert app.targets == ["/first"]


# -- bodies the app does not read -------------------------------------------------------------

SMUGGLED = b"GET /evil HTTP/1.1\r\nHost: a\r\n\r\n"


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_unread_body_is_drained_and_never_parsed_as_a_request(http_server, framing):
    app = Recorder(read_body=False)
    server = http_server(app)
    if framing == "chunked":
        body = b"%x\r\n%s\r\n0\r\n\r\n" % (len(SMUGGLED), SMUGGLED)
        first = request("POST", "/upload", body, headers=[("Transfer-Encoding", "chunked")])
    else:
        first = request("POST", "/upload", SMUGGLED)
    with RawClient(server.address) as c:
        c.send(first + request("GET", "/next"))
        assert [c.response().status for _ in range(2)] == [200, 200]
    assert app.targets == ["/upload", "/next"]
    assert len({r.client for r in app.calls}) == 1, "the connection was kept after the drain"


def test_unread_body_larger_than_max_drain_closes_the_connection(http_server):
    app = Recorder(read_body=False)
    server = http_server(app, max_drain=64 * 1024)
    size = 300 * 1024
    with RawClient(server.address) as c:
        c.send(request("POST", "/big", headers=[("Content-Length", str(size))]))
        reply = c.response()  # the app answers without reading
        assert reply.status == 200
        try:
            c.send(b"x" * (size - len(SMUGGLED)) + SMUGGLED + request("GET", "/next"))
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server stopped reading after max_drain and closed
        assert c.at_eof()
    assert app.targets == ["/big"]


# -- HEAD, 204, 304, streamed responses -----------------------------------------------------------


def test_head_gets_content_length_but_no_body(http_server):
    app = Recorder(lambda r: Response(200, b"0123456789"))
    server = http_server(app)
    with RawClient(server.address) as c:
        c.send(request("HEAD", "/") + request("GET", "/"))
        head = c.response(head_request=True)
        get = c.response()  # parses only if HEAD sent no body bytes
    assert head.status == 200 and head.header("content-length") == "10"
    assert get.body == b"0123456789"
    assert app.targets == ["/", "/"]
    assert [r.method for r in app.calls] == ["HEAD", "GET"]


@pytest.mark.parametrize("status", [204, 304])
def test_no_content_statuses_carry_no_framing(http_server, status):
    app = Recorder(lambda r: Response(status) if r.target == "/empty" else Response(200, b"after"))
    server = http_server(app)
    with RawClient(server.address) as c:
        c.send(request("GET", "/empty") + request("GET", "/next"))
        empty = c.response()
        after = c.response()
    assert empty.status == status
    assert empty.header("content-length") is None and empty.header("transfer-encoding") is None
    assert after.body == b"after"


def test_generator_body_is_sent_chunked_on_http11(http_server):
    def app(req):
        return Response(200, (part for part in [b"alpha ", "beta ", b"", b"gamma"]))

    server = http_server(app)
    with RawClient(server.address) as c:
        c.send(request("GET", "/") + request("GET", "/"))
        replies = [c.response(), c.response()]
    for reply in replies:
        assert reply.header("transfer-encoding") == "chunked"
        assert reply.header("content-length") is None
        assert reply.body == b"alpha beta gamma"


def test_generator_body_on_http10_is_delimited_by_close(http_server):
    server = http_server(lambda r: Response(200, iter([b"one ", b"two"])))
    with RawClient(server.address) as c:
        c.send(request("GET", "/", version="1.0", headers=[("Connection", "keep-alive")]))
        reply = c.response()
    assert reply.version == "HTTP/1.0" and reply.closes
    assert reply.header("transfer-encoding") is None and reply.header("content-length") is None
    assert reply.body == b"one two"  # read to EOF


def test_generator_failing_midway_cuts_the_connection(http_server, caplog):
    def body():
        yield b"partial"
        raise RuntimeError("boom in the body")

    server = http_server(lambda r: Response(200, body()))
    with RawClient(server.address) as c:
        c.send(request("GET", "/stream"))
        c.read_until(b"\r\n\r\n")
        rest = c.reader.read_to_eof()
    assert rest.startswith(b"7\r\npartial\r\n")
    assert not rest.endswith(b"0\r\n\r\n"), "a failed body must not look complete"
    assert [str(r.exc_info[1]) for r in logged_errors(caplog)] == ["boom in the body"]


# -- Expect: 100-continue ----------------------------------------------------------------------


def test_expect_100_continue_is_answered_before_the_body(http_server):
    app = Recorder(echo)
    server = http_server(app)
    with RawClient(server.address) as c:
        c.send(request("POST", "/up", headers=[("Content-Length", "5"), ("Expect", "100-continue")]))
        interim = c.response(allow_interim=True)  # the client waits for this before sending the body
        assert interim.status == 100
        c.send(b"hello")
        final = c.response()
        assert final.status == 200 and final.body == b"POST /up hello"
        assert not final.closes
        c.send(request("GET", "/next"))
        assert c.response().body == b"GET /next "


def test_expect_100_continue_unread_gets_a_final_response_and_close(http_server):
    app = Recorder(lambda r: Response(401, b"no"), read_body=False)
    server = http_server(app)
    with RawClient(server.address) as c:
        c.send(request("POST", "/up", headers=[("Content-Length", "5"), ("Expect", "100-continue")]))
        reply = c.response()  # no interim 100: the app did not ask for the body
        assert reply.status == 401 and reply.closes
        assert c.at_eof()


# -- streamed request bodies -------------------------------------------------------------------


def test_request_stream_delivers_chunks_as_they_arrive(http_server):
    """The app echoes each piece of the body as it reads it, so the client can only get a piece
    back after sending it: the body is streamed both ways, not buffered whole."""

    def app(req):
        return Response(200, (b"<" + chunk + b">" for chunk in req.stream()))

    server = http_server(app)
    with RawClient(server.address) as c:
        c.send(request("POST", "/echo", headers=[("Transfer-Encoding", "chunked")]))
        head = c.read_until(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 ")
        for piece in (b"first", b"second", b"third"):
            c.send(b"%x\r\n%s\r\n" % (len(piece), piece))
            assert c.read_until(b"\r\n") == b"%x\r\n" % (len(piece) + 2)
            assert c.read_until(b"\r\n") == b"<" + piece + b">\r\n"
        c.send(b"0\r\n\r\n")
        assert c.read_until(b"\r\n\r\n") == b"0\r\n\r\n"
        c.send(request("GET", "/again"))
        assert c.response().status == 200


# -- failures and logs -----------------------------------------------------------------------------


def test_handler_exception_gives_500_is_logged_and_the_server_goes_on(http_server, caplog):
    def app(req):
        if req.path == "/boom":
            raise ValueError("handler exploded")
        return Response(200, b"fine")

    server = http_server(app)
    with RawClient(server.address) as c:
        c.send(request("GET", "/boom"))
        reply = c.response()
        assert reply.status == 500
        assert b"handler exploded" not in reply.body, "internals leaked to the client"
        c.send(request("GET", "/ok"))  # the same connection goes on
        assert c.response().body == b"fine"
    with RawClient(server.address) as c:  # and so do new ones
        c.send(request("GET", "/ok"))
        assert c.response().body == b"fine"
    failures = [r for r in caplog.records if r.name == "fibernet.http" and r.levelno >= logging.ERROR]
    assert len(failures) == 1
    assert "/boom" in failures[0].getMessage()
    assert isinstance(failures[0].exc_info[1], ValueError)


def test_app_returning_a_non_response_gives_500(http_server, caplog):
    server = http_server(lambda r: "not a response")
    with RawClient(server.address) as c:
        c.send(request("GET", "/"))
        assert c.response().status == 500
    assert len(logged_errors(caplog, TypeError)) == 1


@pytest.mark.parametrize("enabled", [True, False])
def test_access_log_one_line_per_request_when_enabled(http_server, caplog, enabled):
    caplog.set_level(logging.INFO, logger="fibernet.access")
    server = http_server(Recorder(echo), access_log=enabled)
    with RawClient(server.address) as c:
        c.send(request("GET", "/a") + request("POST", "/b", b"xyz")
               + request("GET", "/c?q=1", headers=[("Connection", "close")]))
        statuses = [c.response().status for _ in range(3)]
        assert c.at_eof()  # the server logs before it closes: the lines are in by now
    assert statuses == [200, 200, 200]
    lines = [r.getMessage() for r in caplog.records if r.name == "fibernet.access"]
    if not enabled:
        assert lines == []
        return
    assert len(lines) == 3
    expected_lines = ['"GET /a HTTP/1.1" 200', '"POST /b HTTP/1.1" 200', '"GET /c?q=1 HTTP/1.1" 200']
    for line, expected in zip(lines, expected_lines, strict=True):
        assert expected in line
        assert line.startswith("127.0.0.1:")


# -- response header injection ----------------------------------------------------------------------


@pytest.mark.parametrize(("name", "value"), [
    ("X-Split", "a\r\nX-Injected: 1"),
    ("X-Split", "a\nX-Injected: 1"),
    ("X-Split", "a\rX-Injected: 1"),
    ("X-Nul", "a\x00b"),
    ("X-Injected: 1\r\nX-Name", "v"),
    ("X-Bad\nName", "v"),
    ("X-Nul\x00", "v"),
], ids=["crlf-value", "lf-value", "cr-value", "nul-value", "crlf-name", "lf-name", "nul-name"])
def test_response_header_with_cr_lf_nul_is_refused_with_500(http_server, caplog, name, value):
    server = http_server(lambda r: Response(200, b"body", [(name, value)]) if r.path == "/bad"
                         else Response(200, b"good"))
    with RawClient(server.address) as c:
        c.send(request("GET", "/bad") + request("GET", "/good"))
        bad = c.response()
        good = c.response()  # the next response parses where it should: nothing was split
    assert bad.status == 500
    assert b"X-Injected" not in bad.raw_head and b"\x00" not in bad.raw_head
    assert bad.header("x-injected") is None
    assert good.body == b"good"
    assert len(logged_errors(caplog, ValueError)) == 1


# -- upgrades and CONNECT --------------------------------------------------------------------------


UPGRADE_OFFERS = [
    [("Connection", "Upgrade"), ("Upgrade", "websocket"), ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
     ("Sec-WebSocket-Version", "13")],
    [("Connection", "Upgrade, HTTP2-Settings"), ("Upgrade", "h2c"), ("HTTP2-Settings", "AAMAAABkAAQAAP__")],
]


@pytest.mark.parametrize("offer", UPGRADE_OFFERS, ids=["websocket", "h2c"])
@pytest.mark.parametrize("body", [None, "content-length", "chunked"])
def test_an_upgrade_offer_is_ignored_and_the_request_answered(http_server, offer, body):
    """RFC 9110 7.8: a server that does not take the offer answers as HTTP/1.1; the app
    sees the Upgrade field, reads the body, and the next request is served."""
    app = Recorder(lambda r: Response(200, (r.headers.get("upgrade") or "-") + ":" + r.body().decode()))
    server = http_server(app)
    if body is None:
        first = request("GET", "/up", headers=offer)
        sent = b""
    elif body == "content-length":
        first = request("POST", "/up", b"hello", headers=offer)
        sent = b"hello"
    else:
        chunked = [*offer, ("Transfer-Encoding", "chunked")]
        first = request("POST", "/up", headers=chunked) + b"5\r\nhello\r\n0\r\n\r\n"
        sent = b"hello"
    with RawClient(server.address) as c:
        c.send(first + request("GET", "/next"))
        reply = c.response()
        assert reply.status == 200 and not reply.closes
        assert reply.body == offer[1][1].encode() + b":" + sent
        assert c.response().body == b"-:"
    assert app.targets == ["/up", "/next"]
    assert app.calls[0].headers.get("upgrade") == offer[1][1]


def test_connect_gets_501_and_close_never_fed_on(http_server):
    app = Recorder()
    server = http_server(app)
    with RawClient(server.address) as c:
        c.send(request("CONNECT", "example.com:443", host="example.com:443") + SMUGGLED)
        reply = c.response()
        assert reply.status == 501 and reply.closes
        assert c.at_eof()
    assert app.calls == []


# -- overload ----------------------------------------------------------------------------------------


def test_limit_concurrency_answers_503_and_closes_beyond_the_limit(http_server, spin_until):
    server = http_server(Recorder(echo), limit_concurrency=2)
    first, second = RawClient(server.address), RawClient(server.address)
    try:
        for c in (first, second):  # both are being served (answered and kept alive)
            c.send(request("GET", "/held"))
            assert c.response().status == 200
        with RawClient(server.address) as third:
            reply = third.response()  # answered at once, without reading a request
            assert reply.status == 503 and reply.closes
            assert third.at_eof()
        first.close()
        spin_until(lambda: server.stats()["connections_open"] == 1, "the closed connections to end")
        with RawClient(server.address) as fourth:
            fourth.send(request("GET", "/after"))
            assert fourth.response().status == 200
        second.send(request("GET", "/still"))
        assert second.response().body == b"GET /still "
    finally:
        first.close()
        second.close()


# -- the same promises without sockets ---------------------------------------------------------------


def test_scripted_connection_serves_pipelined_requests_in_order():
    app = Recorder(echo)
    sock = drive(app, [request("GET", "/1") + request("PUT", "/2", b"two"), request("DELETE", "/3")])
    assert [r.body for r in parse_responses(sock.sent)] == [b"GET /1 ", b"PUT /2 two", b"DELETE /3 "]
    assert [r.client for r in app.calls] == [("192.0.2.7", 4711)] * 3


def test_scripted_body_error_after_the_response_sends_no_second_response():
    """The app answered without reading; the body then turns out bad: the connection is cut,
    and no stray error response follows (a pipelining client would take it for the next one's)."""
    app = Recorder(read_body=False)
    sock = drive(app, request("POST", "/", headers=[("Transfer-Encoding", "chunked")]) + b"zz\r\n")
    replies = parse_responses(sock.sent)
    assert [r.status for r in replies] == [200]
