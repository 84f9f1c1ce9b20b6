"""Request and Response as handlers see them (over loopback and in-process), the Router,
and fibernet.testing's call and serve."""

from __future__ import annotations

import http.client
import json
import socket

import pytest

from fibernet.http import Headers, Request, Response, Router
from fibernet.testing import call, serve

from .conftest import CLIENT_TIMEOUT, ByteReader, RawClient, Recorder, request

# -- Request over loopback ----------------------------------------------------------------------


def test_request_attributes_as_the_handler_sees_them(http_server):
    seen = {}

    def app(req):
        seen.update(method=req.method, target=req.target, path=req.path, query=req.query,
                    params=req.query_params, version=req.http_version, client=req.client,
                    multi=req.headers.get_all("X-MULTI"), single=req.headers["x-single"],
                    single_any_case=req.headers.get("X-Single"), has_host="HOST" in req.headers,
                    missing=req.headers.get("x-missing", "default"), body=req.body(), text=req.text())
        return Response(200, b"ok")

    server = http_server(app)
    with RawClient(server.address) as c:
        c.send(request("PATCH", "/items/7?color=red&size=&color=blue", b"the body",
                       headers=[("X-Multi", "one"), ("X-Single", "solo"), ("x-multi", "two")]))
        assert c.response().status == 200
        client_address = c.sock.getsockname()
    assert seen["method"] == "PATCH"
    assert seen["target"] == "/items/7?color=red&size=&color=blue"
    assert seen["path"] == "/items/7"
    assert seen["query"] == "color=red&size=&color=blue"
    assert seen["params"] == {"color": ["red", "blue"], "size": [""]}
    assert seen["version"] == "1.1"
    assert tuple(seen["client"][:2]) == client_address[:2]
    assert seen["multi"] == ["one", "two"]
    assert seen["single"] == seen["single_any_case"] == "solo"
    assert seen["has_host"] is True
    assert seen["missing"] == "default"
    assert seen["body"] == b"the body" and seen["text"] == "the body"


def test_request_body_whole_and_json_over_chunked_upload(http_server):
    def app(req):
        return Response.json({"got": req.json(), "again": req.body().decode()})

    server = http_server(app)
    payload = json.dumps({"a": [1, 2, 3]}).encode()
    pieces = [payload[i:i + 4] for i in range(0, len(payload), 4)]
    chunked = b"".join(b"%x\r\n%s\r\n" % (len(piece), piece) for piece in pieces)
    with RawClient(server.address) as c:
        c.send(request("POST", "/", chunked + b"0\r\n\r\n", headers=[("Transfer-Encoding", "chunked")]))
        reply = c.response()
    assert json.loads(reply.body) == {"got": {"a": [1, 2, 3]}, "again": payload.decode()}


def test_request_stream_yields_pieces_and_body_after_stream_is_refused(http_server):
    seen = {}

    def app(req):
        pieces = list(req.stream())
        seen["pieces"] = pieces
        try:
            list(req.stream())
        except RuntimeError:
            seen["second_stream"] = "refused"
        return Response(200, b"%d" % sum(len(p) for p in pieces))

    server = http_server(app)
    with RawClient(server.address) as c:
        c.send(request("POST", "/", headers=[("Transfer-Encoding", "chunked")]))
        for piece in (b"abc", b"defg", b"hi"):
            c.send(b"%x\r\n%s\r\n" % (len(piece), piece))
        c.send(b"0\r\n\r\n")
        assert c.response().body == b"9"
    assert b"".join(seen["pieces"]) == b"abcdefghi"
    assert all(seen["pieces"])
    assert seen["second_stream"] == "refused"


def test_request_body_of_a_get_is_empty(http_server):
    seen = []
    server = http_server(lambda r: seen.append((r.body(), list(r.stream()))) or Response(204))
    with RawClient(server.address) as c:
        c.send(request("GET", "/"))
        assert c.response().status == 204
    assert seen == [(b"", [])]


