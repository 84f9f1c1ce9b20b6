"""The servers of ``loadtest/peers/`` as the benchmarks start them (``_server.ServerProcess``:
a READY line, then stop): each echoes, or answers GET /hello, over a real socket.  A peer
whose library is not installed here is skipped (``fibernet loadtest --make-env DIR`` has them)."""

from __future__ import annotations

import http.client
import importlib.util
import socket

import pytest
from _server import ServerProcess
from peers import _serve

pytestmark = pytest.mark.timeout(60)

ECHO = [("echo_fibernet", ()), ("echo_fibernet", ("--threads", "2")), ("echo_asyncio", ()),
        ("echo_asyncio", ("--api", "protocol")), ("echo_asyncio", ("--loop", "uvloop")), ("echo_epoll", ()),
        ("echo_gevent", ()), ("echo_trio", ())]
HELLO = ["hello_wsgi", "hello_aiohttp", "hello_uvloop"]
NEEDS = {"echo_gevent": "gevent", "echo_trio": "trio", "hello_wsgi": "gevent", "hello_aiohttp": "aiohttp",
         "hello_uvloop": "uvloop"}


def started(name: str, *args: str) -> ServerProcess:
    module = "uvloop" if "uvloop" in args else NEEDS.get(name)
    if module and importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} is not installed")
    return ServerProcess(_serve.command(name, *args), name=name)


@pytest.mark.parametrize(("name", "args"), ECHO)
def test_an_echo_peer_echoes(name, args):
    with started(name, *args) as server:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as conn:
            for size in (1, 100, 70_000):
                payload = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
                conn.sendall(payload)
                got = b""
                while len(got) < size:
                    got += conn.recv(size - len(got))
                assert got == payload
        assert server.stop(10)[1] is False  # it went on SIGTERM, no SIGKILL needed


@pytest.mark.parametrize("name", HELLO)
def test_a_hello_peer_answers(name):
    with started(name) as server:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        try:
            for _ in range(2):  # on one kept connection
                conn.request("GET", "/hello")
                response = conn.getresponse()
                assert (response.status, response.read()) == (200, b"Hello, World!")
                assert response.getheader("content-type").startswith("text/plain")
        finally:
            conn.close()
