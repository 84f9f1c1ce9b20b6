"""The TCP server over real loopback connections: many concurrent clients, idle timeout,
the connection limit, graceful stop, failing handlers and descriptor hygiene."""

from __future__ import annotations

import errno
import logging
import os
import selectors
import socket
import threading
import time

import pytest

import fibernet as fn
from fibernet.examples import echo
from fibernet.net.sockets import connect
from fibernet.net.streams import Stream

from ._support import (
    LineReader,
    LogEvent,
    client,
    recv_exactly,
    recv_until_eof,
    roundtrip,
)

pytestmark = pytest.mark.timeout(30)

N_CLIENTS = 1000


# -- 1,000 concurrent echo clients -------------------------------------------------------------


@pytest.mark.stress
@pytest.mark.timeout(60)
def test_echo_with_1000_concurrent_clients(servers, nofile):
    server = servers(echo.handle, threads=2)
    host, port = server.address
    payloads = [os.urandom(1 + (i * 7919) % 20000) for i in range(N_CLIENTS)]

    def one_client(i: int, ready: fn.Channel, go: fn.Condition) -> int:
        sock = connect(host, port, timeout=30)
        try:
            stream = Stream(sock)
            hello = b"hello from %d\n" % i
            stream.write(hello)
            assert stream.read_exactly(len(hello)) == hello
            ready.put(i)
            go.wait()  # every client holds its connection open until all are connected
            stream.write(payloads[i])
            got = stream.read_exactly(len(payloads[i]))
            assert got == payloads[i], f"client {i}: echo differs"
            stream.shutdown_write()
            assert stream.read() == b"", "the server did not close after our end of stream"
            return len(hello) + len(payloads[i])
        finally:
            sock.close()

    def main():
        ready = fn.Channel(N_CLIENTS)
        go = fn.Condition()
        fibers = [fn.spawn(one_client, i, ready, go, parallel=True) for i in range(N_CLIENTS)]
        seen = set()
        for _ in range(N_CLIENTS):
            i = fn.perform(fn.choice(ready.get_op(), fn.wrap(fn.wait_op(30), lambda: None)))
            if i is None:
                failed = [f.exception() for f in fibers if f.done() and f.exception()]
                raise AssertionError(f"only {len(seen)} clients connected; failures: {failed[:3]}")
            seen.add(i)
        stats = server.stats()
        go.signal()
        total = sum(f.join(timeout=30) for f in fibers)
        return seen, stats, total

    seen, at_once, total = fn.run(main, threads=2)
    assert seen == set(range(N_CLIENTS))
    # Every client had been served once and none had closed: all 1,000 open at the same time.
    # (An acceptor counts a slot while it tries an accept, so "open" may read one more.)
    assert at_once["connections_accepted"] == N_CLIENTS
    assert at_once["connections_open"] >= N_CLIENTS
    server.stop(5)
    assert server.wait(10)
    stats = server.stats()
    assert stats["connections_open"] == 0
    assert stats["connections_accepted"] == N_CLIENTS
    assert stats["bytes_in"] == stats["bytes_out"] == total


# -- idle timeout ----------------------------------------------------------------------------------


def test_idle_timeout_closes_a_silent_client_and_spares_an_active_one(servers):
    idle = 0.2
    server = servers(echo.handle, threads=2, idle_timeout=idle)
    with client(server.address) as silent, client(server.address) as active:
        t0 = time.monotonic()
        assert roundtrip(active, b"first") == b"first"
        closed_after = None
        with selectors.DefaultSelector() as sel:
            sel.register(silent, selectors.EVENT_READ)
            # The active client talks every 20 ms (waiting on the silent one meanwhile) until
            # the silent one sees the end of stream.
            n = 0
            while closed_after is None:
                assert time.monotonic() - t0 < 10, "the silent connection was never closed"
                msg = b"ping %d\n" % n
                assert roundtrip(active, msg) == msg
                n += 1
                if sel.select(0.02):
                    assert silent.recv(16) == b""
                    closed_after = time.monotonic() - t0
        # ... and goes on talking for three more idle periods: it is never closed.
        end = time.monotonic() + 3 * idle
        while time.monotonic() < end:
            msg = b"still here %d\n" % n
            assert roundtrip(active, msg) == msg
            n += 1
            time.sleep(0.02)  # the active client's pace of traffic, not a synchronisation
    # The sweeper counts in ticks of idle/4, so it may close up to one tick early.
    assert closed_after >= idle * 0.5, closed_after
    assert server.stats()["connections_accepted"] == 2


