"""What every server in ``loadtest/peers/`` shares: its command line (``--host``, ``--port``,
``--profile-out``), the descriptor limit, TCP_NODELAY, and the ``READY <port>`` line."""

from __future__ import annotations

import argparse
import os
import resource
import signal
import socket
import sys
from collections.abc import Callable

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
BACKLOG = 1024
RECV_SIZE = 65536
BODY = b"Hello, World!"
CANNED = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s" % (len(BODY), BODY)
NOT_FOUND = b"HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nContent-Length: 10\r\n\r\nnot found\n"


def canned_parser(out: list[bytes]):
    """An httptools parser that appends to ``out`` the canned response to each request it
    completes (hello for /hello, else 404): the least an HTTP server can do per request."""
    import httptools

    class Callbacks:
        __slots__ = ("url",)

        def on_url(self, url: bytes) -> None:
            self.url = url

        def on_message_complete(self) -> None:
            out.append(CANNED if self.url == b"/hello" else NOT_FOUND)

    return httptools.HttpRequestParser(Callbacks())


def command(name: str, *args: str, python: str | None = None, host: str = "127.0.0.1",
            port: int = 0) -> list[str]:
    """The command line running ``peers/NAME.py`` with ``args`` on ``python``."""
    script = os.path.join(HERE, f"{name}.py")
    return [python or sys.executable, script, "--host", host, "--port", str(port), *args]


def raise_nofile() -> int:
    """RLIMIT_NOFILE's soft limit raised to its hard limit; the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        soft = hard
    return soft


def nodelay(sock: socket.socket) -> None:
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def ready(port: int) -> None:
    """The line the benchmark waits for."""
    print(f"READY {port}", flush=True)


def accept_all(lsock: socket.socket, each: Callable[[socket.socket], None]) -> None:
    """Accept every connection waiting on the non-blocking listener ``lsock``: each one
    non-blocking, with TCP_NODELAY, goes to ``each``."""
    while True:
        try:
            conn, _ = lsock.accept()
        except BlockingIOError:
            return
        conn.setblocking(False)
        nodelay(conn)
        each(conn)


def listen(host: str, port: int) -> socket.socket:
    """A listening socket (SO_REUSEADDR, backlog 1024), for servers that take one."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(BACKLOG)
    return sock


def main(serve: Callable[..., None], doc: str | None,
         options: Callable[[argparse.ArgumentParser], None] | None = None) -> None:
    """Parse ``--host --port --profile-out`` (and the server's own ``options``), raise the
    descriptor limit and call ``serve(host, port, **options)``.

    With ``--profile-out PATH``, SIGUSR2 starts cProfile (on the main thread) and SIGUSR1
    stops it, writes the stats to PATH and exits."""
    sys.path.insert(0, ROOT)  # fibernet from this checkout when it is not installed
    parser = argparse.ArgumentParser(description=(doc or "").split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--profile-out", metavar="PATH", help="cProfile between SIGUSR2 and SIGUSR1")
    if options is not None:
        options(parser)
    args = vars(parser.parse_args())
    host, port, out = args.pop("host"), args.pop("port"), args.pop("profile_out")
    raise_nofile()
    if out:
        import cProfile

        profiler = cProfile.Profile()

        def dump(*_: object) -> None:
            profiler.disable()
            profiler.dump_stats(out)
            os._exit(0)

        signal.signal(signal.SIGUSR2, lambda *_: profiler.enable())
        signal.signal(signal.SIGUSR1, dump)
    serve(host, port, **args)
