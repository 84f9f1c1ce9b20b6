"""Fiber-aware sockets over real loopback connections: closing under a waiter, timeouts,
connect (refused, by name through the thread pool) and backpressure."""

from __future__ import annotations

import errno
import socket
import threading
import time

import pytest

import fibernet as fn
from fibernet.net.sockets import Socket, connect, listen
from fibernet.net.streams import Stream

from ._support import socket_pair

pytestmark = pytest.mark.timeout(20)


def _other_scheduler() -> fn.Scheduler:
    here = fn.current_scheduler()
    return next(s for s in here.runtime.schedulers if s is not here)


# -- closing a descriptor under a waiting fiber wakes it ------------------------------------------


def test_close_wakes_fiber_blocked_in_recv_on_same_scheduler():
    def main():
        client, server = socket_pair()
        started = fn.Condition()

        def reader():
            started.signal()
            return server.recv(100)

        fiber = fn.spawn(reader, name="reader")
        started.wait()
        # One scheduler: this fiber runs again only once the reader has suspended in recv.
        assert "readable" in (fiber.waiting_on() or ""), fiber.waiting_on()
        server.close()
        try:
            with pytest.raises(OSError) as info:
                fiber.join(timeout=5)
        finally:
            client.close()
        return info.value.errno, server.closed

    assert fn.run(main) == (errno.EBADF, True)


def test_close_from_another_scheduler_wakes_fiber_blocked_in_recv(spin_until):
    def main():
        client, server = socket_pair()
        fiber = fn.spawn(server.recv, 100, name="reader", scheduler=_other_scheduler())
        spin_until(lambda: fiber.waiting_on() is not None, "the reader to block in recv")
        server.close()  # from this scheduler, while the reader waits on the other one
        try:
            with pytest.raises(OSError) as info:
                fiber.join(timeout=5)
        finally:
            client.close()
        return info.value.errno

    assert fn.run(main, threads=2) == errno.EBADF


def test_close_wakes_fiber_blocked_in_readline():
    def main():
        client, server = socket_pair()
        stream = Stream(server)
        started = fn.Condition()

        def reader():
            started.signal()
            return stream.readline()

        client.sendall(b"no newline yet")  # a partial line: readline must wait for more
        fiber = fn.spawn(reader, name="readline")
        started.wait()
        assert fiber.waiting_on() is not None
        stream.close()
        try:
            with pytest.raises(OSError) as info:
                fiber.join(timeout=5)
        finally:
            client.close()
        return info.value.errno

    assert fn.run(main) == errno.EBADF


def test_close_wakes_fiber_blocked_in_readline_op_in_a_choice():
    def main():
        client, server = socket_pair()
        stream = Stream(server)
        started = fn.Condition()

        def reader():
            started.signal()
            return fn.perform(fn.choice(stream.readline_op(), fn.wrap(fn.wait_op(30), lambda: "timeout")))

        fiber = fn.spawn(reader)
        started.wait()
        stream.close()
        try:
            with pytest.raises(OSError) as info:
                fiber.join(timeout=5)
        finally:
            client.close()
        return info.value.errno

    assert fn.run(main) == errno.EBADF


def test_operations_on_a_closed_socket_raise_ebadf():
    def main():
        client, server = socket_pair()
        client.close()
        client.close()  # idempotent
        server.close()
        with pytest.raises(OSError) as info:
            server.recv(10)
        return info.value.errno

    assert fn.run(main) == errno.EBADF


# -- timeouts -------------------------------------------------------------------------------------


def test_recv_with_timeout_raises_timeouterror_and_the_socket_still_works():
    def main():
        client, server = socket_pair(timeout=0.05)
        try:
            with pytest.raises(TimeoutError):
                server.recv(10)
            client.sendall(b"late")
            return server.recv(10)
        finally:
            client.close()
            server.close()

    assert fn.run(main) == b"late"


# -- connect ------------------------------------------------------------------------------------


