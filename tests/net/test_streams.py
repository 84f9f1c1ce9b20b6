"""Buffered streams over real loopback connections: exact reads, lines with limits,
delimiters, end of stream, half-close, and the operation forms in a choice with a timer."""

from __future__ import annotations

import gc
import socket
import time
import weakref

import pytest

import fibernet as fn
from fibernet.net.sockets import Socket
from fibernet.net.streams import IncompleteRead, LimitOverrun, Stream

from ._support import stream_pair

pytestmark = pytest.mark.timeout(20)


def _run(body):
    """Run ``body(client_stream, server_stream)`` in a fiber and close both streams after."""

    def main():
        client, server = stream_pair(timeout=10)
        try:
            return body(client, server)
        finally:
            client.close()
            server.close()

    return fn.run(main)


def _send_in_pieces(stream: Stream, data: bytes, size: int) -> None:
    for i in range(0, len(data), size):
        stream.write(data[i : i + size])
        fn.yield_now()


# -- blocking forms ---------------------------------------------------------------------------


def test_read_exactly_assembles_pieces_and_keeps_the_rest():
    data = bytes(range(256)) * 40  # 10240 bytes

    def body(client, server):
        writer = fn.spawn(_send_in_pieces, client, data, 700)
        first = server.read_exactly(5000)
        second = server.read_exactly(5000)
        writer.join()
        rest = server.read_exactly(240)
        return first, second, rest

    first, second, rest = _run(body)
    assert first == data[:5000]
    assert second == data[5000:10000]
    assert rest == data[10000:]


def test_read_returns_what_is_there_up_to_max_bytes():
    def body(client, server):
        client.write(b"abcdefgh")
        got = server.read(3)
        got2 = server.read(100)
        return got, got2

    assert _run(body) == (b"abc", b"defgh")


def test_readline_returns_lines_one_by_one_across_pieces():
    text = b"first line\nsecond\n\nlast line\n"

    def body(client, server):
        writer = fn.spawn(_send_in_pieces, client, text, 3)
        lines = [server.readline() for _ in range(4)]
        writer.join()
        return lines

    assert _run(body) == [b"first line\n", b"second\n", b"\n", b"last line\n"]


def test_readline_limit_allows_a_line_of_exactly_the_limit_and_rejects_a_longer_one():
    def body(client, server):
        client.write(b"123456789\n")  # 10 bytes with its newline
        ok = server.readline(limit=10)
        client.write(b"1234567890\n")  # 11 bytes
        with pytest.raises(LimitOverrun):
            server.readline(limit=10)
        return ok

    assert _run(body) == b"123456789\n"


def test_readline_limit_overrun_without_any_newline():
    def body(client, server):
        client.write(b"x" * 5000)
        with pytest.raises(LimitOverrun):
            server.readline(limit=1000)

    _run(body)


def test_readline_at_end_of_stream_returns_the_rest_then_empty():
    def body(client, server):
        client.write(b"line\npartial")
        client.shutdown_write()
        return server.readline(), server.readline(), server.readline(), server.at_eof

    assert _run(body) == (b"line\n", b"partial", b"", True)


def test_read_until_a_multibyte_separator_split_across_pieces():
    data = b"HEAD 1\r\nX: y\r\n\r\nbody bytes"

    def body(client, server):
        writer = fn.spawn(_send_in_pieces, client, data, 1)
        head = server.read_until(b"\r\n\r\n")
        rest = server.read_exactly(len(b"body bytes"))
        writer.join()
        return head, rest

    assert _run(body) == (b"HEAD 1\r\nX: y\r\n\r\n", b"body bytes")


def test_read_until_limit():
    def body(client, server):
        client.write(b"a" * 20 + b"::")
        with pytest.raises(LimitOverrun):
            server.read_until(b"::", limit=10)

    _run(body)


def test_read_until_rejects_an_empty_separator():
    def body(client, server):
        with pytest.raises(ValueError):
            server.read_until(b"")
        with pytest.raises(ValueError):
            server.read_until_op(b"")

    _run(body)


def test_read_exactly_at_end_of_stream_raises_incomplete_read_with_the_partial_bytes():
    def body(client, server):
        client.write(b"12345")
        client.shutdown_write()
        with pytest.raises(IncompleteRead) as info:
            server.read_exactly(10)
        return info.value.partial, isinstance(info.value, EOFError)

    assert _run(body) == (b"12345", True)


def test_read_until_at_end_of_stream_raises_incomplete_read():
    def body(client, server):
        client.write(b"no separator here")
        client.shutdown_write()
        with pytest.raises(IncompleteRead) as info:
            server.read_until(b"\r\n")
        return info.value.partial

    assert _run(body) == b"no separator here"


def test_half_close_the_peer_reads_end_of_stream_and_can_still_reply():
    def body(client, server):
        client.write(b"request")
        client.shutdown_write()
        request = server.read_exactly(7)
        eof = server.read()
        server.write(b"reply after your end")
        server.shutdown_write()
        reply = client.read_exactly(len(b"reply after your end"))
        return request, eof, server.at_eof, reply, client.read()

    assert _run(body) == (b"request", b"", True, b"reply after your end", b"")