def test_idle_timeout_spares_a_connection_sending_a_large_reply_to_a_slow_reader(servers):
    """Bytes moving in one long sendall count as activity: the slow reader is served whole."""
    idle = 0.2
    reply = os.urandom(2 * 1024 * 1024)

    def handle(conn):
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 32 * 1024)
        Stream(conn).readline()
        conn.sendall(reply)

    server = servers(handle, idle_timeout=idle)
    with client(server.address) as c:
        c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 * 1024)
        c.sendall(b"send it\n")
        got = bytearray()
        t0 = time.monotonic()
        while len(got) < len(reply):
            chunk = c.recv(16 * 1024)
            if not chunk:
                break
            got += chunk
            # A slow reader: the whole reply takes several idle periods to read.
            time.sleep(0.005)
        took = time.monotonic() - t0
    assert len(got) == len(reply), f"closed after {len(got)} of {len(reply)} bytes ({took:.2f}s)"
    assert took > 2 * idle, f"the reader was not slow enough to test anything ({took:.2f}s)"
    assert bytes(got) == reply


# -- the connection limit ---------------------------------------------------------------------


def test_connection_limit_holds_and_then_admits(servers):
    limit = 3
    server = servers(echo.handle, threads=2, max_connections=limit)
    firsts = [client(server.address) for _ in range(limit)]
    try:
        for i, c in enumerate(firsts):
            assert roundtrip(c, b"first %d\n" % i) == b"first %d\n" % i
        with client(server.address) as extra:  # the kernel completes it (the backlog)
            extra.sendall(b"waiting\n")
            # Not served while the first ones are open (a bounded look for a reply).
            readable, _, _ = selectors.select.select([extra], [], [], 0.3)
            assert readable == [], "the connection beyond the limit was served"
            assert server.stats()["connections_accepted"] == limit
            assert server.stats()["connections_open"] == limit

            firsts[0].close()
            # The echo arrives only now: the close made room.
            assert recv_exactly(extra, len(b"waiting\n")) == b"waiting\n"
            assert server.stats()["connections_accepted"] == limit + 1
            for i, c in enumerate(firsts[1:], 1):
                assert roundtrip(c, b"again %d\n" % i) == b"again %d\n" % i
    finally:
        for c in firsts:
            c.close()


def test_connection_limit_holds_across_scheduler_threads_in_a_burst(servers):
    """Both schedulers' acceptors race for the last slot: at most max_connections handlers
    may ever run at once."""
    limit = 1
    lock = threading.Condition()
    state = {"active": 0, "most": 0, "ended": 0}

    def handle(conn):
        with lock:
            state["active"] += 1
            state["most"] = max(state["most"], state["active"])
            lock.notify_all()
        try:
            while conn.recv(100):
                pass
        finally:
            with lock:
                state["active"] -= 1
                state["ended"] += 1
                lock.notify_all()

    server = servers(handle, threads=2, max_connections=limit)
    burst = 16
    for trial in range(25):
        socks = [client(server.address) for _ in range(burst)]
        try:
            with lock:
                assert lock.wait_for(lambda: state["active"] >= limit, 10)
                # A bounded look for a second handler that the limit must forbid.
                lock.wait_for(lambda: state["most"] > limit, 0.02)
                assert state["most"] == limit, f"trial {trial}: {state['most']} handlers at once"
        finally:
            for s in socks:
                s.close()
        with lock:  # every connection of the burst is served (in turn) and ends
            done = burst * (trial + 1)
            assert lock.wait_for(lambda done=done: state["ended"] == done, 10), state
    assert server.stats()["connections_accepted"] == burst * 25


# -- graceful stop ----------------------------------------------------------------------------------

BIG_REPLY = os.urandom(1024 * 1024)


def _stoppable_handler(cancelled: threading.Event):
    def handle(conn):
        stream = Stream(conn)
        command = stream.readline()
        conn.sendall(b"started\n")
        if command == b"slow\n":
            if stream.readline() == b"go\n":  # arrives while the server drains
                conn.sendall(BIG_REPLY)
        elif command == b"stuck\n":
            try:
                fn.Condition().wait()  # forever
            except fn.Cancelled:
                cancelled.set()
                raise

    return handle


def test_stop_lets_a_running_handler_finish_within_the_grace(servers):
    server = servers(_stoppable_handler(threading.Event()), threads=2)
    with client(server.address) as slow, LogEvent("fibernet.server", "draining") as draining:
        slow.sendall(b"slow\n")
        assert LineReader(slow).readline() == "started"
        t0 = time.monotonic()
        server.stop(grace=10)
        assert draining.event.wait(10), "the server never began to drain"
        # Draining: no new connections (the listeners are closed) ...
        with pytest.raises(ConnectionRefusedError):
            client(server.address, timeout=5)
        # ... but the running one finishes and its client gets the whole reply.
        slow.sendall(b"go\n")
        assert recv_until_eof(slow) == BIG_REPLY
    assert server.wait(10)
    assert time.monotonic() - t0 < 9, "the server waited out the grace instead of finishing"
    assert server.stats()["connections_open"] == 0


