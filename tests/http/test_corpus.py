"""Malformed and hostile requests: the exact status each gets, and the handler never runs.

One table, three ways through it:

1. the sans-IO ``ServerProtocol`` alone (events: the ``HttpError`` and its status, nothing
   parsed after it);
2. the connection loop ``_Connection`` on a scripted ``FakeSocket`` (no descriptor): exactly
   one response, with the status, ``connection: close``, and the app never called (a bad
   head) or never returning (a bad body: the app is called on a good head and fails when it
   reads the body);
3. a real server over loopback, with a recording app.

2 and 3 run twice: with a fibernet app, and with a WSGI app behind
:class:`~fibernet.server.wsgi.WSGIApp` (``--interface wsgi``), which must fail the same way.

``stage`` says where the request goes wrong: ``head`` (the app must never be called) or
``body`` (the head is valid, so the app is called, but reading the body raises and the app
never returns a response).
"""

from __future__ import annotations

import contextlib
import socket

import pytest

from fibernet.http import Response
from fibernet.server.http_protocol import END, HttpError, RequestHead, ServerProtocol
from fibernet.server.wsgi import WSGIApp

from .conftest import CLIENT_TIMEOUT, ByteReader, Recorder, drive, parse_responses

CRLF = b"\r\n"


def req(*lines: str | bytes, body: bytes = b"", method_line: bytes | str = b"GET / HTTP/1.1") -> bytes:
    """A request head from its lines (str or bytes), then ``body``."""
    first = method_line.encode() if isinstance(method_line, str) else method_line
    parts = [first] + [x.encode("latin-1") if isinstance(x, str) else x for x in lines]
    return CRLF.join(parts) + CRLF + CRLF + body


def post(*lines: str | bytes, body: bytes = b"") -> bytes:
    """A POST with ``Host: a`` and ``lines``."""
    return req("Host: a", *lines, method_line="POST / HTTP/1.1", body=body)


def post_chunked(*body: bytes) -> bytes:
    return post("Transfer-Encoding: chunked", body=b"".join(body))


def pieces(data: bytes, size: int) -> list[bytes]:
    return [data[i:i + size] for i in range(0, len(data), size)]


ONE_MB_HEADER = req("Host: a", b"X-Big: " + b"v" * (1024 * 1024))
CHUNKED_OVER_LIMIT = [post_chunked()] + pieces(b"%x\r\n" % (2 * 1024 * 1024) + b"x" * (1536 * 1024), 65536)

