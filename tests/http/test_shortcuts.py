"""The shortcuts of the common path behave exactly like the general path.

The connection loop keeps the whole wire form of a keep-alive HTTP/1.1 response on a
Response the app returns again (a constant), the parser hands out the app's Request
itself with header fields decoded only when looked at, and each connection counts its own
answered requests.  These tests change what such shortcuts could wrongly keep: a
constant Response mutated between requests, the clock (the Date header), the request's
version, method and Connection header, bytes that come one at a time.
"""

from __future__ import annotations

import email.utils
import time

import pytest

from fibernet.http import Headers, Request, Response
from fibernet.server.http_protocol import END, RequestHead, ServerProtocol

from .conftest import RawClient, drive, parse_responses, request


def test_constant_response_mutated_between_requests_is_sent_as_it_is_now():
    constant = Response(200, b"first", {"content-type": "text/plain"})
    changes = [
        lambda: None,  # the same again (served from what was kept)
        lambda: constant.headers.add("x-added", "yes"),
        lambda: setattr(constant, "status", 201),
        lambda: setattr(constant, "body", b"second body"),
        lambda: setattr(constant, "status", 204),
        lambda: setattr(constant, "status", 200),
        lambda: constant.headers.add("connection", "close"),
    ]
    calls = []

    def app(req):
        if calls:
            changes[len(calls) - 1]()
        calls.append(req.target)
        return constant

    pipelined = b"".join(request("GET", f"/{i}") for i in range(len(changes) + 1))
    sock = drive(app, [pipelined])
    replies = parse_responses(sock.sent)
    assert [(r.status, r.body) for r in replies] == [
        (200, b"first"),
        (200, b"first"),
        (200, b"first"),
        (201, b"first"),
        (201, b"second body"),
        (204, b""),
        (200, b"second body"),
        (200, b"second body"),
    ]
    assert [r.header("x-added") for r in replies] == [None, None] + ["yes"] * 6
    assert [r.header("content-length") for r in replies] == ["5"] * 4 + ["11", None, "11", "11"]
    assert [r.closes for r in replies] == [False] * 7 + [True]
    assert calls == [f"/{i}" for i in range(8)]  # all answered: nothing closed early


def test_constant_response_follows_the_clock_in_its_date(monkeypatch):
    clock = [1_700_000_000.25]
    monkeypatch.setattr(time, "time", lambda: clock[0])
    constant = Response(200, b"hello")
    seen = []

    def app(req):
        if req.target == "/back":
            clock[0] -= 3 * 86400.0  # the clock was set back
        elif req.target != "/same":
            clock[0] += 86400.0  # a day later: another Date
        seen.append(email.utils.formatdate(int(clock[0]), usegmt=True))
        return constant

    targets = ["/1", "/2", "/3", "/same", "/back"]
    sock = drive(app, [b"".join(request("GET", t) for t in targets)])
    replies = parse_responses(sock.sent)
    dates = [r.header("date") for r in replies]
    assert dates == seen
    assert len(set(dates)) == 4 and dates[2] == dates[3]
    assert all(r.body == b"hello" for r in replies)


def test_constant_response_to_other_versions_methods_and_close():
    constant = Response(200, b"0123456789", {"x-kind": "constant"})
    sock = drive(lambda req: constant, [
        request("GET", "/warm")  # (this one leaves the keep-alive HTTP/1.1 form on it)
        + request("HEAD", "/head")
        + request("GET", "/old", version="1.0", host=None, headers=[("Connection", "keep-alive")])
        + request("GET", "/again")
        + request("GET", "/last", headers=[("Connection", "close")])
    ])
    warm, head, old, again, last = parse_responses(sock.sent, head_requests=[False, True])
    assert warm.version == "HTTP/1.1" and warm.body == b"0123456789" and not warm.closes
    assert head.header("content-length") == "10" and head.body == b""
    assert old.version == "HTTP/1.0" and old.header("connection") == "keep-alive"
    assert old.body == b"0123456789"
    assert again.raw_head == warm.raw_head or again.header("date") != warm.header("date")
    assert again.body == b"0123456789" and not again.closes
    assert last.body == b"0123456789" and last.closes
    assert all(r.header("x-kind") == "constant" for r in (warm, head, old, again, last))