def test_stop_cancels_a_handler_still_running_after_the_grace(servers):
    cancelled = threading.Event()
    grace = 0.3
    server = servers(_stoppable_handler(cancelled), threads=2)
    with client(server.address) as stuck:
        stuck.sendall(b"stuck\n")
        assert LineReader(stuck).readline() == "started"
        t0 = time.monotonic()
        server.stop(grace=grace)
        assert server.wait(10)
        waited = time.monotonic() - t0
        assert cancelled.is_set(), "the handler was not cancelled"
        assert stuck.recv(16) == b"", "the client's connection was not closed"
    assert waited >= grace, f"cancelled before the grace ran out ({waited:.3f}s)"
    assert server.stats()["connections_open"] == 0


def test_stop_drains_one_handler_and_cancels_another_in_one_stop(servers):
    cancelled = threading.Event()
    server = servers(_stoppable_handler(cancelled), threads=2)
    with client(server.address) as slow, client(server.address) as stuck, \
            LogEvent("fibernet.server", "draining") as draining:
        slow.sendall(b"slow\n")
        stuck.sendall(b"stuck\n")
        assert LineReader(slow).readline() == "started"
        assert LineReader(stuck).readline() == "started"
        server.stop(grace=1.5)
        assert draining.event.wait(10)
        slow.sendall(b"go\n")
        assert recv_until_eof(slow) == BIG_REPLY
        assert not cancelled.is_set(), "cancelled before the grace ran out"
        assert server.wait(10)
        assert cancelled.is_set()
        assert stuck.recv(16) == b""


def test_a_second_stop_with_a_shorter_grace_cuts_a_drain_short(servers):
    """What a second SIGTERM or SIGINT does: stop(0) during a long drain cancels at once."""
    cancelled = threading.Event()
    server = servers(_stoppable_handler(cancelled), threads=2)
    with client(server.address) as stuck, LogEvent("fibernet.server", "draining") as draining:
        stuck.sendall(b"stuck\n")
        assert LineReader(stuck).readline() == "started"
        server.stop(grace=30)
        assert draining.event.wait(10)
        assert not cancelled.is_set()
        t0 = time.monotonic()
        server.stop(0)
        assert server.wait(10)
        assert time.monotonic() - t0 < 5, "the first grace still held"
        assert cancelled.is_set()
        assert stuck.recv(16) == b""


def test_a_later_stop_with_a_longer_grace_does_not_extend_the_drain(servers):
    cancelled = threading.Event()
    server = servers(_stoppable_handler(cancelled), threads=2)
    with client(server.address) as stuck:
        stuck.sendall(b"stuck\n")
        assert LineReader(stuck).readline() == "started"
        t0 = time.monotonic()
        server.stop(grace=0.2)
        server.stop(grace=30)
        assert server.wait(10)
        assert time.monotonic() - t0 < 5
        assert cancelled.is_set()


def test_server_as_a_context_manager_stops_on_exit():
    with fn.Server(echo.handle, threads=1, graceful_timeout=5) as server:
        with client(server.address) as c:
            assert roundtrip(c, b"hi") == b"hi"
    # __exit__ stopped and waited: the port no longer accepts.
    with pytest.raises(ConnectionRefusedError):
        client(server.address, timeout=5)


def test_server_run_inside_a_fiber_of_an_existing_runtime():
    """Embedding: Server.run() in a fiber serves on every scheduler of the caller's runtime."""

    def main():
        server = fn.Server(echo.handle, "127.0.0.1", 0)
        serving = fn.spawn(server.run, name="server")
        server.ready.wait()
        host, port = server.address
        replies = []
        for i in range(4):
            with Stream(connect(host, port, timeout=10)) as stream:
                stream.write(b"embedded %d\n" % i)
                replies.append(stream.readline())
        server.stop(5)
        serving.join(timeout=10)
        return replies, server.stats()

    replies, stats = fn.run(main, threads=2)
    assert replies == [b"embedded %d\n" % i for i in range(4)]
    assert stats["connections_accepted"] == 4 and stats["connections_open"] == 0


# -- failing handlers --------------------------------------------------------------------------------


