"""Fixtures for the tests of the load generator (``loadtest/load.py``).

- ``load``: the ``loadtest/load.py`` module (``load.Config``, ``load.run_load``).
- ``tcp_server(handler)`` / ``http_server(app)``: serve a fibernet TCP handler or HTTP app on
  127.0.0.1 at a free port, in background threads, for the test; returns ``(host, port)``.
  Every server is stopped and waited for at teardown.
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
import threading

import pytest

from fibernet.runtime.runtime import runtimes
from fibernet.testing import serve

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LOADTEST = os.path.join(ROOT, "loadtest")
LOAD_SCRIPT = os.path.join(LOADTEST, "load.py")
CLI_TIMEOUT = 30.0

if LOADTEST not in sys.path:
    sys.path.insert(0, LOADTEST)


def _threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if not t.name.startswith("fibernet-pool")}


@pytest.fixture(autouse=True)
def _no_leaks(open_fds):
    before = _threads()
    fds_before = open_fds()
    yield
    assert runtimes() == [], "a runtime is still alive after the test"
    assert _threads() <= before, _threads() - before
    leaked = open_fds().leaked_since(fds_before)
    assert not leaked, f"descriptors left open: {leaked}"


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
