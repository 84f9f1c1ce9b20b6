"""Fixtures for the tests of the load generator (``loadtest/load.py``).

- ``load``: the ``loadtest/load.py`` module (``load.Config``, ``load.run_load``).
- ``tcp_server(handler)`` / ``http_server(app)``: serve a fibernet TCP handler or HTTP app on
  127.0.0.1 at a free port, in background threads, for the test; returns ``(host, port)``.
  Every server is stopped and waited for at teardown.
- ``each_request(conn)``: what a test HTTP handler loops on, once per request head.
- ``refused_port``: a port bound on 127.0.0.1 that does not listen: a connect to it is
  refused, and no other program can take it while the test runs.
- ``run_cli(*args)``: runs ``python loadtest/load.py ARGS`` (bounded) and returns the
  completed process (text stdout and stderr).
- ``_no_leaks`` (autouse): after the test no runtime is alive, no thread is left behind (the
  process-wide fibernet thread pool excepted) and no descriptor is left open.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys

import pytest

from fibernet.testing import serve

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LOADTEST = os.path.join(ROOT, "loadtest")
LOAD_SCRIPT = os.path.join(LOADTEST, "load.py")
CLI_TIMEOUT = 30.0

if LOADTEST not in sys.path:
    sys.path.insert(0, LOADTEST)


def each_request(conn: socket.socket):
    """For a test server's handler: yields once per HTTP request head that comes on ``conn``
    (TCP_NODELAY set, so that what the handler sends goes out at once)."""
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    got = b""
    while data := conn.recv(65536):
        got += data
        while b"\r\n\r\n" in got:
            got = got.split(b"\r\n\r\n", 1)[1]
            yield


@pytest.fixture(autouse=True)
def _no_leaks(no_server_leaks):
    """After the test no runtime is alive, no thread is left and no descriptor is open."""
    yield


@pytest.fixture(scope="session")
def load():
    import load as module

    return module


@pytest.fixture
def _servers():
    with contextlib.ExitStack() as stack:
        yield stack


@pytest.fixture
def tcp_server(_servers):
    def start(handler, **options) -> tuple[str, int]:
        server = _servers.enter_context(serve(handler, "tcp", idle_timeout=None, **options))
        return server.address[:2]

    return start


@pytest.fixture
def http_server(_servers):
    def start(app, **options) -> tuple[str, int]:
        server = _servers.enter_context(serve(app, "http", **options))
        return server.address[:2]

    return start


@pytest.fixture
def refused_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))  # bound, not listening: connects are refused
        yield sock.getsockname()[1]


@pytest.fixture
def run_cli():
    def run(*args: str, timeout: float = CLI_TIMEOUT) -> subprocess.CompletedProcess:
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")])))
        return subprocess.run(
            [sys.executable, LOAD_SCRIPT, *map(str, args)],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
        )

    return run
