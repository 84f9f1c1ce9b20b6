"""Fixtures shared by fibernet's tests.

- ``open_fds``: a snapshot of this process's descriptors (``/proc/self/fd``), to check that a
  runtime closes its epoll and eventfds and a test closes its sockets.
- ``switchinterval``: makes the interpreter switch threads as often as it can (1 µs) for the
  length of a test, so cross-thread races show up; restored afterwards.
- ``spin_until``: waits for a condition that another thread makes true, yielding (in a fiber)
  or releasing the GIL (in a plain thread) between looks, and fails after a real-time bound.
  For observing state (a fiber is now blocked); never a substitute for a channel or an event.
- ``start_thread``: starts a plain thread and returns a :class:`fibernet.Condition` signalled
  when it ends, so a fiber (or anyone) can wait for it without blocking its scheduler; the
  threads are joined at teardown.
- ``no_runtime_leaks``: after the test, no runtime is alive and no thread was left behind.
  It also collects garbage at this safe point.  A failed fiber nobody joined logs its
  exception, traceback formatted, when it is collected; on CPython 3.11 formatting a
  traceback parses source with ``ast``, and a collection that happens to run inside another
  ``ast.parse`` (pytest rewriting a module it imports late) leaves that one's recursion
  counter off: "SystemError: AST constructor recursion depth mismatch" (the AST state is
  per interpreter, not per call; compare CPython gh-106905, pytest #10763).
- ``fake_systemd``: systemd's end of ``$NOTIFY_SOCKET`` (sd_notify), with each message's
  sender pid.
- ``requires(name)`` (a fixture; ``program(name)`` as a function): the path of an outside
  program a test drives (curl, wrk, h2load, haproxy, systemd-analyze); when it is absent the
  test skips, naming the Debian package, or fails under CI (``CI`` set), where ``.ci/run``
  installs them.
"""

from __future__ import annotations

import gc
import glob
import os
import shutil
import socket
import struct
import sys
import threading
import time
from pathlib import Path

import pytest

import fibernet as fn
from fibernet.runtime.runtime import runtimes


class FdSnapshot:
    """The descriptors open at one moment, with what they point to."""

    def __init__(self) -> None:
        self.fds: dict[int, str] = {}
        for name in os.listdir("/proc/self/fd"):
            try:
                self.fds[int(name)] = os.readlink(f"/proc/self/fd/{name}")
            except OSError:  # the listing's own descriptor, closed by now
                pass

    def __len__(self) -> int:
        return len(self.fds)

    def leaked_since(self, earlier: FdSnapshot) -> list[str]:
        """Descriptors open now that were not open (or pointed elsewhere) at ``earlier``."""
        return [
            f"{fd} -> {target}" for fd, target in sorted(self.fds.items()) if earlier.fds.get(fd) != target
        ]


@pytest.fixture
def open_fds():
    """Call it for a snapshot: ``before = open_fds(); ...; assert open_fds().leaked_since(before) == []``."""
    return FdSnapshot


@pytest.fixture
def switchinterval():
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(old)


@pytest.fixture
def spin_until():
    def spin(predicate, what: str = "condition", limit: float = 10.0) -> None:
        deadline = time.monotonic() + limit
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}")
            fn.yield_now()  # a fiber lets the others run; a plain thread releases the GIL

    return spin


@pytest.fixture
def start_thread():
    threads = []

    def start(target, *args) -> fn.Condition:
        ended = fn.Condition()

        def body():
            try:
                target(*args)
            finally:
                ended.signal()

        t = threading.Thread(target=body, name=f"test-{getattr(target, '__name__', 'thread')}")
        threads.append(t)
        t.start()
        return ended

    yield start
    for t in threads:
        t.join(10)
        assert not t.is_alive(), f"{t.name} did not end"


@pytest.fixture(scope="session")
def _frozen_heap():
    """Move what exists before the first test (pytest, hypothesis, the modules) out of the
    collector's sight, so the collection after each test costs little."""
    gc.collect()
    gc.freeze()
    yield
    gc.unfreeze()


