"""Fixtures for the CLI tests.

- ``_no_leaks`` (autouse): no runtime, thread or descriptor outlives the test.
- ``clean_env`` (autouse): no FIBERNET_* variable of the outer environment leaks in.
- ``app_dir``: a directory to write handler modules into, each under a name of its own;
  the modules the test imported and the sys.path entry the loader adds are removed after.
- ``free_port``: a loopback port that nothing listened on a moment ago.
- ``serve_process``: runs ``python -m fibernet_cli.main serve ...`` and follows its log.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import uuid

import pytest


def _threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if not t.name.startswith("fibernet-pool")}


@pytest.fixture(autouse=True)
def _no_leaks(open_fds):
    """After the test no runtime is alive, no thread is left and no descriptor is open."""
    from fibernet.runtime.runtime import runtimes

    before = _threads()
    fds_before = open_fds()
    yield
    assert runtimes() == [], "a runtime is still alive after the test"
    assert _threads() <= before, _threads() - before
    leaked = open_fds().leaked_since(fds_before)
    assert not leaked, f"descriptors left open: {leaked}"


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

    def __init__(self, args: list[str], cwd, env: dict[str, str] | None = None) -> None:
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("FIBERNET_")}
        full_env.update(env or {})
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "fibernet_cli.main", "serve", *args],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            text=True, cwd=cwd, env=full_env,
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

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        self._reader.join(10)
        self.proc.stderr.close()


@pytest.fixture
def serve_process(tmp_path):
    started: list[ServerProcess] = []

    def start(*args: str, env: dict[str, str] | None = None) -> ServerProcess:
        p = ServerProcess(list(args), tmp_path, env)
        started.append(p)
        return p

    yield start
    for p in started:
        p.close()
