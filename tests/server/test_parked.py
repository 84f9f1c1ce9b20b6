"""A TCP handler that returns a ``Parked`` (fibernet.server.tcp): its connection waits for
bytes with no fiber and is resumed in a new one; the idle sweep and the end of a drain close
it.  Counts are asked of the server on a connection (answered on its only scheduler thread,
after every earlier connection parked: no waiting)."""

from __future__ import annotations

import pytest

from fibernet.runtime.scheduler import current_scheduler
from fibernet.server.tcp import Parked
from fibernet.testing import serve

from ._support import LineReader, client

pytestmark = pytest.mark.timeout(30)


class LineEcho(Parked):
    """Echo one line per resume, then park; ``count`` answers with fibers and parked."""

    __slots__ = ("server", "closed")

    def __init__(self, server_ref: list) -> None:
        self.server = server_ref
        self.closed = False

    def resume(self, sock):
        line = b""
        while not line.endswith(b"\n"):
            data = sock.recv(1024)
            if not data:
                return None
            line += data
        if line == b"count\n":
            stats = self.server[0].stats()
            line = b"%d %d\n" % (current_scheduler().fiber_count(), stats["connections_parked"])
        sock.sendall(line)
        return self

    def parked_closed(self) -> None:
        self.closed = True


def line_server(**options):
    ref: list = []
    handlers: list[LineEcho] = []

    def handler(sock):
        handlers.append(LineEcho(ref))
        return handlers[-1].resume(sock)

    ctx = serve(handler, **options)
    return ctx, ref, handlers


def count(server) -> tuple[int, int]:
    with client(server.address) as c:
        c.sendall(b"count\n")
        fibers, parked = LineReader(c).readline().split()
        return int(fibers), int(parked)


def test_a_parked_tcp_connection_holds_no_fiber_and_is_resumed():
    ctx, ref, handlers = line_server()
    with ctx as server:
        ref.append(server)
        base_fibers, _ = count(server)
        socks = [client(server.address) for _ in range(50)]
        try:
            for i, s in enumerate(socks):
                s.sendall(b"hi %d\n" % i)
                assert LineReader(s).readline() == f"hi {i}"
            fibers, parked = count(server)
            assert (fibers, parked) == (base_fibers, 50)
            for i, s in enumerate(socks):
                s.sendall(b"again %d\n" % i)
                assert LineReader(s).readline() == f"again {i}"
        finally:
            for s in socks:
                s.close()


def test_the_idle_sweep_and_the_drain_close_parked_connections():
    ctx, ref, handlers = line_server(idle_timeout=0.2)
    with ctx as server:
        ref.append(server)
        with client(server.address) as s:
            s.sendall(b"hi\n")
            assert LineReader(s).readline() == "hi"
            assert s.recv(1) == b""  # the sweeper closed it
        assert handlers[0].closed
    ctx, ref, handlers = line_server()
    with ctx as server:
        ref.append(server)
        s = client(server.address)
        s.sendall(b"hi\n")
        assert LineReader(s).readline() == "hi"
    # (serve() stops the server with no grace: the parked connection is closed.)
    assert s.recv(1) == b""
    s.close()
    assert handlers[0].closed
