"""A benchmark's server process: started pinned (``taskset -c CPU``), in a session of its own,
its output in a temporary file; ready once it prints ``READY <port>`` (the scripts of
``loadtest/peers/``) or, for a port given, once that port takes a connection."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
READY = re.compile(r"^READY (\d+)$", re.M)


def pinned(cmd: list[str], cpu: int | str | None) -> list[str]:
    """``cmd`` under ``taskset -c CPU`` (when there is a CPU and taskset)."""
    return ["taskset", "-c", str(cpu), *cmd] if cpu is not None and shutil.which("taskset") else cmd


class ServerProcess:
    def __init__(self, cmd: list[str], cpu: int | str | None = None, port: int | None = None,
                 timeout: float = 30.0, name: str = "the server") -> None:
        self.command = pinned(cmd, cpu)
        self.name = name
        self.log = tempfile.TemporaryFile("w+")
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")])))
        self.proc = subprocess.Popen(self.command, cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
                                     stdout=self.log, stderr=subprocess.STDOUT, text=True,
                                     start_new_session=True)
        self.pid = self.proc.pid  # (taskset execs the server: the same pid)
        self.port = self._wait(port, timeout)

    def _wait(self, port: int | None, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            if port is None:
                self.log.seek(0)
                if found := READY.search(self.log.read()):
                    return int(found.group(1))
            else:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                    return port
                except OSError:
                    pass
            time.sleep(0.05)  # polling a child process we cannot get an event from
        self.stop(0)
        raise RuntimeError(f"{self.name} did not get ready within {timeout:g}s\n{self.tail()}")

    def output(self, chars: int = 3000) -> str:
        """The last ``chars`` of what it printed."""
        self.log.seek(0)
        return self.log.read()[-chars:]

    def tail(self) -> str:
        return f"server: {shlex.join(self.command)}\nserver output:\n{self.output()}"

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise RuntimeError(f"{self.name} exited with status {self.proc.returncode}\n{self.tail()}")

    def stop(self, grace: float = 15.0) -> tuple[float, bool]:
        """SIGTERM to its session (SIGKILL at once for no ``grace``), SIGKILL after ``grace`` s;
        (seconds it took to exit, whether it was killed)."""
        started, killed = time.monotonic(), False
        if self.proc.poll() is None:
            try:
                os.killpg(self.pid, signal.SIGTERM if grace else signal.SIGKILL)
                self.proc.wait(grace or None)
            except subprocess.TimeoutExpired:
                os.killpg(self.pid, signal.SIGKILL)
                self.proc.wait()
                killed = True
            except ProcessLookupError:
                self.proc.wait()
        return time.monotonic() - started, killed

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop(0)
        self.log.close()