# id, raw bytes (or a list of pieces sent one by one), expected status, stage
CORPUS = [
    # -- request smuggling: framing that two parsers could read two ways ------------------------
    ("cl-and-te", post("Content-Length: 4", "Transfer-Encoding: chunked", body=b"0\r\n\r\n"), 400, "head"),
    ("te-and-cl", post("Transfer-Encoding: chunked", "Content-Length: 4", body=b"0\r\n\r\n"), 400, "head"),
    ("cl-and-te-http10", req("Content-Length: 3", "Transfer-Encoding: chunked", method_line="POST / HTTP/1.0",
                             body=b"0\r\n\r\n"), 400, "head"),
    ("duplicate-cl-same", post("Content-Length: 4", "Content-Length: 4", body=b"abcd"), 400, "head"),
    ("duplicate-cl-different", post("Content-Length: 4", "Content-Length: 40", body=b"abcd"), 400, "head"),
    ("cl-list", post("Content-Length: 4, 4", body=b"abcd"), 400, "head"),
    ("te-space-before-colon", post("Transfer-Encoding : chunked", body=b"0\r\n\r\n"), 400, "head"),
    ("te-then-identity", post("Transfer-Encoding: chunked", "Transfer-Encoding: identity"), 501, "head"),
    # -- line endings and folding --------------------------------------------------------------
    ("bare-lf-everywhere", b"GET / HTTP/1.1\nHost: a\n\n", 400, "head"),
    ("bare-lf-in-header", b"GET / HTTP/1.1\r\nHost: a\nX: y\r\n\r\n", 400, "head"),
    ("bare-cr", b"GET / HTTP/1.1\rHost: a\r\n\r\n", 400, "head"),
    ("obs-fold", req("Host: a", "X-Folded: one", " two"), 400, "head"),
    ("leading-whitespace-first-field", req(" Host: a"), 400, "head"),
    # -- size limits ---------------------------------------------------------------------------
    ("request-line-too-long", req("Host: a", method_line="GET /" + "a" * 9000 + " HTTP/1.1"), 414, "head"),
    ("request-line-too-long-in-pieces",
     pieces(req("Host: a", method_line="GET /" + "a" * 20000 + " HTTP/1.1"), 1000), 414, "head"),
    ("101-header-fields", req("Host: a", *[f"X-F{i}: v" for i in range(100)]), 431, "head"),
    ("head-over-16k-one-field", req("Host: a", "X-Big: " + "v" * (17 * 1024)), 431, "head"),
    ("field-over-8k", req("Host: a", "X-Big: " + "v" * (9 * 1000)), 431, "head"),
    ("field-name-over-8k", req("Host: a", "X-" + "n" * (9 * 1000) + ": v"), 431, "head"),
    ("empty-lines-over-limit", b"\r\n" * 33 + req("Host: a"), 400, "head"),
    ("empty-lines-over-head-size", b"\r\n" * 10000 + req("Host: a"), 400, "head"),
    ("empty-lines-in-pieces", [b"\r\n"] * 40 + [req("Host: a")], 400, "head"),
    ("head-over-16k-many-fields", req("Host: a", *[f"X-F{i}: " + "v" * 250 for i in range(80)]), 431, "head"),
    ("1mb-header-in-pieces", pieces(ONE_MB_HEADER, 4096), 431, "head"),
    ("content-length-over-limit", post("Content-Length: 1048577"), 413, "head"),
    ("chunked-body-over-limit", CHUNKED_OVER_LIMIT, 413, "body"),
    # -- transfer codings ----------------------------------------------------------------------
    ("te-gzip", post("Transfer-Encoding: gzip"), 501, "head"),
    ("te-identity", post("Transfer-Encoding: identity"), 501, "head"),
    ("te-chunked-then-gzip", post("Transfer-Encoding: chunked, gzip"), 501, "head"),
    ("te-gzip-then-chunked", post("Transfer-Encoding: gzip, chunked", body=b"0\r\n\r\n"), 501, "head"),
    ("te-chunked-twice", post("Transfer-Encoding: chunked", "Transfer-Encoding: chunked", body=b"0\r\n\r\n"),
     501, "head"),
    ("te-xchunked", post("Transfer-Encoding: xchunked"), 501, "head"),
    ("te-chunked-with-params", post("Transfer-Encoding: chunked;q=1", body=b"0\r\n\r\n"), 501, "head"),
    ("chunked-on-http10", req("Transfer-Encoding: chunked", method_line="POST / HTTP/1.0", body=b"0\r\n\r\n"),
     400, "head"),
    # -- Host ----------------------------------------------------------------------------------
    ("http11-without-host", req(), 400, "head"),
    ("http11-two-hosts", req("Host: a", "Host: b"), 400, "head"),
    ("http10-two-hosts", req("Host: a", "Host: b", method_line="GET / HTTP/1.0"), 400, "head"),
    ("host-with-slash", req("Host: a/b"), 400, "head"),
    ("host-with-space", req("Host: a b"), 400, "head"),
    ("host-list", req("Host: a, b"), 400, "head"),
    ("host-with-at-sign", req("Host: user@a"), 400, "head"),
    ("host-bad-port", req("Host: a:80x"), 400, "head"),
    # -- field names and values ----------------------------------------------------------------
    ("name-with-parenthesis", req("Host: a", "X(y): z"), 400, "head"),
    ("name-with-space", req("Host: a", "X y: z"), 400, "head"),
    ("space-before-colon", req("Host : a"), 400, "head"),
    ("empty-name", req("Host: a", ": z"), 400, "head"),
    ("no-colon", req("Host: a", "Xyz"), 400, "head"),
    ("name-with-high-byte", req("Host: a", b"X\xff: z"), 400, "head"),
    ("nul-in-value", req("Host: a", b"X: a\x00b"), 400, "head"),
    ("nul-in-name", req("Host: a", b"X\x00: ab"), 400, "head"),
    ("control-in-value", req("Host: a", b"X: a\x01b"), 400, "head"),
    ("del-in-value", req("Host: a", b"X: a\x7fb"), 400, "head"),
    ("unsupported-expectation", req("Host: a", "Expect: 200-ok"), 417, "head"),
    # -- versions ------------------------------------------------------------------------------
    ("http-2.0", req("Host: a", method_line="GET / HTTP/2.0"), 505, "head"),
    ("http-3.0", req("Host: a", method_line="GET / HTTP/3.0"), 505, "head"),
    # (versions llhttp would keep alive as 1.1 if it took them: the parser relies on it not to)
    ("http-1.2", req("Host: a", method_line="GET / HTTP/1.2"), 505, "head"),
    ("http-1.9", req("Host: a", method_line="GET / HTTP/1.9"), 505, "head"),
    ("http-2.1", req("Host: a", method_line="GET / HTTP/2.1"), 505, "head"),
    (
        "http-2.0-keep-alive",
        req("Host: a", "Connection: keep-alive", method_line="GET / HTTP/2.0"),
        505,
        "head",
    ),
    ("http-0.9-no-version", b"GET /\r\n\r\n", 400, "head"),
    ("no-version-then-silence", b"GET /\r\n", 400, "head"),  # at once, not a 408 later
    ("no-version-then-header", b"GET /\r\nHost: a\r\n\r\n", 400, "head"),
    ("rtsp-1.0", req("Host: a", method_line="GET / RTSP/1.0"), 400, "head"),
    ("rtsp-1.1", req("Host: a", method_line="GET / RTSP/1.1"), 400, "head"),
    ("rtsp-options-star", req("Host: a", method_line="OPTIONS * RTSP/1.0"), 400, "head"),
    ("rtsp-after-blank-lines", b"\r\n" + req("Host: a", method_line="GET / RTSP/1.1"), 400, "head"),
    ("rtsp-in-pieces", pieces(req("Host: a", method_line="POST /x RTSP/1.0"), 3), 400, "head"),
    ("ice-1.0", req("Host: a", method_line="SOURCE / ICE/1.0"), 400, "head"),
    ("version-letters", req("Host: a", method_line="GET / HTTP/x.y"), 400, "head"),
    ("version-lower-case", req("Host: a", method_line="GET / http/1.1"), 400, "head"),
    ("version-two-digit-minor", req("Host: a", method_line="GET / HTTP/1.10"), 400, "head"),
    # -- methods and targets -------------------------------------------------------------------
    ("method-with-at-sign", req("Host: a", method_line="G@T / HTTP/1.1"), 400, "head"),
    ("method-lower-case", req("Host: a", method_line="get / HTTP/1.1"), 400, "head"),
    ("method-unknown", req("Host: a", method_line="FROB / HTTP/1.1"), 501, "head"),
    ("method-unknown-prefix-of-known", req("Host: a", method_line="PROPFINDX / HTTP/1.1"), 501, "head"),
    ("method-rtsp-on-http", req("Host: a", method_line="DESCRIBE / HTTP/1.1"), 501, "head"),
    ("method-unknown-cut-off", b"FROB", 400, "head"),  # (no space yet: not known to be a token)
    ("star-target-not-options", req("Host: a", method_line="GET * HTTP/1.1"), 400, "head"),
    ("star-target-delete", req("Host: a", method_line="DELETE * HTTP/1.1"), 400, "head"),
    ("tls-client-hello", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 32, 400, "head"),
    ("space-in-target", req("Host: a", method_line="GET /a b HTTP/1.1"), 400, "head"),
    ("no-target", req("Host: a", method_line="GET  HTTP/1.1"), 400, "head"),
    ("control-in-target", req("Host: a", method_line=b"GET /a\x01 HTTP/1.1"), 400, "head"),
    # -- Content-Length values -----------------------------------------------------------------
    ("cl-negative", post("Content-Length: -1"), 400, "head"),
    ("cl-not-a-number", post("Content-Length: abc"), 400, "head"),
    ("cl-plus-sign", post("Content-Length: +4", body=b"abcd"), 400, "head"),
    ("cl-hex", post("Content-Length: 0x4", body=b"abcd"), 400, "head"),
    ("cl-inner-space", post("Content-Length: 1 2"), 400, "head"),
    ("cl-overflow", post("Content-Length: 99999999999999999999999"), 400, "head"),
    ("cl-empty", post("Content-Length: "), 400, "head"),
    # -- the client gives up -------------------------------------------------------------------
    ("eof-in-head", b"GET / HTTP/1.1\r\nHost: a\r\n", 400, "head"),
    ("eof-in-body", post("Content-Length: 10", body=b"abc"), 400, "body"),
    # -- chunked bodies ------------------------------------------------------------------------
    ("chunk-size-not-hex", post_chunked(b"zz\r\nabc\r\n0\r\n\r\n"), 400, "body"),
    ("chunk-size-negative", post_chunked(b"-1\r\nabc\r\n0\r\n\r\n"), 400, "body"),
    ("chunk-size-overflow", post_chunked(b"fffffffffffffffffff\r\nabc\r\n0\r\n\r\n"), 400, "body"),
    ("chunk-longer-than-size", post_chunked(b"2\r\nabc\r\n0\r\n\r\n"), 400, "body"),
    ("chunk-size-bare-lf", post_chunked(b"3\nabc\n0\n\n"), 400, "body"),
    ("chunk-data-without-crlf", post_chunked(b"3\r\nabcXX0\r\n\r\n"), 400, "body"),
    ("chunk-extension-too-long", post_chunked(b"3;ext=" + b"x" * 5000), 400, "body"),
    ("chunk-extension-too-long-in-pieces",
     [post_chunked()] + pieces(b"3;" + b"x" * 8000 + b"\r\nabc\r\n", 500), 400, "body"),
    ("trailers-too-long",
     post_chunked(b"3\r\nabc\r\n0\r\nX-Trailer: " + b"y" * 3000 + b"\r\n\r\n"), 400, "body"),
    ("content-length-in-trailers", post_chunked(b"3\r\nabc\r\n0\r\nContent-Length: 99\r\n\r\n"), 400, "body"),
    ("many-trailer-fields",
     post_chunked(b"0\r\n" + b"".join(b"T%d: v\r\n" % i for i in range(300)) + b"\r\n"), 400, "body"),
]