def test_request_object_in_process():
    source = iter([b"ab", b"cd", b""])
    headers = Headers([("X-A", "1"), ("x-a", "2")])
    req = Request("POST", "/p?x=1&x=2", headers, "1.0", ("10.0.0.1", 5), lambda: next(source))
    assert (req.method, req.path, req.query, req.http_version) == ("POST", "/p", "x=1&x=2", "1.0")
    assert req.query_params == {"x": ["1", "2"]}
    assert req.headers.get_all("x-a") == ["1", "2"] and len(req.headers) == 2
    assert req.body() == b"abcd"
    assert req.body() == b"abcd"  # kept
    assert list(req.stream()) == [b"abcd"]
    assert repr(req) == "<Request POST /p?x=1&x=2 HTTP/1.0>"


def test_headers_are_case_insensitive_and_keep_order():
    h = Headers({"Content-Type": "a"})
    h.add("X-Two", "1")
    h.add("x-two", "2")
    assert h["CONTENT-TYPE"] == "a" and h.get("x-TWO") == "1"
    assert h.get_all("X-Two") == ["1", "2"]
    assert list(h) == [("content-type", "a"), ("x-two", "1"), ("x-two", "2")]
    assert "X-TWO" in h and "nope" not in h and 3 not in h
    with pytest.raises(KeyError):
        h["nope"]


# -- Response kinds over loopback -------------------------------------------------------------------


@pytest.mark.parametrize(("response", "body", "content_type"), [
    (Response(200, b"\x00raw bytes"), b"\x00raw bytes", None),
    (Response(200, "grüße"), "grüße".encode(), "text/plain; charset=utf-8"),
    (Response.text("plain"), b"plain", "text/plain; charset=utf-8"),
    (Response.json({"k": [1, "v"]}, status=201), b'{"k":[1,"v"]}', "application/json"),
    (Response(202, b"x", {"Content-Type": "image/png", "X-Extra": "yes"}), b"x", "image/png"),
], ids=["bytes", "str", "text", "json", "custom-headers"])
def test_response_kinds(http_server, response, body, content_type):
    server = http_server(lambda r: response)
    with RawClient(server.address) as c:
        c.send(request("GET", "/"))
        reply = c.response()
    assert reply.status == response.status
    assert reply.body == body
    assert reply.header("content-length") == str(len(body))
    assert reply.header("content-type") == content_type
    assert reply.header("date") is not None
    if "x-extra" in response.headers:
        assert reply.header("x-extra") == "yes"


def test_response_framing_headers_from_the_app_are_replaced(http_server):
    """The server frames the body itself: an app's Content-Length or Transfer-Encoding can
    never contradict what is sent."""
    lying = {"Content-Length": "999", "Transfer-Encoding": "gzip"}
    server = http_server(lambda r: Response(200, b"four", lying))
    with RawClient(server.address) as c:
        c.send(request("GET", "/") + request("GET", "/"))
        replies = [c.response(), c.response()]
    for reply in replies:
        assert reply.get_all("content-length") == ["4"] and reply.header("transfer-encoding") is None
        assert reply.body == b"four"


def test_response_rejects_bad_status():
    for status in (99, 1000, "200", 200.0):
        with pytest.raises(ValueError):
            Response(status)


# -- Router ---------------------------------------------------------------------------------------


def make_router() -> Router:
    router = Router()

    @router.route("/items", "GET")
    def list_items(req):
        return Response(200, b"list")

    @router.route("/items", "POST", "PUT")
    def write_item(req):
        return Response(201, b"wrote " + req.body())

    router.add("/ping", lambda req: Response(200, b"pong"))
    return router