# -- operation forms --------------------------------------------------------------------------


def _timeout(seconds: float):
    return fn.wrap(fn.wait_op(seconds), lambda: "timeout")


def test_readline_op_times_out_when_nothing_arrives_and_a_later_read_gets_the_data():
    def body(client, server):
        t0 = time.monotonic()
        result = fn.perform(fn.choice(server.readline_op(), _timeout(0.1)))
        waited = time.monotonic() - t0
        client.write(b"after the timeout\n")
        return result, waited, server.readline()

    result, waited, line = _run(body)
    assert result == "timeout"
    assert waited >= 0.1
    assert line == b"after the timeout\n"


def test_partial_data_read_by_a_losing_readline_op_is_not_lost():
    def body(client, server):
        # The writer runs once this fiber blocks in the choice: half a line arrives, the
        # readiness callback buffers it, and the timer still wins.
        fn.spawn(client.write, b"hel")
        result = fn.perform(fn.choice(server.readline_op(), _timeout(0.2)))
        buffered = server.buffered()
        client.write(b"lo\n")
        return result, buffered, server.readline()

    assert _run(body) == ("timeout", 3, b"hello\n")


def test_readline_op_wins_over_the_timer_when_the_line_arrives():
    def body(client, server):
        fn.spawn(_send_in_pieces, client, b"a whole line\nand more", 4)
        got = fn.perform(fn.choice(server.readline_op(), _timeout(10)))
        return got, server.read_exactly(len(b"and more"))

    assert _run(body) == (b"a whole line\n", b"and more")


def test_read_exactly_op_completes_only_with_all_its_bytes():
    data = bytes(range(200)) * 10  # 2000 bytes

    def body(client, server):
        fn.spawn(_send_in_pieces, client, data + b"tail", 300)
        got = fn.perform(fn.choice(server.read_exactly_op(len(data)), _timeout(10)))
        return got, server.read_exactly(4)

    got, tail = _run(body)
    assert got == data
    assert tail == b"tail"


def test_read_until_op_and_read_op():
    def body(client, server):
        client.write(b"k=v;rest")
        record = fn.perform(server.read_until_op(b";"))
        some = fn.perform(server.read_op(100))
        return record, some

    assert _run(body) == (b"k=v;", b"rest")


def test_readline_op_raises_limit_overrun():
    def body(client, server):
        fn.spawn(client.write, b"y" * 64)
        with pytest.raises(LimitOverrun):
            fn.perform(fn.choice(server.readline_op(limit=16), _timeout(10)))

    _run(body)


def test_read_exactly_op_raises_incomplete_read_at_end_of_stream():
    def body(client, server):
        fn.spawn(lambda: (client.write(b"abc"), client.shutdown_write()))
        with pytest.raises(IncompleteRead) as info:
            fn.perform(fn.choice(server.read_exactly_op(10), _timeout(10)))
        return info.value.partial

    assert _run(body) == b"abc"


def test_one_readline_op_performed_again_and_again():
    """An operation object is a description: performing the same one in a loop (an idle
    timeout written once) reads line after line, blocking each time."""
    lines = [b"line %d\n" % i for i in range(50)]

    def body(client, server):
        op = fn.choice(server.readline_op(), _timeout(10))
        got = []

        def writer():
            for line in lines:
                client.write(line)
                fn.yield_now()
                fn.yield_now()

        fn.spawn(writer)
        for _ in lines:
            got.append(fn.perform(op))
        return got

    assert _run(body) == lines


def test_a_reused_stream_op_does_not_keep_its_finished_performers_alive():
    """Each perform of one operation object registers its own wait; none of it may stay
    attached to the object (it would hold every past performer and grow without bound)."""

    def body(client, server):
        op = server.readline_op()
        refs = []
        for i in range(20):
            fiber = fn.spawn(fn.perform, op)
            fn.yield_now()  # the fiber runs and blocks in the readline
            assert fiber.waiting_on() is not None
            client.write(b"%d\n" % i)
            assert fiber.join(timeout=5) == b"%d\n" % i
            refs.append(weakref.ref(fiber))
            del fiber
        gc.collect()
        return sum(ref() is not None for ref in refs)

    assert _run(body) == 0


class _CountingSocket(socket.socket):
    """A standard socket that counts the reads that found nothing (EAGAIN)."""

    empty_reads = 0

    def recv(self, bufsize: int, *flags: int) -> bytes:
        try:
            return super().recv(bufsize, *flags)
        except BlockingIOError:
            self.empty_reads += 1
            raise


def test_a_read_after_a_short_one_waits_instead_of_trying_an_empty_socket():
    def main():
        a, b = socket.socketpair()
        counting = _CountingSocket(fileno=b.detach())
        peer, stream = Socket(a), Stream(Socket(counting))
        try:
            peer.sendall(b"hel")
            reader = fn.spawn(stream.readline)
            while reader.waiting_on() is None:  # it read b"hel" (a short read) and waits
                fn.yield_now()
            peer.sendall(b"lo\n")
            return reader.join(), counting.empty_reads
        finally:
            peer.close()
            stream.close()

    assert fn.run(main) == (b"hello\n", 0)