@pytest.fixture
def no_runtime_leaks(_frozen_heap):
    threads_before = threading.active_count()
    yield
    gc.collect()
    assert runtimes() == [], "a runtime is still alive after the test"
    assert fn.schedulers() == []
    assert threading.active_count() == threads_before, threading.enumerate()


def _threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if not t.name.startswith("fibernet-pool")}


@pytest.fixture
def no_server_leaks(open_fds):
    """After the test no runtime is alive, no thread is left and no descriptor is open
    (the thread pool's threads excepted: they outlive tests on purpose)."""
    from fibernet.runtime.runtime import runtimes

    before = _threads()
    fds_before = open_fds()
    yield
    assert runtimes() == [], "a runtime is still alive after the test"
    assert _threads() <= before, _threads() - before
    leaked = open_fds().leaked_since(fds_before)
    assert not leaked, f"descriptors left open: {leaked}"


# -- systemd's side of sd_notify ----------------------------------------------------------------


class FakeSystemd:
    def __init__(self, path: str, abstract: bool = False) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.bind("\0" + path if abstract else path)
        self.address = "@" + path if abstract else path

    def receive(self, timeout: float = 15.0) -> tuple[int, dict[str, str]]:
        """The next message: (the sender's pid, its fields)."""
        self.sock.settimeout(timeout)
        data, ancillary, _flags, _addr = self.sock.recvmsg(4096, socket.CMSG_SPACE(12))
        pid = next(
            struct.unpack("iII", cdata)[0]
            for level, kind, cdata in ancillary
            if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS
        )
        return pid, dict(line.split("=", 1) for line in data.decode().splitlines())

    def nothing_more(self) -> bool:
        self.sock.setblocking(False)
        try:
            self.sock.recv(4096)
        except BlockingIOError:
            return True
        return False

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def fake_systemd(tmp_path):
    """A socket that plays systemd's end of ``$NOTIFY_SOCKET``: ``receive()`` is the next
    message as (the sender's pid, its fields); ``nothing_more()`` that none is waiting."""
    listener = FakeSystemd(str(tmp_path / "notify.sock"))
    yield listener
    listener.close()


# -- outside programs ---------------------------------------------------------------------------

# The programs tests drive, and the Debian package of each (.ci/run installs them).
PROGRAMS = {
    "curl": "curl",
    "openssl": "openssl",
    "wrk": "wrk",
    "h2load": "nghttp2-client",
    "haproxy": "haproxy",
    "systemd-analyze": "systemd",
    "redis-server": "redis-server",
    "initdb": "postgresql",
    "chromium": "chromium",
}


def program(name: str, install: str | None = None) -> str:
    """The path of program ``name``: on PATH, beside ``sys.executable`` (a pip package's
    program in a venv that is not activated) or in an sbin folder (haproxy is in /usr/sbin,
    which a non-login PATH may lack) or PostgreSQL's folder (initdb, the newest version).
    Absent, the test skips saying how to install it (``install``, or the Debian package of
    :data:`PROGRAMS`); under CI it fails instead."""
    search = os.pathsep.join([os.environ.get("PATH", os.defpath), str(Path(sys.executable).parent),
                              "/usr/local/sbin", "/usr/sbin", "/sbin",
                              *sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)])
    path = shutil.which(name, path=search)
    if path is not None:
        return path
    how = install or f"Debian package {PROGRAMS[name]}: apt-get install {PROGRAMS[name]}"
    message = f"{name} is not installed ({how})"
    if os.environ.get("CI"):
        pytest.fail(f"{message}; .ci/run must install it")
    pytest.skip(message)


@pytest.fixture
def requires():
    """``requires("wrk")``: the program's path, or the test skips naming its package."""
    return program


@pytest.fixture
def pair():
    """Two connected non-blocking sockets (a socketpair), closed after the test."""
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    yield a, b
    a.close()
    b.close()