assert len(CORPUS) >= 40
assert len({case[0] for case in CORPUS}) == len(CORPUS), "duplicate case ids"

PARAMS = [pytest.param(data, status, stage, id=name) for name, data, status, stage in CORPUS]


def as_pieces(data) -> list[bytes]:
    return data if isinstance(data, list) else [data]


# -- 1. the protocol alone ------------------------------------------------------------------


@pytest.mark.parametrize(("data", "status", "stage"), PARAMS)
def test_protocol_reports_the_status(data, status, stage):
    proto = ServerProtocol()
    events = []
    for piece in as_pieces(data) + [b""]:  # b"": the client closed its side after sending
        proto.feed(piece)
        while (event := proto.next_event()) is not None:
            events.append(event)
    errors = [e for e in events if isinstance(e, HttpError)]
    assert len(errors) == 1, events
    assert events[-1] is errors[0], "events after the error: the rejected bytes were parsed on"
    assert errors[0].status == status, errors[0]
    assert proto.dead
    heads = [e for e in events if isinstance(e, RequestHead)]
    assert END not in events
    if stage == "head":
        assert heads == []
    else:
        assert len(heads) == 1 and events[0] is heads[0]


# -- 2. the connection loop without sockets -------------------------------------------------


class WsgiRecorder(Recorder):
    """The :class:`Recorder`, as a WSGI app: it records the environ and reads ``wsgi.input``."""

    def wsgi(self, environ, start_response):
        with self._lock:
            self.calls.append(environ)
        body = environ["wsgi.input"].read()
        with self._lock:
            self.bodies.append(body)
            self.completed.append(environ["PATH_INFO"])
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]


