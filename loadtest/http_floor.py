"""The CPU floor of HTTP hello-world on greenlets.  --serve PORT: the least greenlet-per-connection
server (an epoll hub, httptools, a canned response; http_hello.py's greenlet-floor row); --layer:
CPU us per request of fibernet's HTTP layer and of a bare httptools parse, without I/O.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import signal
import socket
import sys
import time

import httptools

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.dirname(HERE)]  # its own modules, and fibernet from the checkout

from peers._serve import accept_all, canned_parser, listen  # noqa: E402

# wrk's request, byte for byte (as loadtest/_load_workloads.py sends it)
WRK_REQUEST = b"GET /hello HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n"
RECV = 65536


def serve(port: int, host: str = "127.0.0.1", ready=None) -> None:
    """The minimal greenlet-per-connection hello server (see the module doc)."""
    from greenlet import getcurrent, greenlet

    lsock = listen(host, port)
    lsock.setblocking(False)
    lfd = lsock.fileno()
    ep = select.epoll()
    ep.register(lfd, select.EPOLLIN)
    waiting: dict[int, greenlet] = {}
    hub = getcurrent()

    def connection(sock: socket.socket) -> None:
        fd = sock.fileno()
        out: list[bytes] = []
        parser = canned_parser(out)
        recv, send = sock.recv, sock.send
        me = getcurrent()
        try:
            while True:
                try:
                    data = recv(RECV)
                except BlockingIOError:
                    waiting[fd] = me
                    hub.switch()
                    continue
                if not data:
                    break
                parser.feed_data(data)
                if out:
                    send(out[0] if len(out) == 1 else b"".join(out))
                    out.clear()
                if len(data) < RECV:  # drained: wait for the next edge (no EAGAIN read)
                    waiting[fd] = me
                    hub.switch()
        except (OSError, httptools.HttpParserError):
            pass
        finally:
            waiting.pop(fd, None)
            ep.unregister(fd)
            sock.close()

    def start(conn: socket.socket) -> None:
        ep.register(conn.fileno(), select.EPOLLIN | select.EPOLLET)
        greenlet(connection).switch(conn)

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    if ready is not None:
        ready(lsock.getsockname()[1])
    while True:
        for fd, _ev in ep.poll():
            if fd == lfd:
                accept_all(lsock, start)
                continue
            g = waiting.pop(fd, None)
            if g is not None:
                g.switch()


class _FakeSocket:
    """What the HTTP connection loop reads from: ``n`` copies of wrk's request, then EOF."""

    timeout = None

    def __init__(self, n: int) -> None:
        self.left = n
        self.sent = 0

    def getpeername(self):
        return ("127.0.0.1", 40000)

    def recv(self, size: int) -> bytes:
        if self.left:
            self.left -= 1
            return WRK_REQUEST
        return b""

    def sendall(self, data: bytes) -> None:
        if data.startswith(b"HTTP/1.1 200 "):
            self.sent += 1


def layer_cost(n: int) -> dict:
    """CPU us per request of fibernet's HTTP layer and of a bare httptools parse (best of 3)."""
    from fibernet.examples.hello import app
    from fibernet.server.http import HttpConfig, _Close, _Connection

    def fibernet_layer() -> float:
        sock = _FakeSocket(n)
        conn = _Connection(app, HttpConfig(), sock)  # type: ignore[arg-type]
        t = time.process_time()
        try:
            conn._serve()
        except _Close:
            pass
        dt = time.process_time() - t
        if sock.sent != n or conn.answered != n:
            raise RuntimeError(f"the HTTP layer answered {sock.sent} of {n} requests")
        return dt / n * 1e6

    def bare_parse() -> float:
        out: list[bytes] = []
        parser = canned_parser(out)
        sent = 0
        t = time.process_time()
        for _ in range(n):
            parser.feed_data(WRK_REQUEST)
            if out:
                sent += len(out)
                out.clear()
        dt = time.process_time() - t
        if sent != n:
            raise RuntimeError(f"the bare parser answered {sent} of {n} requests")
        return dt / n * 1e6

    layer = min(fibernet_layer() for _ in range(3))
    bare = min(bare_parse() for _ in range(3))
    return {"requests": n, "layer_us": layer, "bare_parse_us": bare, "extra_us": layer - bare}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--layer", action="store_true", help="measure the HTTP layer without I/O")
    group.add_argument("--serve", type=int, metavar="PORT", help="run the minimal greenlet server")
    parser.add_argument("-n", type=int, default=200_000, help="requests for --layer (default 200,000)")
    parser.add_argument("--json", action="store_true", help="--layer: print JSON")
    parser.add_argument("--ready", action="store_true", help="--serve: print 'READY <port>' once listening")
    args = parser.parse_args(argv)
    if args.serve is not None:
        serve(args.serve, ready=(lambda port: print(f"READY {port}", flush=True)) if args.ready else None)
        return 0
    result = layer_cost(args.n)
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{args.n:,} requests without I/O: fibernet's HTTP layer {result['layer_us']:.2f} us each, "
              f"a bare httptools parse {result['bare_parse_us']:.2f} us, "
              f"so HTTP done properly costs {result['extra_us']:.2f} us more")
    return 0


if __name__ == "__main__":
    sys.exit(main())
