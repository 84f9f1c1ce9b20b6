"""Fixtures for the TCP server tests.

- ``servers``: start a :class:`fibernet.Server` on 127.0.0.1 at a free port; every server
  started is stopped (at once) and waited for after the test.
- ``nofile``: raise this process's soft RLIMIT_NOFILE to the hard limit when it is below
  what a 1,000-connection test needs (both ends of every connection live in this process).
- ``_no_leaks`` (autouse): after the test (and after its servers stopped) no runtime is
  alive, no thread is left behind (the process-wide thread pool's workers excepted) and no
  descriptor is left open.
"""

from __future__ import annotations

import resource

import pytest

import fibernet as fn

from ..cli.conftest import free_port  # noqa: F401 - the fixture, for the tests that start `fibernet serve`

NEEDED_FDS = 4096


@pytest.fixture(autouse=True)
def _no_leaks(no_server_leaks):
    """After the test no runtime is alive, no thread is left and no descriptor is open."""
    yield


@pytest.fixture
def servers():
    started: list[fn.Server] = []

    def start(handler, **options) -> fn.Server:
        server = fn.Server(handler, "127.0.0.1", 0, **options).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop(0)
    for server in started:
        assert server.wait(15), f"{server} did not stop"


@pytest.fixture
def nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= NEEDED_FDS:
        yield soft
        return
    if hard != resource.RLIM_INFINITY and hard < NEEDED_FDS:
        pytest.skip(f"RLIMIT_NOFILE hard limit {hard} < {NEEDED_FDS}")
    new = NEEDED_FDS * 2 if hard == resource.RLIM_INFINITY else min(hard, NEEDED_FDS * 2)
    resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
    try:
        yield new
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