def test_a_handler_that_raises_is_logged_with_the_peer_and_the_server_goes_on(servers, caplog):
    caplog.set_level(logging.ERROR, logger="fibernet.server")

    def handle(conn):
        stream = Stream(conn)
        line = stream.readline()
        if line == b"boom\n":
            raise ValueError("boom in the handler")
        conn.sendall(line)

    server = servers(handle, threads=2)
    with client(server.address) as c1:
        peer = "{}:{}".format(*c1.getsockname())
        c1.sendall(b"boom\n")
        assert c1.recv(16) == b"", "the failing connection was not closed"
    # The end of stream came from the close after the log call.
    errors = [r for r in caplog.records if r.name == "fibernet.server" and r.levelno >= logging.ERROR]
    assert len(errors) == 1, errors
    assert peer in errors[0].getMessage()
    assert errors[0].exc_info and errors[0].exc_info[0] is ValueError
    with client(server.address) as c2:
        assert roundtrip(c2, b"next\n") == b"next\n"
    assert server.stats()["connections_accepted"] == 2


def test_a_peer_that_goes_away_is_not_logged_as_an_error(servers, caplog):
    caplog.set_level(logging.DEBUG, logger="fibernet.server")
    ended = threading.Event()

    def handle(conn):
        try:
            Stream(conn).readline()
            raise ConnectionResetError("the peer went away")
        finally:
            ended.set()

    server = servers(handle)
    with client(server.address) as c:
        c.sendall(b"bye\n")
        assert c.recv(16) == b""
    assert ended.wait(10)
    with client(server.address) as c:  # still serving
        c.sendall(b"x\n")
        assert c.recv(16) == b""
    assert not [r for r in caplog.records if r.name == "fibernet.server" and r.levelno >= logging.ERROR]


# -- descriptors ---------------------------------------------------------------------------------------


@pytest.mark.stress
@pytest.mark.timeout(60)
def test_descriptor_count_returns_to_its_start_after_1000_connections(servers, nofile, open_fds):
    before_server = open_fds()
    server = servers(echo.handle, threads=2)
    host, port = server.address
    start = open_fds()

    def one_client(i: int) -> bytes:
        sock = connect(host, port, timeout=30)
        try:
            stream = Stream(sock)
            stream.write(b"%d\n" % i)
            line = stream.readline()
            stream.shutdown_write()
            # The server's close of its end is what sends this end of stream.
            assert stream.read() == b""
            return line
        finally:
            sock.close()

    def main():
        fibers = [fn.spawn(one_client, i, parallel=True) for i in range(N_CLIENTS)]
        return [f.join(timeout=30) for f in fibers]

    assert fn.run(main, threads=2) == [b"%d\n" % i for i in range(N_CLIENTS)]
    # Every client saw its end of stream, which the server sends by closing its descriptor:
    # no server-side connection descriptor is left, and the client runtime is gone.
    leaked = open_fds().leaked_since(start)
    assert not leaked, leaked
    assert len(open_fds()) == len(start)
    server.stop(5)
    assert server.wait(10)
    assert server.stats()["connections_accepted"] == N_CLIENTS
    assert server.stats()["connections_open"] == 0
    # The listeners, epoll sets and wake-up descriptors of the server are closed too.
    assert not open_fds().leaked_since(before_server)


# -- limits ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "options",
    [{"max_connections": 0}, {"backlog": -1}, {"accepts_per_wake": 0}, {"idle_timeout": 0},
     {"graceful_timeout": -1}, {"max_connections": True}],
)
def test_bad_limits_are_rejected(options):
    with pytest.raises(ValueError):
        fn.Server(echo.handle, **options)


def test_a_handler_must_be_callable():
    with pytest.raises(TypeError):
        fn.Server("not a handler")


@pytest.mark.parametrize("threads", [1, 2])
def test_a_second_server_cannot_bind_a_port_another_server_listens_on(servers, threads):
    """The listeners use SO_REUSEPORT among themselves, yet a port that another server (of
    this process or another of the same user) listens on is in use."""
    first = servers(echo.handle, threads=threads)
    second = fn.Server(echo.handle, "127.0.0.1", first.address[1], threads=threads)
    with pytest.raises(OSError) as info:
        second.bind()
    assert info.value.errno == errno.EADDRINUSE
    with client(first.address) as c:  # the first one still gets every connection
        assert roundtrip(c, b"mine") == b"mine"


def test_a_server_can_bind_a_fixed_port_again_after_the_last_one_stopped():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for _ in range(2):
        with fn.Server(echo.handle, "127.0.0.1", port, threads=2) as server:
            with client(server.address) as c:
                assert roundtrip(c, b"again") == b"again"