def test_requests_coming_one_byte_at_a_time_are_answered_in_order():
    def app(req):
        return Response(200, b"%s %s %s %s" % (req.method.encode(), req.path.encode(),
                                                req.query.encode(), req.headers["x-tag"].encode()))

    data = (request("GET", "/first/path?a=1&b=2", headers=[("X-Tag", "one")])
            + request("GET", "/second", headers=[("X-Tag", "two")]))
    sock = drive(app, [data[i:i + 1] for i in range(len(data))])
    assert [r.body for r in parse_responses(sock.sent)] == [
        b"GET /first/path a=1&b=2 one",
        b"GET /second  two",
    ]


def test_the_parsed_head_is_the_request_with_headers_decoded_on_use():
    proto = ServerProtocol()
    proto.feed(b"GET /p/q?x=%C3%A9 HTTP/1.1\r\nHost: h\r\nX-Latin: caf\xe9\r\nx-latin: two\r\n"
               b"Content-Length: 0\r\n\r\n")
    head = proto.next_event()
    assert proto.next_event() is None  # a request without a body is its head alone: no END
    assert isinstance(head, RequestHead) and isinstance(head, Request)
    assert (head.method, head.target, head.path, head.query) == ("GET", "/p/q?x=%C3%A9", "/p/q", "x=%C3%A9")
    assert head.version == head.http_version == "1.1"
    assert head.body() == b"" and list(head.stream()) == []
    assert isinstance(head.headers, Headers)
    assert head.headers.get_all("X-LATIN") == ["café", "two"]
    assert head.headers["host"] == "h" and "content-length" in head.headers
    assert head.headers.items() == [("host", "h"), ("x-latin", "café"), ("x-latin", "two"),
                                    ("content-length", "0")]
    head.headers.add("X-Added", "1")
    assert len(head.headers) == 5 and head.headers["x-added"] == "1"
    assert repr(head) == "<Request GET /p/q?x=%C3%A9 HTTP/1.1>"


def test_heads_of_pipelined_requests_are_separate_objects():
    proto = ServerProtocol()
    proto.feed(request("GET", "/a", headers=[("X-N", "1")]) + request("POST", "/b", b"xy"))
    first, second = proto.next_event(), proto.next_event()  # (the first has no body: no END)
    assert (first.target, second.target) == ("/a", "/b")
    assert first.headers.items() == [("host", "test"), ("x-n", "1")]
    assert second.headers.items() == [("host", "test"), ("content-length", "2")]
    assert (first.content_length, second.content_length) == (None, 2)
    assert proto.next_event() == b"xy" and proto.next_event() is END


@pytest.mark.timeout(30)
def test_request_counter_counts_requests_of_open_and_closed_connections(http_server, spin_until):
    server = http_server(lambda req: Response(200, b"ok"))
    with RawClient(server.address) as c:
        for i in range(3):
            c.send(request("GET", f"/{i}"))
            assert c.response().status == 200
        spin_until(lambda: server.stats()["requests"] == 3, "3 requests counted on an open connection")
    with RawClient(server.address) as c:
        c.send(request("GET", "/x") + request("GET", "/y", headers=[("Connection", "close")]))
        assert [c.response().status for _ in range(2)] == [200, 200]
        assert c.at_eof()
    spin_until(lambda: server.stats()["connections_open"] == 0, "the connections to end")
    assert server.stats()["requests"] == 5


