"""Fixtures for the bus tests: a real ``redis-server`` on a free loopback port.

- ``redis``: a :class:`RedisServer` started in the test's temporary directory (no
  persistence), stopped after the test.  ``stop()`` kills it (SIGKILL, as a crash would) and
  ``start()`` starts it again on the same port, empty.  The tests skip, saying why, where
  ``redis-server`` is not installed (``.ci/run`` installs it, so CI never skips).
- ``_no_leaks`` (autouse): no runtime alive, no thread left, no descriptor open after a test.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time

import pytest

REDIS = shutil.which("redis-server") or (
    "/usr/bin/redis-server" if shutil.os.path.exists("/usr/bin/redis-server") else None
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    def __init__(self, directory) -> None:
        self.dir = directory
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 15.0) -> None:
        args = [REDIS, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir),
                "--save", "", "--appendonly", "no", "--daemonize", "no", "--loglevel", "warning"]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout
        while True:  # ready when it answers PING
            try:
                if self.ask(b"PING") == b"+PONG\r\n":
                    return
            except OSError:
                pass
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited: {self.proc.stderr.read().decode()}")
            if time.monotonic() > deadline:
                raise RuntimeError("redis-server did not answer PING")
            time.sleep(0.02)

    def ask(self, *words: bytes) -> bytes:
        """One inline command over a plain socket; the raw reply line."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
            s.sendall(b" ".join(words) + b"\r\n")
            return s.recv(65536)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc.stderr.close()
            self.proc = None


@pytest.fixture
def redis(tmp_path):
    if REDIS is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server; .ci/run does)")
    server = RedisServer(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(autouse=True)
def _no_leaks(no_server_leaks):
    yield
