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
import threading
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


class Forwarder:
    """A TCP forwarder to the broker that the test can cut: ``stop()`` closes every
    connection and refuses new ones; ``start()`` listens again on the same port.  So one
    bus loses the broker while the others keep it."""

    def __init__(self, target_port: int) -> None:
        self.target = target_port
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._listener: socket.socket | None = None
        self._socks: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._stopping = False

    def start(self) -> None:
        self._stopping = False
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(16)
        self._listener = listener
        self._spawn(self._accept, listener)

    def _spawn(self, target, *args) -> None:
        t = threading.Thread(target=target, args=args, daemon=True)
        self._threads.append(t)
        t.start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target))
            with self._lock:
                if self._stopping:  # accepted as stop() began: cut it too
                    client.close()
                    upstream.close()
                    return
                self._socks += [client, upstream]
            self._spawn(self._pipe, client, upstream)
            self._spawn(self._pipe, upstream, client)

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def stop(self) -> None:
        with self._lock:
            self._stopping = True
        if self._listener is not None:
            self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()
            self._listener = None
        with self._lock:
            socks, self._socks = self._socks, []
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for t in self._threads:
            t.join(10)
        self._threads = []
        for s in socks:
            s.close()


@pytest.fixture
def forwarder(redis):
    fwd = Forwarder(redis.port)
    fwd.start()
    try:
        yield fwd
    finally:
        fwd.stop()
