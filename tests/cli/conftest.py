"""Fixtures for the CLI tests.

- ``_no_leaks`` (autouse): no runtime, thread or descriptor outlives the test.
- ``clean_env`` (autouse): no FIBERNET_* variable of the outer environment leaks in.
- ``app_dir``: a directory to write handler modules into, each under a name of its own;
  the modules the test imported and the sys.path entry the loader adds are removed after.
- ``free_port``: a loopback port that nothing listened on a moment ago.
- ``serve_process``: runs ``python -m fibernet_cli.main serve ...`` and follows its log;
  ``own_group=True`` puts it in a process group of its own (in this session, so the group is
  not orphaned and job-control signals act as in a shell), killed whole at teardown (a
  supervisor's workers too), ``pass_fds`` hands it descriptors, ``prefix`` runs the command
  through another (a socket-activation shim).
  ``wait_lines`` waits for several log lines, ``wait_eof`` for every writer of the log to end.
- For the worker, admin and binding tests: ``WORKER_APP`` (a module that answers with its
  pid), ``connect``, ``read_line``, ``ask_pid``, ``pids_answering``, ``children``,
  ``http_get``, ``until`` (bounded polling, for what can only be observed by asking again).
"""

from __future__ import annotations

import http.client
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid

import pytest


@pytest.fixture(autouse=True)
def _no_leaks(no_server_leaks):
    """After the test no runtime is alive, no thread is left and no descriptor is open."""
    yield


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in list(os.environ):
        if name.startswith("FIBERNET_"):
            monkeypatch.delenv(name)


class AppDir:
    def __init__(self, path) -> None:
        self.path = path
        self.modules: list[str] = []

    def module(self, source: str, name: str | None = None) -> str:
        """Write a module; returns its (unique) name."""
        name = name or f"fnapp_{uuid.uuid4().hex[:10]}"
        (self.path / f"{name}.py").write_text(source)
        self.modules.append(name)
        return name


@pytest.fixture
def app_dir(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "path", list(sys.path))
    apps = AppDir(tmp_path)
    yield apps
    for name in apps.modules:
        sys.modules.pop(name, None)