def _closed_port() -> int:
    """A loopback port with no listener: bound (never listening) to learn a free number, closed."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_connect_to_a_closed_port_is_refused():
    port = _closed_port()

    def main():
        with pytest.raises(ConnectionRefusedError):
            connect("127.0.0.1", port, timeout=5)

    fn.run(main)


def test_connect_resolves_a_name_on_the_thread_pool(monkeypatch):
    real_getaddrinfo = socket.getaddrinfo
    lookups: list[tuple[str, str]] = []
    released = threading.Event()

    def getaddrinfo(host, *args, **kwargs):
        lookups.append((host, threading.current_thread().name))
        if host == "localhost":
            # Blocks until a fiber of the connecting scheduler runs: if the lookup ran on the
            # scheduler thread, nothing could set the event and this would fail.
            assert released.wait(10), "the scheduler was blocked by the name lookup"
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)

    def main():
        lst = listen("127.0.0.1", 0)
        port = lst.getsockname()[1]
        try:
            connecting = fn.spawn(connect, "localhost", port, 10, name="connect")
            fn.spawn(released.set, name="releaser")
            conn, _addr = lst.accept()
            client = connecting.join(timeout=10)
        finally:
            lst.close()
        try:
            client.sendall(b"ping")
            got = conn.recv(4)
            assert client.timeout == 10  # the socket keeps the whole timeout for its calls
            return got, client.getpeername()[1] == port, fn.current_scheduler().thread.name
        finally:
            client.close()
            conn.close()

    got, right_port, sched_thread = fn.run(main)
    assert got == b"ping" and right_port
    resolved_by = [thread for host, thread in lookups if host == "localhost"]
    assert resolved_by and all(t.startswith("fibernet-pool") for t in resolved_by), lookups
    assert sched_thread not in resolved_by


def test_listen_in_a_fiber_resolves_a_name_on_the_thread_pool(monkeypatch):
    real_getaddrinfo = socket.getaddrinfo
    released = threading.Event()
    lookups: list[str] = []

    def getaddrinfo(host, *args, **kwargs):
        if host == "localhost":
            lookups.append(threading.current_thread().name)
            # Only a fiber of the listening scheduler sets the event: a lookup on the
            # scheduler's own thread would wait here for ever (and fail the test).
            assert released.wait(10), "the scheduler was blocked by the name lookup"
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)

    def main():
        fn.spawn(released.set, name="releaser")
        lst = listen("localhost", 0)
        try:
            with socket.create_connection(lst.getsockname()[:2], timeout=10):
                conn, _addr = lst.accept()
                conn.close()
            return lst.getsockname()[0]
        finally:
            lst.close()

    assert fn.run(main) in ("127.0.0.1", "::1")
    assert lookups and all(name.startswith("fibernet-pool") for name in lookups), lookups


def test_connect_timeout_bounds_the_name_resolution_too(monkeypatch):
    real_getaddrinfo = socket.getaddrinfo
    released = threading.Event()

    def getaddrinfo(host, *args, **kwargs):
        if host == "localhost":
            released.wait(10)  # a resolver that does not answer
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)

    def main():
        lst = listen("127.0.0.1", 0)
        try:
            t0 = time.monotonic()
            with pytest.raises(TimeoutError):
                connect("localhost", lst.getsockname()[1], timeout=0.2)
            return time.monotonic() - t0
        finally:
            released.set()
            lst.close()

    took = fn.run(main)
    assert 0.2 <= took < 5, took


# -- backpressure -----------------------------------------------------------------------------------


def test_sendall_to_a_client_that_does_not_read_suspends_only_the_writer(spin_until):
    payload = bytes(range(256)) * (32 * 1024)  # 8 MiB, far beyond the socket buffers

    def main():
        client, server = socket_pair()
        try:
            server.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)
            client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
            writer = fn.spawn(server.sendall, payload, name="writer")
            spin_until(lambda: writer.waiting_on() is not None, "the writer to block")
            assert "writable" in writer.waiting_on()

            # The scheduler (the only one) is free while the writer waits: another fiber
            # exchanges messages with this one.
            ch = fn.Channel()
            ticker = fn.spawn(lambda: [ch.put(i) for i in range(200)], name="ticker")
            assert [ch.get() for _ in range(200)] == list(range(200))
            ticker.join()
            assert not writer.done(), "sendall completed although nobody read"

            got = bytearray()
            while len(got) < len(payload):
                chunk = client.recv(256 * 1024)
                assert chunk, "end of stream before the whole payload"
                got += chunk
            writer.join(timeout=10)
            return bytes(got) == payload, server.bytes_out, client.bytes_in
        finally:
            client.close()
            server.close()

    same, sent, received = fn.run(main)
    assert same
    assert sent == received == len(payload)


def test_socket_wraps_a_plain_socket_and_reports_counters():
    def main():
        a, b = socket.socketpair()
        sa, sb = Socket(a), Socket(b)
        try:
            sa.sendall(b"x" * 1000)
            got = b""
            while len(got) < 1000:
                got += sb.recv(4096)
            return len(got), sa.bytes_out, sb.bytes_in, sb.active
        finally:
            sa.close()
            sb.close()

    assert fn.run(main) == (1000, 1000, 1000, True)


@pytest.mark.parametrize(
    "payload",
    [b"bytes" * 1000, bytearray(b"ba" * 3000), memoryview(b"0123456789" * 700)[5:], "array"],
    ids=["bytes", "bytearray", "memoryview", "array-of-ints"],
)
def test_sendall_sends_every_byte_of_any_buffer_and_counts_bytes(payload):
    import array

    if payload == "array":
        payload = array.array("i", range(2000))  # 4-byte items: bytes, not items, are counted
    expected = bytes(payload)

    def main():
        client, server = socket_pair()
        try:
            client.sendall(payload)
            client.shutdown()
            got = bytearray()
            while chunk := server.recv(65536):
                got += chunk
            return bytes(got), client.bytes_out
        finally:
            client.close()
            server.close()

    got, counted = fn.run(main)
    assert got == expected
    assert counted == len(expected)


# -- the read and send system calls (made in C by the compiled copy) ------------------------------


@pytest.mark.parametrize("bufsize", [1, 65536, 65537, 300_000], ids=["1", "64k", "64k+1", "300k"])
def test_recv_returns_what_has_arrived_up_to_bufsize_then_the_end_of_the_stream(bufsize):
    # A Unix stream socket returns all that is queued, up to bufsize, in one read; above
    # 64 KiB the compiled copy reads into a bytes object of that size, not its buffer.
    payload = bytes(range(256)) * 800  # 204,800 bytes: fits the socket pair's buffers

    def main():
        a, b = socket.socketpair()
        a.sendall(payload)
        a.close()
        sb = Socket(b)
        try:
            first = sb.recv(bufsize)
            got = bytearray(first)
            while chunk := sb.recv(bufsize):
                got += chunk
            return first, bytes(got), sb.bytes_in, sb.recv(bufsize)
        finally:
            sb.close()

    first, got, counted, after = fn.run(main)
    assert first == payload[: min(bufsize, len(payload))]
    assert got == payload and counted == len(payload)
    assert after == b""  # the end of the stream, again


def test_recv_nowait_is_none_until_bytes_come_then_bytes_then_the_end_of_the_stream():
    def main():
        a, b = socket.socketpair()
        sb = Socket(b)
        try:
            nothing = sb.recv_nowait(100)
            a.sendall(b"hello")
            some = sb.recv_nowait(100)
            a.close()
            return nothing, some, sb.recv_nowait(100)
        finally:
            sb.close()

    assert fn.run(main) == (None, b"hello", b"")


def test_recv_and_sendall_raise_the_errno_subclass_of_oserror_on_a_reset_connection():
    def main():
        client, server = socket_pair()
        # SO_LINGER 0: close sends a reset, not a FIN.
        client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        client.sendall(b"x")
        assert server.recv(1) == b"x"
        client.close()
        errors = []
        try:
            with pytest.raises(ConnectionResetError) as info:
                server.recv(100)
            errors.append(info.value.errno)
            with pytest.raises(OSError) as info:  # EPIPE after the reset
                server.sendall(b"y" * 10)
            errors.append(info.value.errno)
        finally:
            server.close()
        return errors

    assert fn.run(main) == [errno.ECONNRESET, errno.EPIPE]


def test_recv_of_a_negative_size_is_a_value_error_as_for_a_plain_socket():
    def main():
        a, b = socket.socketpair()
        sa = Socket(a)
        try:
            with pytest.raises(ValueError, match="negative buffersize"):
                sa.recv(-1)
        finally:
            sa.close()
            b.close()

    fn.run(main)


def test_a_socket_waits_in_each_runtime_it_is_used_in_and_in_a_plain_thread():
    """A wait finds its scheduler by the thread it runs on: a socket whose last waits were in
    a runtime that has ended waits in the next runtime's poller, then blocks in poll() when
    no runtime runs on the thread."""
    a, b = socket.socketpair()
    sender, receiver = Socket(a), Socket(b)

    def exchange(message: bytes) -> bytes:
        reader = fn.spawn(receiver.recv, 100)
        while reader.waiting_on() is None:  # it waits on this runtime's poller
            fn.yield_now()
        sender.sendall(message)
        return reader.join()

    try:
        assert fn.run(exchange, b"one") == b"one"
        assert fn.run(exchange, b"two") == b"two"
        sender.sendall(b"three")  # no runtime now: the short read before makes recv wait first
        assert receiver.recv(100) == b"three"
    finally:
        sender.close()
        receiver.close()
