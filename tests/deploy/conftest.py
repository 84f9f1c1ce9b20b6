"""Fixtures for the tests of deploy/: real processes (fibernet, HAProxy) on loopback.

- ``DEPLOY``: the deploy/ folder; ``fibernet_command()``: how to run ``fibernet`` from the
  interpreter running the tests (the console script beside ``sys.executable``, as in a venv
  that is not activated).
- ``need_tool(name, install)``: the path of a program; a skip saying how to install it when it
  is missing, but a failure under CI (CI=true), whose .ci/run must install it;
  ``need_module(name, pip_name)`` the same for a Python module.
- ``Proc``: a child process whose output (stdout and stderr together) a thread reads line by
  line, so a test waits for a log line (``wait_for``) instead of sleeping.
- ``procs``: starts ``Proc``\\ s and ends every one still running at teardown (SIGKILL), then
  closes their pipes and joins their reader threads.
- ``fibernet``: starts ``fibernet serve APP ...`` on a free loopback port and waits for its
  "serving ... on 127.0.0.1:PORT" line; returns the ``Proc`` with ``.port`` set.
- ``http_get``: one GET over a fresh connection, closed afterwards: (status, headers, body).
"""

from __future__ import annotations

import http.client
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from ..conftest import program

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"

SERVING = re.compile(r"serving \S+ on (\S+):(\d+) with")


@pytest.fixture(autouse=True)
def _no_threads_left(no_runtime_leaks):
    """Every test here ends with no runtime alive and no thread (reader, client) left behind."""
    yield


def fibernet_command() -> list[str]:
    """``fibernet`` as installed for the interpreter running the tests."""
    beside = Path(sys.executable).parent / "fibernet"
    if beside.exists():
        return [str(beside)]
    found = shutil.which("fibernet")
    if found:
        return [found]
    return [sys.executable, "-m", "fibernet_cli.main"]


def need_tool(name: str, install: str) -> str:
    """The path of program ``name`` (tests/conftest.py's ``program``); ``install`` says how to
    get it."""
    return program(name, install)


def need_module(name: str, pip_name: str):
    """Import ``name``; a skip naming the pip package when missing, a failure under CI."""
    try:
        return __import__(name)
    except ImportError:
        message = f"{name} is not installed (pip install {pip_name}; the test extra has it)"
        if os.environ.get("CI"):
            pytest.fail(f"{message}; CI must install it")
        pytest.skip(message, allow_module_level=True)


class Proc:
    """A child process with its output collected line by line by a reader thread."""

    def __init__(self, argv: list[str], *, env: dict[str, str] | None = None, pass_fds: tuple[int, ...] = (),
                 cwd: str | os.PathLike | None = None, name: str | None = None) -> None:
        self.name = name or Path(argv[0]).name
        self.argv = argv
        self.popen = subprocess.Popen(
            argv, env=env, pass_fds=pass_fds, cwd=cwd, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace",
        )
        self.pid = self.popen.pid
        self.port: int | None = None
        self._lines: list[str] = []
        self._cond = threading.Condition()
        self._eof = False
        self._reader = threading.Thread(target=self._read, name=f"read-{self.name}-{self.pid}", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        stream = self.popen.stdout
        assert stream is not None
        for line in stream:
            with self._cond:
                self._lines.append(line.rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    @property
    def lines(self) -> list[str]:
        with self._cond:
            return list(self._lines)

    def output(self, last: int = 40) -> str:
        return "\n".join(self.lines[-last:])

    def wait_for(self, pattern: str | re.Pattern[str], timeout: float = 10.0,
                 start: int = 0) -> re.Match[str]:
        """The first line (from line ``start`` on) that matches ``pattern``, as it arrives."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        seen = start
        with self._cond:
            while True:
                for line in self._lines[seen:]:
                    match = rx.search(line)
                    if match:
                        return match
                seen = len(self._lines)
                left = deadline - time.monotonic()
                if self._eof or left <= 0:
                    why = "it exited" if self._eof else f"{timeout}s passed"
                    raise AssertionError(f"{self.name} printed no line matching {rx.pattern!r} ({why}); "
                                         f"its output:\n{self.output()}")
                self._cond.wait(left)

    def mark(self) -> int:
        """The number of lines so far (a ``start`` for :meth:`wait_for`)."""
        with self._cond:
            return len(self._lines)

    def send(self, sig: int) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(sig)

    def wait(self, timeout: float) -> int:
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"{self.name} did not exit within {timeout}s; its output:\n{self.output()}"
            ) from None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        self.send(sig)
        return self.wait(timeout)

    def close(self) -> None:
        """Kill it if it still runs, reap it, and release the pipe and the reader thread."""
        if self.popen.poll() is None:
            self.popen.kill()
        self.popen.wait(10)
        self._reader.join(10)
        if self.popen.stdout is not None:
            self.popen.stdout.close()


@pytest.fixture
def procs():
    started: list[Proc] = []

    def start(argv: list[str], **kwargs) -> Proc:
        proc = Proc(argv, **kwargs)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.close()


@pytest.fixture
def fibernet(procs):
    def start(app: str, *args: str, port: int = 0, env: dict[str, str] | None = None,
              name: str = "fibernet", timeout: float = 15.0) -> Proc:
        argv = [*fibernet_command(), "serve", app, "--host", "127.0.0.1", "--port", str(port), *args]
        proc = procs(argv, env={**os.environ, **(env or {})}, name=name)
        match = proc.wait_for(SERVING, timeout)
        proc.port = int(match.group(2))
        return proc

    return start


@pytest.fixture
def http_get():
    def get(port: int, path: str = "/hello", timeout: float = 10.0) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            body = response.read()
            return response.status, {k.lower(): v for k, v in response.getheaders()}, body
        finally:
            conn.close()

    return get