@pytest.fixture(params=["fibernet", "wsgi"])
def recording_app(request):
    """(the app to serve, the recorder): a fibernet app, or a WSGI app behind WSGIApp."""
    if request.param == "fibernet":
        app = Recorder(read_body=True)
        return app, app
    recorder = WsgiRecorder()
    return WSGIApp(recorder.wsgi), recorder


@pytest.mark.parametrize(("data", "status", "stage"), PARAMS)
def test_connection_loop_answers_once_and_never_runs_the_app(recording_app, data, status, stage):
    served, app = recording_app
    sock = drive(served, as_pieces(data))
    replies = parse_responses(sock.sent)
    assert len(replies) == 1, replies
    assert replies[0].status == status
    assert replies[0].closes
    assert replies[0].header("content-length") == str(len(replies[0].body))
    assert app.completed == [], "the app returned a response to a bad request"
    if stage == "head":
        assert app.calls == [], "the app ran on a bad request head"
    else:
        assert len(app.calls) == 1  # a valid head reaches the app; its body read failed


def test_oversized_head_is_not_read_to_its_end():
    """The 1 MB header is cut after the 16 KiB the head may have, not buffered whole."""
    sock = drive(Recorder(), pieces(ONE_MB_HEADER, 4096))
    assert parse_responses(sock.sent)[0].status == 431
    assert sock.reads <= 16 * 1024 // 4096 + 1
    assert sock.unread >= len(ONE_MB_HEADER) - 20 * 1024


