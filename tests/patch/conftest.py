"""Real servers over loopback for the patch tests, and the subprocess that runs the clients.

Patching is process-global, so every patched client runs in a subprocess (``clients.py`` or
a script given inline); the test process itself is never patched.

- ``slow_http``: a fibernet HTTP server that answers ``/slow/...`` with b"slow" after 0.5 s.
- ``redis_server``: Debian's ``redis-server`` on a free port, no persistence.
- ``postgres``: a PostgreSQL cluster made with ``initdb`` in a temporary directory (as the
  ``postgres`` user when the tests run as root: the server refuses root), with room for
  the 200 connections of the bar; the fixture is a DSN.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import pytest

import fibernet
from fibernet.http import Response
from fibernet.testing import serve

from ..conftest import program

HERE = pathlib.Path(__file__).parent
DELAY = 0.5


def run_script(args: list[str], timeout: float = 50) -> subprocess.CompletedProcess:
    """``python args...`` in a subprocess with this checkout importable; fails on a non-zero exit."""
    env = dict(os.environ, PYTHONPATH=str(HERE.parents[1]))
    env.pop("PSYCOPG_WAIT_FUNC", None)
    proc = subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, timeout=timeout, env=env, cwd=HERE
    )
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return proc


def run_clients(library: str, target: str, count: int, patch: bool) -> dict:
    """Run ``count`` fibers of ``library`` requests in a subprocess; its JSON report."""
    proc = run_script(["clients.py", library, target, str(count), *(["--patch"] if patch else [])])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _slow(request) -> Response:
    fibernet.sleep(DELAY)
    return Response(200, b"slow")


@pytest.fixture(scope="module")
def slow_http():
    with serve(_slow, "http") as server:
        host, port = server.address[:2]
        yield f"{host}:{port}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port: int, proc: subprocess.Popen, what: str, bound: float = 30.0) -> None:
    deadline = time.monotonic() + bound
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on {port} within {bound}s")


@pytest.fixture(scope="module")
def redis_server():
    exe = program("redis-server")
    port = _free_port()
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.Popen(
            [
                exe,
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                tmp,
                "--maxclients",
                "1000",
            ],
            stdout=subprocess.DEVNULL,
        )
        try:
            _wait_port(port, proc, "redis-server")
            yield f"127.0.0.1:{port}"
        finally:
            proc.terminate()
            proc.wait(10)


@pytest.fixture(scope="module")
def postgres():
    bindir = pathlib.Path(program("initdb")).parent
    as_user: list[str] = []
    user = "postgres"
    if os.geteuid() == 0:  # the server refuses to run as root
        as_user = ["runuser", "-u", "postgres", "--"]
    else:
        import getpass

        user = getpass.getuser()
    tmp = tempfile.mkdtemp(prefix="fibernet-pg-")
    data = os.path.join(tmp, "data")
    if as_user:
        shutil.chown(tmp, "postgres")
    port = _free_port()
    try:
        subprocess.run(
            [*as_user, str(bindir / "initdb"), "-D", data, "-U", user, "-A", "trust", "--no-sync"],
            check=True,
            capture_output=True,
            timeout=120,
        )
        proc = subprocess.Popen(
            [
                *as_user,
                str(bindir / "postgres"),
                "-D",
                data,
                "-p",
                str(port),
                "-k",
                tmp,
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "max_connections=300",
                "-c",
                "fsync=off",
                "-c",
                "shared_buffers=16MB",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            _wait_port(port, proc, "postgres", bound=60)
            yield f"host=127.0.0.1 port={port} user={user} dbname=postgres"
        finally:
            proc.terminate()  # smart shutdown; the clients have all gone
            proc.wait(30)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