# (name, value) of the field, and whether it keeps an HTTP/1.0 and an HTTP/1.1 request alive
CONNECTION_FIELDS = [
    (None, False, True),
    (("Connection", "close"), False, False),
    (("Connection", "keep-alive"), True, True),
    (("CONNECTION", "Keep-Alive"), True, True),
    (("Proxy-Connection", "keep-alive"), True, True),  # llhttp reads it as Connection
    (("proxy-connection", "close"), False, False),
    (("X-Connection", "keep-alive"), False, True),  # (not a Connection field)
]


@pytest.mark.parametrize("version", ["1.0", "1.1"])
@pytest.mark.parametrize(("field", "alive_10", "alive_11"), CONNECTION_FIELDS,
                         ids=lambda f: f if isinstance(f, bool) else repr(f))
def test_the_version_is_the_request_lines_whatever_keeps_it_alive(version, field, alive_10, alive_11):
    """The parser tells HTTP/1.1 from the keep-alive verdict when no Connection field could
    have swayed it: a field that can (Proxy-Connection too) must not make 1.0 look 1.1."""
    proto = ServerProtocol()
    proto.feed(request("GET", "/", version=version, headers=[field] if field else []))
    head = proto.next_event()
    assert isinstance(head, RequestHead), head
    assert head.http_version == version
    assert head.keep_alive is (alive_11 if version == "1.1" else alive_10)
    if not head.keep_alive:
        return  # (llhttp takes nothing after a request that closes)
    # the next request on the connection starts afresh
    proto.feed(request("GET", "/next", version="1.0"))
    after = proto.next_event()
    assert (after.target, after.http_version, after.keep_alive) == ("/next", "1.0", False)


def test_responses_with_the_same_fields_share_their_wire_form_and_nothing_else():
    """The lines of a response's fields are remembered by the fields themselves: each response
    still gets its own values, status, framing and body."""
    def app(req):
        n = req.path.strip("/")
        if n == "close-second":
            return Response(200, b"kept", [("Connection", "keep-alive"), ("Connection", "close")])
        return Response(200 + int(n) % 2, b"body %s" % n.encode(), {"X-N": n, "Content-Type": "text/plain"})

    targets = ["/1", "/2", "/1", "/10", "/close-second", "/3"]
    sock = drive(app, [b"".join(request("GET", t) for t in targets)])
    replies = parse_responses(sock.sent)
    assert [(r.status, r.header("x-n"), r.body) for r in replies[:4]] == [
        (201, "1", b"body 1"), (200, "2", b"body 2"), (201, "1", b"body 1"), (200, "10", b"body 10"),
    ]
    assert all(r.header("content-type") == "text/plain" for r in replies[:4])
    # only the first Connection field of a response counts (as Headers.get reads it)
    assert replies[4].body == b"kept" and not replies[4].closes
    assert replies[5].header("x-n") == "3"


def test_many_different_fields_are_each_sent_right(monkeypatch):
    import sys

    from fibernet.server import http_protocol

    # (the module whose globals the code reads: the compiled copy's, where it runs)
    http_protocol = sys.modules[http_protocol.fields_block.__module__]
    monkeypatch.setattr(http_protocol, "_FIELDS_MAX", 8)
    sock = drive(lambda req: Response(200, b"", {"X-V": req.path}),
                 [b"".join(request("GET", f"/{i}") for i in range(30))])
    assert [r.header("x-v") for r in parse_responses(sock.sent)] == [f"/{i}" for i in range(30)]
    assert len(http_protocol._FIELDS) <= 8


@pytest.mark.parametrize("value", ["a\r\nX-Injected: 1", "a\nb", "a\x00b"])
def test_a_bad_field_is_refused_every_time_even_after_good_ones(value):
    def app(req):
        return Response(200, b"", {"X-F": value if req.path == "/bad" else "good"})

    sock = drive(app, [b"".join(request("GET", t) for t in ["/good", "/bad", "/good", "/bad"])])
    replies = parse_responses(sock.sent)
    assert [r.status for r in replies] == [200, 500, 200, 500]
    assert [r.header("x-f") for r in replies] == ["good", None, "good", None]
    assert b"X-Injected" not in bytes(sock.sent)


