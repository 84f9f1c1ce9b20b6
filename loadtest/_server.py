"""The servers the benchmarks measure: their command lines (one table per kind of server, the
scripts of ``loadtest/peers/`` and ``fibernet serve``), and ``ServerProcess``, one of them
started pinned (``taskset -c CPU``) in a session of its own, its output in a temporary file,
ready once it prints ``READY <port>`` or, for a port given, once that port takes a connection."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

from _bench import pinned
from peers import _serve, hello_asgi

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
HOST = "127.0.0.1"
READY = re.compile(r"^READY (\d+)$", re.M)

# impl -> loadtest/peers/NAME.py and its options, per kind of server
ECHO = {
    "fibernet": ("echo_fibernet",), "fibernet-t2": ("echo_fibernet", "--threads", "2"),
    "fibernet-nomonitor": ("echo_fibernet", "--block-warning", "0"), "gevent": ("echo_gevent",),
    "asyncio-streams": ("echo_asyncio",), "uvloop-streams": ("echo_asyncio", "--loop", "uvloop"),
    "uvloop-proto": ("echo_asyncio", "--loop", "uvloop", "--api", "protocol"), "trio": ("echo_trio",),
    "raw-epoll": ("echo_epoll",),
}
WS = {"fibernet": ("ws_fibernet",), "websockets": ("ws_websockets",),
      "uvicorn-websockets": ("ws_uvicorn", "--ws", "websockets"),
      "uvicorn-wsproto": ("ws_uvicorn", "--ws", "wsproto")}
HELLO = {"gevent": ("hello_wsgi",), "aiohttp": ("hello_aiohttp",), "uvloop-proto": ("hello_uvloop",)}
HELLO_APP = "fibernet.examples.hello:app"
# fibernet's CLI from the installed package or, on any interpreter with fibernet's dependencies
# (the peers'), from ROOT, which ServerProcess puts on PYTHONPATH: an editable install's build
# folder has ``fibernet_cli``, a checkout has it as ``cli``
FIBERNET_CLI = [sys.executable, "-c", "import importlib.util, sys\n"
                "if not importlib.util.find_spec('fibernet_cli'):\n"
                "    import cli; sys.modules['fibernet_cli'] = cli\n"
                "from fibernet_cli.main import cli; sys.exit(cli())"]


def peer(table: dict[str, tuple[str, ...]], impl: str, *extra: str, python: str | None = None,
         host: str = HOST, port: int = 0) -> list[str]:
    """``loadtest/peers/NAME.py`` serving ``impl`` of ``table`` (on ``python``)."""
    return _serve.command(*table[impl], *extra, python=python, host=host, port=port)


def exe(name: str, fallback: list[str]) -> list[str]:
    """The console script ``name`` next to this interpreter (or on PATH), else ``fallback``."""
    local = os.path.join(os.path.dirname(sys.executable), name)
    found = local if os.access(local, os.X_OK) else shutil.which(name)
    return [found] if found else fallback


def fibernet_serve(target: str, port: int, *options: str, cli: list[str] | None = None) -> list[str]:
    """``fibernet serve TARGET OPTIONS`` on HOST:port, one scheduler thread, warnings only."""
    return [*(cli or exe("fibernet", FIBERNET_CLI)), "serve", target, *options, "--host", HOST,
            "--port", str(port), "--threads", "1", "--log-level", "warning"]


def uvicorn(port: int, *extra: str, python: str | None = None) -> list[str]:
    """uvicorn (httptools, uvloop, no access log) serving ``peers/hello_asgi.py``."""
    command = [python, "-m", "uvicorn"] if python else exe("uvicorn", [sys.executable, "-m", "uvicorn"])
    return [*command, *extra, *hello_asgi.uvicorn_args(HOST, port)]


def hello(impl: str, port: int, extra: list[str] | tuple[str, ...] = (), python: str | None = None,
          cli: list[str] | None = None) -> list[str]:
    """The HTTP hello server ``impl`` on ``port`` (``extra``: fibernet's or uvicorn's options),
    its peers on ``python``."""
    if impl == "fibernet":
        return fibernet_serve(HELLO_APP, port, *extra, cli=cli)
    if impl == "fibernet-nomonitor":
        return fibernet_serve(HELLO_APP, port, "--block-warning", "0", *extra, cli=cli)
    if impl == "fibernet-raw":
        return fibernet_serve("hello_raw:handle", port, "--app-dir", _serve.HERE, "--protocol", "tcp",
                              cli=cli)
    if impl == "greenlet-floor":
        return [sys.executable, os.path.join(HERE, "http_floor.py"), "--serve", str(port)]
    if impl == "uvicorn":
        return uvicorn(port, *extra, python=python)
    return peer(HELLO, impl, python=python, port=port)


class ServerProcess:
    def __init__(self, cmd: list[str], cpu: int | str | None = None, port: int | None = None,
                 timeout: float = 30.0, name: str = "the server", env: dict[str, str] | None = None,
                 log_dir: str | None = None) -> None:
        self.command = pinned(cmd, cpu)
        self.name = name
        self.log = tempfile.TemporaryFile("w+", dir=log_dir)
        env = dict(os.environ if env is None else env)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [ROOT, env.get("PYTHONPATH")]))
        self.proc = subprocess.Popen(self.command, cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
                                     stdout=self.log, stderr=subprocess.STDOUT, text=True,
                                     start_new_session=True)
        self.pid = self.proc.pid  # (taskset execs the server: the same pid)
        self.port = self._wait(port, timeout)

    def _wait(self, port: int | None, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.proc.poll() is None:
            if port is None:
                if found := READY.search(self.output(None)):
                    return int(found.group(1))
            else:
                try:
                    socket.create_connection((HOST, port), timeout=0.5).close()
                    return port
                except OSError:
                    pass
            time.sleep(0.05)  # polling a child process we cannot get an event from
        self.stop(0)
        raise RuntimeError(f"{self.name} did not get ready within {timeout:g}s\n{self.tail()}")

    def output(self, chars: int | None = 3000) -> str:
        """The last ``chars`` of what it printed (all of it for None)."""
        self.log.seek(0)
        text = self.log.read()
        return text if chars is None else text[-chars:]

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
