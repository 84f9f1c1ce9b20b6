"""A first-time user's path through ``fibernet serve``, as real processes: the startup line
says where it listens as a URL and how to stop it; an HTTP app served without
``--protocol http`` is named as such in one log line (at startup from its signature, or at
its first connection); the chat example works over ``--uds``; ``python -m fibernet`` is the
command."""

from __future__ import annotations

import http.client
import signal
import subprocess
import sys

import pytest

from .conftest import connect, read_line

pytestmark = pytest.mark.timeout(30)

ADVICE = "run with --protocol http or set PROTOCOL = 'http' in its module"

HTTP_APPS = '''
from fibernet.http import Response


def app(request):  # named like a request: found at startup
    return Response(200, b"hello")


def returns_response(x):  # only its first connection shows what it is
    return Response(200, b"hello")


def fails(x):
    return x.path


def greets_then_fails(x):  # fails before the client's request comes
    x.sendall(b"hi\\n")
    return x.path


def echo_line(conn):  # a TCP handler that happens to be sent HTTP: no advice
    conn.sendall(conn.recv(100))
'''


def stop(proc) -> None:
    proc.proc.send_signal(signal.SIGTERM)
    assert proc.proc.wait(15) == 0, proc.log


def http_get_fails(port: int) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/")
        with pytest.raises((http.client.RemoteDisconnected, ConnectionResetError)):
            conn.getresponse()
    finally:
        conn.close()


# -- the startup line ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, url",
    [
        ([], "tcp://127.0.0.1:{port}"),
        (["fibernet.examples.hello:app"], "http://127.0.0.1:{port}"),
        (["fibernet.examples.hello:app", "--workers", "2"], "http://127.0.0.1:{port}"),
    ],
    ids=["tcp", "http", "http-workers"],
)
def test_the_startup_line_is_a_url_and_says_how_to_stop(serve_process, free_port, args, url):
    proc = serve_process(*args, "--port", str(free_port), own_group=True)
    line = proc.wait_for("listening at")
    proc.wait_lines(r"serving \S+ on", count=2 if "--workers" in args else 1)
    assert url.format(port=free_port) in line, line
    assert "Ctrl-C or SIGTERM" in line, line
    stop(proc)


def test_the_startup_line_of_a_unix_socket(serve_process, tmp_path):
    path = tmp_path / "echo.sock"
    proc = serve_process("--uds", str(path))
    line = proc.wait_for("listening at")
    assert f"unix:{path} " in line, line
    stop(proc)


# -- an HTTP app served as TCP ---------------------------------------------------------------------


@pytest.fixture
def http_apps(app_dir):
    return app_dir.module(HTTP_APPS), str(app_dir.path)


def test_an_http_app_served_as_tcp_is_named_at_startup(serve_process, free_port, http_apps):
    name, where = http_apps
    proc = serve_process(f"{name}:app", "--app-dir", where, "--port", str(free_port))
    line = proc.wait_for("looks like an HTTP app")
    assert "its parameter is named 'request'" in line and ADVICE in line, line
    proc.wait_for("listening at")
    stop(proc)
    assert proc.log.count("looks like an HTTP app") == 1, proc.log


@pytest.mark.parametrize("handler, why", [
    ("returns_response", "the handler returned a Response"),
    ("fails", "a client sent an HTTP request and the handler failed"),
])
@pytest.mark.parametrize("workers", [1, 2])
def test_an_http_app_served_as_tcp_is_named_at_its_first_connection(
    serve_process, free_port, http_apps, handler, why, workers
):
    name, where = http_apps
    proc = serve_process(f"{name}:{handler}", "--app-dir", where, "--port", str(free_port),
                         "--workers", str(workers), own_group=True)
    proc.wait_lines(r"serving \S+ on", count=workers)
    assert "looks like an HTTP app" not in proc.log
    http_get_fails(free_port)
    line = proc.wait_for("looks like an HTTP app")
    assert why in line and ADVICE in line, line
    stop(proc)


def test_a_handler_that_fails_before_the_request_comes_is_named(serve_process, free_port, http_apps):
    """The handler fails before the client's bytes come (here: the client sends its request
    only once the handler greeted it, just before failing): the hint waits for them."""
    name, where = http_apps
    proc = serve_process(f"{name}:greets_then_fails", "--app-dir", where, "--port", str(free_port))
    proc.wait_for("serving")
    with connect(free_port) as c:
        assert read_line(c) == b"hi\n"
        c.sendall(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        line = proc.wait_for("looks like an HTTP app")
    assert "the handler failed" in line, line
    stop(proc)


def test_a_tcp_handler_sent_http_gets_no_advice(serve_process, free_port, http_apps):
    name, where = http_apps
    proc = serve_process(f"{name}:echo_line", "--app-dir", where, "--port", str(free_port))
    proc.wait_for("serving")
    with connect(free_port) as c:
        c.sendall(b"GET / HTTP/1.1\r\n\r\n")
        assert read_line(c) == b"GET / HTTP/1.1\r\n"
    stop(proc)
    assert "looks like an HTTP app" not in proc.log, proc.log


# -- the chat example over a Unix socket ------------------------------------------------------------


def test_chat_serves_over_a_unix_socket(serve_process, tmp_path):
    path = tmp_path / "chat.sock"
    proc = serve_process("fibernet.examples.chat:handle", "--uds", str(path))
    proc.wait_for("serving")
    with connect(path) as alice, connect(path) as bob:
        hello = read_line(alice)
        assert hello.startswith(b"* you are "), hello
        alice_name = hello[len(b"* you are "):].strip()
        assert read_line(alice) == b"* " + alice_name + b" joined\n"
        bob_name = read_line(bob)[len(b"* you are "):].strip()
        assert bob_name and bob_name != alice_name
        assert read_line(bob) == b"* " + bob_name + b" joined\n"
        assert read_line(alice) == b"* " + bob_name + b" joined\n"
        alice.sendall(b"hi over a unix socket\n")
        assert read_line(bob) == alice_name + b": hi over a unix socket\n"
        assert read_line(alice) == alice_name + b": hi over a unix socket\n"
    stop(proc)
    assert "failed" not in proc.log, proc.log


# -- python -m fibernet ---------------------------------------------------------------------------------


def test_python_m_fibernet_is_the_command():
    done = subprocess.run([sys.executable, "-m", "fibernet", "serve", "--help"],
                          capture_output=True, text=True, timeout=20, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr
    assert "Usage: python -m fibernet serve" in done.stdout, done.stdout
    assert "FIBERNET_PORT" in done.stdout