def test_response_constructors_keep_their_meaning():
    from http import HTTPStatus

    assert Response.json({"a": [1, "é"], "b": None}).body == b'{"a":[1,"\\u00e9"],"b":null}'
    assert Response.json({}).headers["content-type"] == "application/json"
    assert Headers({"X-N": 5, "X-S": "s"}).items() == [("x-n", "5"), ("x-s", "s")]
    assert Headers([("X-N", 5)]).items() == [("x-n", "5")]
    text = Response(200, "héllo")
    assert text.body == "héllo".encode() and text.headers["content-type"] == "text/plain; charset=utf-8"
    assert Response(200, "").headers.items() == []
    with pytest.raises(ValueError):
        Response("200")
    with pytest.raises(ValueError):
        Response(1000)
    sock = drive(lambda req: Response(HTTPStatus.CREATED, b"made"), [request("GET", "/")])
    reply = parse_responses(sock.sent)[0]
    assert reply.raw_head.startswith(b"HTTP/1.1 201 Created\r\n") and reply.body == b"made"


def test_repeated_and_changing_targets_on_one_connection():
    proto = ServerProtocol()
    targets = ["/a?x=1", "/a?x=1", "/b", "/a?x=1", "/a?x=2", "/a", "/a?"]
    proto.feed(b"".join(request("GET", t) for t in targets))
    heads = [e for e in iter(proto.next_event, None) if e is not END]
    assert [(h.target, h.path, h.query) for h in heads] == [
        ("/a?x=1", "/a", "x=1"), ("/a?x=1", "/a", "x=1"), ("/b", "/b", ""), ("/a?x=1", "/a", "x=1"),
        ("/a?x=2", "/a", "x=2"), ("/a", "/a", ""), ("/a?", "/a", ""),
    ]


UPGRADE_FIELDS = [
    [],
    [("Upgrade", "websocket")],
    [("Connection", "Upgrade")],
    [("Connection", "Upgrade"), ("Upgrade", "websocket")],
    [("Connection", "keep-alive, Upgrade"), ("Upgrade", "h2c")],
    [("Proxy-Connection", "Upgrade"), ("Upgrade", "websocket")],
    [("Connection", "close"), ("Upgrade", "websocket")],
]


@pytest.mark.parametrize("method", ["GET", "CONNECT"])
@pytest.mark.parametrize("fields", UPGRADE_FIELDS, ids=repr)
def test_upgrade_is_what_llhttp_says(method, fields):
    import httptools

    data = request(method, "example.com:443" if method == "CONNECT" else "/", headers=fields)
    verdict = []

    class Oracle:
        def on_headers_complete(self):
            verdict.append(parser.should_upgrade())

    parser = httptools.HttpRequestParser(Oracle())
    try:
        parser.feed_data(data)
    except httptools.HttpParserUpgrade:
        pass
    proto = ServerProtocol()
    proto.feed(data)
    head = proto.next_event()
    assert head.upgrade is verdict[0]
    assert head.upgrade is (method == "CONNECT" or any(
        v.lower().endswith("upgrade") for k, v in fields if k.lower().endswith("connection")) and any(
        k == "Upgrade" for k, _ in fields))


def test_large_fields_are_sent_and_not_remembered():
    from fibernet.server import http_protocol

    big = "v" * 5000
    before = dict(http_protocol._FIELDS)
    sock = drive(lambda req: Response(200, b"ok", {"X-Big": big + req.path}),
                 [request("GET", "/1") + request("GET", "/2")])
    assert [r.header("x-big") for r in parse_responses(sock.sent)] == [big + "/1", big + "/2"]
    assert all(len(block) <= http_protocol._FIELDS_MAX_BYTES for block, _ in http_protocol._FIELDS.values())
    assert not any(("x-big", big + "/1") in key for key in http_protocol._FIELDS if key not in before)
