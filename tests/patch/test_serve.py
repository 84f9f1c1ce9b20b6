"""``fibernet serve --patch`` and ``FIBERNET_PATCH=1``: the process patches before it imports
the app, says what it patched in its log, and a handler written for threads (``time.sleep``)
no longer holds the other requests of its scheduler."""

from __future__ import annotations

import http.client
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.cli.conftest import ServerProcess

APP = """
import time
from socket import socket  # taken at import: the cooperative class only if patched first

from fibernet.http import Response


def app(request):
    time.sleep(0.5)
    return Response(200, socket.__name__)
"""
REQUESTS = 20  # 10 s one after the other


def _get(port: int) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    try:
        conn.request("GET", "/")
        response = conn.getresponse()
        return response.status, response.read().decode()
    finally:
        conn.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("how", ["flag", "env"])
def test_serve_patch_before_the_app_is_imported(tmp_path, how):
    (tmp_path / "slowapp.py").write_text(APP)
    port = _free_port()
    args = ["--protocol", "http", "--port", str(port), "slowapp:app"]
    if how == "flag":
        server = ServerProcess([*args, "--patch"], tmp_path)
    else:
        server = ServerProcess(args, tmp_path, {"FIBERNET_PATCH": "1"})
    try:
        line = server.wait_for("patched for fibers")
        for name in (
            "socket.socket",
            "ssl.SSLContext.sslsocket_class",
            "select.select",
            "time.sleep",
            "threading.Lock",
        ):
            assert name in line
        server.wait_for("serving")
        start = time.monotonic()
        with ThreadPoolExecutor(REQUESTS) as pool:
            answers = list(pool.map(_get, [port] * REQUESTS))
        wall = time.monotonic() - start
        assert answers == [(200, "CooperativeSocket")] * REQUESTS
        assert wall < 2.0, wall
    finally:
        server.close()


def test_serve_without_patch_logs_nothing_of_it(tmp_path):
    (tmp_path / "slowapp.py").write_text(APP)
    port = _free_port()
    server = ServerProcess(["--protocol", "http", "--port", str(port), "slowapp:app"], tmp_path)
    try:
        server.wait_for("serving")
        assert _get(port) == (200, "socket")
        assert "patched" not in server.log
    finally:
        server.close()