def test_chunked_body_over_limit_is_cut_at_the_limit():
    sock = drive(Recorder(), CHUNKED_OVER_LIMIT)
    assert parse_responses(sock.sent)[0].status == 413
    assert sock.unread >= 256 * 1024, "the server read far past the body limit"


# -- 3. a real server over loopback ---------------------------------------------------------


@pytest.mark.parametrize(("data", "status", "stage"), PARAMS)
def test_loopback_server_answers_the_status(http_server, recording_app, data, status, stage):
    served, app = recording_app
    server = http_server(served)
    with socket.create_connection(server.address[:2], timeout=CLIENT_TIMEOUT) as sock:
        for piece in as_pieces(data):
            try:
                sock.sendall(piece)
            except (BrokenPipeError, ConnectionResetError):
                break  # the server answered and closed before taking it all (size limits)
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_WR)
        reader = ByteReader(sock.recv)
        reply = reader.read_response()
        assert reply.status == status
        assert reply.closes
        try:
            rest = reader.read_to_eof()
        except ConnectionResetError:  # closed with unread bytes of ours: a reset, fine
            rest = b""
        assert rest == b""
    assert app.completed == []
    if stage == "head":
        assert app.calls == []
    else:
        assert len(app.calls) == 1


def test_trailers_never_reach_the_header_fields():
    """A trailer named Host is read past, never merged into the headers."""
    app = Recorder(lambda r: Response(200, repr(r.headers.items())))
    data = post_chunked(b"3\r\nabc\r\n0\r\nHost: evil\r\nX-Trailer: t\r\n\r\n")
    sock = drive(app, [data + req("Host: a", method_line="GET /next HTTP/1.1")])
    replies = parse_responses(sock.sent)
    assert [r.status for r in replies] == [200, 200]
    first = app.calls[0]
    assert first.headers.get_all("host") == ["a"]
    assert "x-trailer" not in first.headers
    assert app.bodies[0] == b"abc"
    assert app.targets == ["/", "/next"]


@pytest.mark.parametrize("line", [b"GET / RTSP/1.0", b"DESCRIBE / RTSP/1.0", b"SOURCE / ICE/1.0"])
def test_other_protocols_request_lines_are_refused(line):
    proto = ServerProtocol()
    proto.feed(line + b"\r\nHost: a\r\n\r\n")
    event = proto.next_event()
    assert isinstance(event, HttpError) and event.status == 400, event


def test_rtsp_request_pipelined_after_http_ones_is_refused_and_they_are_served():
    """The request line is looked for in order: HTTP requests before an RTSP one with the
    same method and target are served; the RTSP one is refused."""
    good = req("Host: a")
    proto = ServerProtocol()
    proto.feed(good + good + req("Host: a", method_line="GET / RTSP/1.0") + good)
    events = list(iter(proto.next_event, None))
    assert [type(e).__name__ for e in events] == ["RequestHead", "RequestHead", "HttpError"]
    assert events[-1].status == 400
