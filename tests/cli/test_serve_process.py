"""``fibernet serve`` as a real process: it serves, SIGTERM drains a slow request and exits
0, SIGINT stops it, a second signal stops it at once.  Readiness is the log line "serving
... on host:port", never a sleep."""

from __future__ import annotations

import signal
import socket
import time

import pytest

pytestmark = pytest.mark.timeout(40)

APP = '''
from fibernet.net.streams import Stream


def handle(conn):
    stream = Stream(conn)
    while line := stream.readline():
        if line == b"slow\\n":
            conn.sendall(b"started\\n")
            if stream.readline() == b"go\\n":
                conn.sendall(b"finished\\n")
            return
        conn.sendall(line)
'''


def _connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=10)


def _readline(sock: socket.socket) -> bytes:
    data = bytearray()
    while not data.endswith(b"\n"):
        chunk = sock.recv(1)
        if not chunk:
            break
        data += chunk
    return bytes(data)


@pytest.fixture
def app(app_dir):
    app_dir.module(APP, name="tests_app_module")
    return app_dir


def test_sigterm_lets_a_slow_request_finish_and_exits_0(app, serve_process, free_port):
    server = serve_process("tests_app_module:handle", "--port", str(free_port), "--app-dir", str(app.path),
                           "--graceful-timeout", "20")
    server.wait_for(f"serving tests_app_module:handle on 127.0.0.1:{free_port}")
    with _connect(free_port) as c:
        c.sendall(b"echo me\n")
        assert _readline(c) == b"echo me\n"
        c.sendall(b"slow\n")
        assert _readline(c) == b"started\n"
        t0 = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        server.wait_for("SIGTERM: draining")
        server.wait_for("draining 1 connection")
        c.sendall(b"go\n")
        assert _readline(c) == b"finished\n"
        assert c.recv(16) == b""
    assert server.proc.wait(15) == 0, server.log
    assert time.monotonic() - t0 < 15, "it waited out the grace"
    assert "Traceback" not in server.log, server.log


def test_sigint_stops_and_exits_0_configured_by_environment(app, serve_process, free_port):
    server = serve_process("tests_app_module:handle",
                           env={"FIBERNET_PORT": str(free_port), "FIBERNET_APP_DIR": str(app.path),
                                "FIBERNET_THREADS": "2", "FIBERNET_GRACEFUL_TIMEOUT": "30"})
    server.wait_for(f"on 127.0.0.1:{free_port} with 2 scheduler(s)")
    with _connect(free_port) as idle:
        idle.sendall(b"hello\n")
        assert _readline(idle) == b"hello\n"
        # The handler now waits for a line that never comes; SIGINT does not wait for it long.
        t0 = time.monotonic()
        server.proc.send_signal(signal.SIGINT)
        assert server.proc.wait(15) == 0, server.log
        assert idle.recv(16) == b""
    assert time.monotonic() - t0 < 10
    assert "SIGINT: stopping" in server.log
    assert "Traceback" not in server.log and "KeyboardInterrupt" not in server.log, server.log


def test_a_second_sigterm_stops_at_once(app, serve_process, free_port):
    server = serve_process("tests_app_module:handle", "--port", str(free_port), "--app-dir", str(app.path),
                           "--graceful-timeout", "60")
    server.wait_for(f"on 127.0.0.1:{free_port}")
    with _connect(free_port) as stuck:
        stuck.sendall(b"slow\n")
        assert _readline(stuck) == b"started\n"
        server.proc.send_signal(signal.SIGTERM)
        server.wait_for("draining 1 connection")
        t0 = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(15) == 0, server.log
        assert stuck.recv(16) == b""
    assert time.monotonic() - t0 < 10, "the second signal did not cut the drain short"
    assert "again: stopping now" in server.log


def test_the_default_app_is_echo(serve_process, free_port, tmp_path):
    server = serve_process("--port", str(free_port))
    server.wait_for(f"serving fibernet.examples.echo:handle on 127.0.0.1:{free_port}")
    with _connect(free_port) as c:
        c.sendall(b"default echo\n")
        assert _readline(c) == b"default echo\n"
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(15) == 0, server.log


def test_an_app_error_in_a_real_process_exits_2_without_traceback(serve_process, free_port):
    server = serve_process("no_such_module_xyz:handle", "--port", str(free_port))
    assert server.proc.wait(15) == 2
    server.close()
    assert "no module named 'no_such_module_xyz'" in server.log
    assert "Traceback" not in server.log