@pytest.fixture
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """``fibernet serve`` in a child process, with its stderr log collected line by line."""

    def __init__(self, args: list[str], cwd, env: dict[str, str] | None = None, *,
                 own_group: bool = False, pass_fds: tuple[int, ...] = (),
                 prefix: list[str] | None = None) -> None:
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("FIBERNET_")}
        full_env.update(env or {})
        self.own_group = own_group
        self.proc = subprocess.Popen(
            [*(prefix or []), sys.executable, "-m", "fibernet_cli.main", "serve", *args],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            text=True, cwd=cwd, env=full_env, process_group=0 if own_group else None, pass_fds=pass_fds,
        )
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._eof = False
        self._reader = threading.Thread(target=self._read, name="serve-log", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stderr:
            with self._cond:
                self.lines.append(line)
                self._cond.notify_all()
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    @property
    def log(self) -> str:
        with self._cond:
            return "".join(self.lines)

    def wait_for(self, text: str, timeout: float = 15.0) -> str:
        """The first log line containing ``text``; fails if it does not come in time."""

        def found():
            return next((line for line in self.lines if text in line), None)

        with self._cond:
            self._cond.wait_for(lambda: found() is not None or self._eof, timeout)
            line = found()
        if line is None:
            raise AssertionError(f"{text!r} not in the server's log:\n{self.log}")
        return line

    def wait_lines(self, pattern: str, count: int = 1, timeout: float = 15.0) -> list[re.Match]:
        """The matches of ``pattern`` (a regex searched in each line), once there are ``count``."""
        regex = re.compile(pattern)

        def found():
            return [m for m in map(regex.search, self.lines) if m]

        with self._cond:
            self._cond.wait_for(lambda: len(found()) >= count or self._eof, timeout)
            matches = found()
        if len(matches) < count:
            raise AssertionError(f"{count} line(s) matching {pattern!r} expected, {len(matches)} in the "
                                 f"server's log:\n{self.log}")
        return matches

    def wait_eof(self, timeout: float = 15.0) -> None:
        """Until every process that holds the log's pipe (a supervisor's workers too) is gone."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._eof, timeout):
                raise AssertionError(f"the log did not end:\n{self.log}")

    def close(self) -> None:
        if self.own_group:
            try:  # the whole group: a supervisor, its workers, a probe
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        self._reader.join(10)
        self.proc.stderr.close()


@pytest.fixture
def serve_process(tmp_path):
    started: list[ServerProcess] = []

    def start(*args: str, env: dict[str, str] | None = None, **options) -> ServerProcess:
        p = ServerProcess(list(args), tmp_path, env, **options)
        started.append(p)
        return p

    yield start
    for p in started:
        p.close()


# -- for the worker, admin and binding tests ------------------------------------------------------

WORKER_APP = '''
"""Answers with this process's pid and VERSION: over TCP (handle) a greeting line, then an
echo of lines, where "slow" starts a request that lasts until the client sends "go"; over HTTP
(app) as the body."""
import os

from fibernet.http import Response
from fibernet.net.streams import Stream

VERSION = "{version}"


def handle(conn):
    stream = Stream(conn)
    conn.sendall(f"{{os.getpid()}} {{VERSION}}\\n".encode())
    while line := stream.readline():
        if line == b"slow\\n":
            conn.sendall(b"started\\n")
            if stream.readline() == b"go\\n":
                conn.sendall(b"finished\\n")
            return
        conn.sendall(line)


def app(request):
    return Response(200, f"{{os.getpid()}} {{VERSION}}".encode())
'''


def read_line(sock: socket.socket) -> bytes:
    data = bytearray()
    while not data.endswith(b"\n"):
        chunk = sock.recv(1)
        if not chunk:
            break
        data += chunk
    return bytes(data)


def connect(address) -> socket.socket:
    """A client connection to a port on loopback or to a Unix socket path."""
    if isinstance(address, int):
        return socket.create_connection(("127.0.0.1", address), timeout=10)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(10)
        sock.connect(str(address))
    except BaseException:
        sock.close()
        raise
    return sock


def ask_pid(address) -> tuple[int, str]:
    """Connect to WORKER_APP's handle; the (pid, VERSION) of the process that answered."""
    with connect(address) as c:
        line = read_line(c)
    pid, version = line.decode().split()
    return int(pid), version


def pids_answering(address, want: set[int], limit: int = 300) -> dict[int, int]:
    """Connect one at a time until every pid of ``want`` has answered (the kernel hands a
    shared listening socket's connections to whichever worker accepts first, so which one
    answers is not up to us: at most ``limit`` connections).  Returns the answers by pid."""
    seen: dict[int, int] = {}
    for _ in range(limit):
        pid, _version = ask_pid(address)
        seen[pid] = seen.get(pid, 0) + 1
        if want <= seen.keys():
            return seen
    raise AssertionError(f"after {limit} connections, answers came from {seen}, not all of {want}")


def children(pid: int) -> set[int]:
    """The live child processes of ``pid``."""
    found: set[int] = set()
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                found.update(int(c) for c in f.read().split())
    except FileNotFoundError:
        pass
    return found


def http_get(port: int, path: str, timeout: float = 10.0) -> tuple[int, str, bytes]:
    """One GET on a connection of its own: (status, content-type, body)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.getheader("content-type", ""), response.read()
    finally:
        conn.close()


def until(predicate, what: str, limit: float = 10.0, every: float = 0.05):
    """Look again every ``every`` seconds until ``predicate()`` is true (returns its value); fails
    after ``limit``.  Only for state that can only be observed by asking again (a worker's
    snapshot reaches the supervisor once a second), never in place of a log line or an answer."""
    deadline = time.monotonic() + limit
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(every)
