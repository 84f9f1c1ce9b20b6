"""WSGI (PEP 3333) apps on the fibernet HTTP server: ``wsgiref.validate`` around a test app,
the body streamed from the socket, responses as lists, generators, ``write()`` and
``wsgi.file_wrapper``, ``close()``, errors, and ``--interface auto``."""

from __future__ import annotations

import http.client
import io
import logging
import socket
import threading
from wsgiref.validate import validator

import pytest
import click
from click.testing import CliRunner

from fibernet.server.wsgi import WSGIApp, detect_interface
from fibernet.testing import serve

pytestmark = pytest.mark.timeout(30)


def get(server, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
    host, port = server.address[:2]
    conn = http.client.HTTPConnection(host, port, timeout=10)
    try:
        headers = headers or {}
        conn.request(method, path, body=body, headers=headers, encode_chunked="Transfer-Encoding" in headers)
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def sample(environ, start_response):
    """A test app that uses what PEP 3333 offers, one path each."""
    path = environ["PATH_INFO"]
    text = [("Content-Type", "text/plain")]
    if path == "/list":
        start_response("200 OK", text)
        return [b"one ", b"two"]
    if path == "/echo":
        stream = environ["wsgi.input"]
        first = stream.readline()
        rest = b""
        while piece := stream.read(4):  # (the validator wants a size)
            rest += piece
        start_response("200 OK", text)
        return [b"first=" + first + b" rest=" + rest]
    if path == "/lines":
        lines = list(environ["wsgi.input"])
        start_response("200 OK", text)
        return [b"%d lines" % len(lines)]
    if path == "/generator":
        def gen():
            start_response("200 OK", text)  # called at the first iteration: allowed
            for i in range(3):
                yield b"part %d;" % i
        return gen()
    if path == "/write":
        write = start_response("200 OK", text)
        write(b"written ")
        return [b"returned"]
    if path == "/file":
        start_response("200 OK", text + [("Content-Length", "20000")])
        return environ["wsgi.file_wrapper"](io.BytesIO(b"f" * 20000), 4096)
    if path == "/environ":
        start_response("200 OK", text)
        keys = ("REQUEST_METHOD", "SCRIPT_NAME", "PATH_INFO", "QUERY_STRING", "SERVER_NAME",
                "SERVER_PORT", "SERVER_PROTOCOL", "HTTP_X_THING", "CONTENT_TYPE", "REMOTE_ADDR")
        return ["\n".join(f"{k}={environ.get(k)}" for k in keys).encode("latin-1")]
    start_response("404 Not Found", text)
    return [b"nothing here"]


@pytest.fixture
def validated():
    with serve(WSGIApp(validator(sample)), "http") as server:
        yield server


def test_list_generator_write_and_file_wrapper_under_the_validator(validated):
    assert get(validated, "GET", "/list")[2] == b"one two"
    status, headers, body = get(validated, "GET", "/generator")
    assert (status, body) == (200, b"part 0;part 1;part 2;")
    assert get(validated, "GET", "/write")[2] == b"written returned"
    status, headers, body = get(validated, "GET", "/file")
    assert body == b"f" * 20000
    assert headers["content-length"] == "20000"  # the app's length, not chunked
    assert "transfer-encoding" not in {k.lower() for k in headers}
    assert get(validated, "GET", "/missing")[0] == 404


def test_the_body_reaches_wsgi_input(validated):
    assert get(validated, "POST", "/echo", b"line one\nthe rest")[2] == b"first=line one\n rest=the rest"
    chunked = get(validated, "POST", "/echo", iter([b"ab\n", b"cd"]), {"Transfer-Encoding": "chunked"})
    assert chunked[2] == b"first=ab\n rest=cd"
    assert get(validated, "POST", "/lines", b"a\nb\nc")[2] == b"3 lines"


def test_environ(validated):
    body = get(validated, "GET", "/environ?x=1&y=%20", None,
               {"X-Thing": "a", "Content-Type": "text/x", "X_Thing": "spoof"})[2].decode()
    env = dict(line.split("=", 1) for line in body.split("\n"))
    assert env["REQUEST_METHOD"] == "GET" and env["SCRIPT_NAME"] == "" and env["PATH_INFO"] == "/environ"
    assert env["QUERY_STRING"] == "x=1&y=%20"
    assert env["SERVER_PROTOCOL"] == "HTTP/1.1" and env["SERVER_NAME"] == "127.0.0.1"
    assert env["SERVER_PORT"] == str(validated.address[1])
    assert env["HTTP_X_THING"] == "a"  # the X_Thing field (underscore) is not taken for it
    assert env["CONTENT_TYPE"] == "text/x" and env["REMOTE_ADDR"] == "127.0.0.1"


def test_path_info_is_decoded_as_latin_1(validated):
    with serve(WSGIApp(lambda e, s: (s("200 OK", []), [e["PATH_INFO"].encode("latin-1")])[1]), "http") as server:
        assert get(server, "GET", "/caf%C3%A9%20x")[2] == "/café x".encode()


def test_wsgi_input_streams_from_the_socket():
    """The app answers after reading 5 bytes of a body the client has not finished sending."""

    def app(environ, start_response):
        first = environ["wsgi.input"].read(5)
        start_response("200 OK", [("Content-Type", "text/plain"), ("Connection", "close")])
        return [first]

    with serve(WSGIApp(app), "http") as server, socket.create_connection(server.address[:2], timeout=10) as c:
        c.sendall(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
        reply = b""
        while not reply.endswith(b"hello"):
            chunk = c.recv(4096)
            assert chunk, reply
            reply += chunk
        assert reply.startswith(b"HTTP/1.1 200 ")


def test_close_is_called_even_when_the_client_goes_away():
    closed = threading.Event()
    produced = threading.Event()

    class Body:
        def __iter__(self):
            while True:
                produced.set()
                yield b"x" * 65536

        def close(self):
            closed.set()

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return Body()

    with serve(WSGIApp(app), "http") as server:
        with socket.create_connection(server.address[:2], timeout=10) as c:
            c.sendall(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
            assert c.recv(100).startswith(b"HTTP/1.1 200 ")
            assert produced.wait(5)
        assert closed.wait(10)


def test_an_error_before_the_response_is_a_logged_500(caplog):
    def app(environ, start_response):
        raise RuntimeError("the app broke")

    with caplog.at_level(logging.ERROR), serve(WSGIApp(app), "http") as server:
        status, _, body = get(server, "GET", "/")
    assert status == 500
    assert any("the app broke" in (r.exc_text or "") for r in caplog.records)


def test_exc_info_replaces_the_status_before_anything_is_sent():
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        try:
            raise ValueError("late")
        except ValueError:
            import sys
            start_response("503 Service Unavailable", [("Content-Type", "text/plain")], sys.exc_info())
        return [b"sorry"]

    with serve(WSGIApp(app), "http") as server:
        assert get(server, "GET", "/")[:3:2] == (503, b"sorry")


def test_an_error_in_the_middle_cuts_the_response(caplog):
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])

        def gen():
            yield b"a" * 1000
            raise RuntimeError("broke mid-way")
        return gen()

    with caplog.at_level(logging.ERROR), serve(WSGIApp(app), "http") as server:
        with pytest.raises(http.client.IncompleteRead):
            get(server, "GET", "/")
    assert any("broke mid-way" in (r.exc_text or "") for r in caplog.records)


def test_a_body_shorter_than_its_content_length_is_cut(caplog):
    def app(environ, start_response):
        start_response("200 OK", [("Content-Length", "100")])
        return iter([b"only ten b"])

    with caplog.at_level(logging.ERROR), serve(WSGIApp(app), "http") as server:
        with pytest.raises(http.client.IncompleteRead):
            get(server, "GET", "/")


# -- --interface auto ------------------------------------------------------------------------


def test_detect_interface():
    import flask

    from fibernet.examples import chat, hello

    assert detect_interface(sample) == "wsgi"
    assert detect_interface(flask.Flask("x")) == "wsgi"
    assert detect_interface(chat.handle) == "fibernet"
    assert detect_interface(chat.app) == "fibernet"
    assert detect_interface(hello.app) == "fibernet"

    async def asgi(scope, receive, send):
        pass

    class AsgiClass:
        async def __call__(self, scope, receive, send):
            pass

    for app in (asgi, AsgiClass()):
        with pytest.raises(TypeError, match="ASGI"):
            detect_interface(app)


ASGI_MODULE = "async def app(scope, receive, send):\n    pass\n"


def test_serve_refuses_an_asgi_app_with_the_reason(tmp_path):
    from fibernet_cli.main import cli

    (tmp_path / "asgi_mod_for_test.py").write_text(ASGI_MODULE)
    result = CliRunner().invoke(cli, ["serve", "asgi_mod_for_test:app", "--app-dir", str(tmp_path)])
    assert result.exit_code == 2
    assert "ASGI" in result.output and "WSGI" in result.output


def _serve_settings(args: list[str]):
    from fibernet_cli.main import serve as serve_command
    from fibernet_cli.settings import Settings

    with serve_command.make_context("serve", args) as ctx:
        return Settings(**ctx.params)


def test_interface_wsgi_wraps_the_app_and_serves_http(tmp_path):
    from fibernet_cli.main import _load, build_server

    (tmp_path / "wsgi_mod_for_test.py").write_text(
        "def app(environ, start_response, extra=None):\n"  # (auto would not know it: 2 + 1 optional)
        "    start_response('200 OK', [])\n    return [b'ok']\n"
        "def three(a, b, c):\n    pass\n"
    )
    settings = _serve_settings(["wsgi_mod_for_test:app", "--app-dir", str(tmp_path), "--interface", "wsgi"])
    handler, settings = _load(settings, click.core.ParameterSource.DEFAULT)
    assert isinstance(handler, WSGIApp) and settings.protocol == "http"
    assert build_server(handler, settings, None).handler.app is handler
    three = _serve_settings(["wsgi_mod_for_test:three", "--app-dir", str(tmp_path)])
    with pytest.raises(Exception, match="three arguments"):
        _load(three, click.core.ParameterSource.DEFAULT)


def test_websocket_flags_reach_the_server():
    from fibernet_cli.main import build_server

    from fibernet.examples import chat

    settings = _serve_settings(["--protocol", "http", "--ws-max-size", "1234", "--ws-ping-interval", "0",
                                "--ws-close-timeout", "2.5", "--no-ws-per-message-deflate",
                                "--send-timeout", "9"])
    limits = build_server(chat.app, settings, None).handler.config.websocket
    assert (limits.max_size, limits.ping_interval, limits.close_timeout) == (1234, None, 2.5)
    assert (limits.per_message_deflate, limits.send_timeout) == (False, 9.0)