@pytest.mark.parametrize(("method", "path", "status", "body"), [
    ("GET", "/items", 200, b"list"),
    ("POST", "/items", 201, b"wrote data"),
    ("PUT", "/items", 201, b"wrote data"),
    ("GET", "/ping", 200, b"pong"),
    ("HEAD", "/ping", 200, b"pong"),  # HEAD goes to GET's handler (the server drops the body)
    ("GET", "/items?page=2", 200, b"list"),  # the query is not part of the path
    ("GET", "/nope", 404, None),
    ("GET", "/items/", 404, None),  # exact paths only
])
def test_router_dispatches_on_method_and_path(method, path, status, body):
    reply = call(make_router(), method, path, body=b"data" if method in ("POST", "PUT") else b"")
    assert reply.status == status
    if body is not None:
        assert reply.body == body


@pytest.mark.parametrize(("method", "path", "allow"), [
    ("DELETE", "/items", "GET, HEAD, POST, PUT"),
    ("POST", "/ping", "GET, HEAD"),
])
def test_router_405_lists_allowed_methods(method, path, allow):
    reply = call(make_router(), method, path)
    assert reply.status == 405
    assert reply.headers["allow"] == allow


def test_router_over_loopback(http_server):
    server = http_server(make_router())
    with RawClient(server.address) as c:
        c.send(request("GET", "/items") + request("DELETE", "/items") + request("GET", "/missing")
               + request("HEAD", "/ping"))
        replies = [c.response(), c.response(), c.response(), c.response(head_request=True)]
    assert [r.status for r in replies] == [200, 405, 404, 200]
    assert replies[1].header("allow") == "GET, HEAD, POST, PUT"
    assert replies[3].header("content-length") == "4"


# -- fibernet.testing -------------------------------------------------------------------------------


def test_call_builds_the_request_and_reads_the_response():
    seen = {}

    def app(req):
        seen.update(method=req.method, target=req.target, host=req.headers.get("host"),
                    ctype=req.headers.get("content-type"), length=req.headers.get("content-length"),
                    custom=req.headers.get("x-custom"), json=req.json(), client=req.client)
        return Response(200, (piece for piece in ["streamed ", b"reply"]))

    reply = call(app, "post", "/path?q=1", headers={"X-Custom": "c"}, json={"n": 1})
    assert reply.status == 200
    assert reply.body == b"streamed reply" and reply.text == "streamed reply"
    assert seen["method"] == "POST" and seen["target"] == "/path?q=1"
    assert seen["host"] == "testserver" and seen["custom"] == "c"
    assert seen["ctype"] == "application/json" and seen["json"] == {"n": 1}
    assert seen["length"] == str(len(json.dumps({"n": 1})))
    assert seen["client"] == ("127.0.0.1", 50000)


def test_call_json_reply_and_errors():
    assert call(lambda r: Response.json([1, 2])).json() == [1, 2]
    assert call(lambda r: Response(200, r.body()), body="text body").body == b"text body"
    with pytest.raises(TypeError):
        call(lambda r: "not a response")
    with pytest.raises(ZeroDivisionError):  # the app's exception reaches the test as it is
        call(lambda r: 1 // 0)


def test_serve_http_with_http_client():
    app = Recorder(lambda r: Response.json({"path": r.path}))
    with serve(app, protocol="http", threads=2) as server:
        host, port = server.address[:2]
        conn = http.client.HTTPConnection(host, port, timeout=CLIENT_TIMEOUT)
        try:
            conn.request("GET", "/served")
            resp = conn.getresponse()
            assert resp.status == 200 and json.loads(resp.read()) == {"path": "/served"}
        finally:
            conn.close()
    assert app.targets == ["/served"]
    with pytest.raises(OSError), socket.create_connection((host, port), timeout=CLIENT_TIMEOUT):
        pass  # stopped: nothing listens there any more


def test_serve_tcp_handler():
    def handler(conn):
        conn.sendall(conn.recv(100).upper())

    with serve(handler) as server, socket.create_connection(server.address[:2], timeout=10) as sock:
        sock.sendall(b"shout")
        sock.shutdown(socket.SHUT_WR)
        assert ByteReader(sock.recv).read_to_eof() == b"SHOUT"


def test_serve_rejects_unknown_protocol():
    with pytest.raises(ValueError), serve(lambda r: None, protocol="gopher"):
        pass
