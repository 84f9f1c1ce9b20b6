"""Buffered streams over fiber-aware sockets: exact reads, lines and delimiters, with limits.

Every read has a blocking form (suspends the fiber) and an operation form that can sit in
a choice, so an idle timeout is one line::

    line = perform(choice(stream.readline_op(), wrap(wait_op(5), lambda: None)))

The operation form completes only when its whole result is there: while it blocks, the
readiness callback reads what has arrived into the buffer and completes the operation once
the result is complete.  Bytes read for an operation that lost its choice stay buffered for
the next read, so nothing is lost.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from fibernet.errors import FibernetError
from fibernet.net.readiness import _on_ready
from fibernet.net.sockets import Socket, connect
from fibernet.ops.operation import NOT_READY, BaseOp, OpState, Raise
from fibernet.runtime.poller import EPOLLIN

DEFAULT_LIMIT = 64 * 1024
_CHUNK = 64 * 1024


class IncompleteRead(FibernetError, EOFError):
    """The stream ended before the read was satisfied; ``partial`` holds what came."""

    def __init__(self, partial: bytes, expected: Any) -> None:
        super().__init__(f"stream ended after {len(partial)} bytes, expected {expected}")
        self.partial = partial


class LimitOverrun(FibernetError, ValueError):
    """A line or delimited record exceeded its maximum length."""


class Stream:
    """A buffered reader and writer over a :class:`Socket`."""

    __slots__ = ("sock", "_raw", "_buf", "_eof")

    def __init__(self, sock: Socket) -> None:
        self.sock = sock  # a Socket, or a TLSSocket (then ``_raw`` is the Socket under it)
        self._raw = getattr(sock, "raw", sock)
        self._buf = bytearray()
        self._eof = False

    @classmethod
    def connect(cls, host: str, port: int, timeout: float | None = None, **tls: Any) -> Stream:
        """A stream over :func:`~fibernet.net.sockets.connect` (``ssl=``, ``server_hostname=``)."""
        return cls(connect(host, port, timeout, **tls))

    def __enter__(self) -> Stream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def at_eof(self) -> bool:
        return self._eof and not self._buf

    def buffered(self) -> int:
        return len(self._buf)

    # -- parsers: return the result, or None if more bytes are needed ------------------------

    def _take(self, n: int) -> bytes:
        data = bytes(self._buf[:n])
        del self._buf[:n]
        return data

    def _parse_some(self, n: int) -> bytes | None:
        if self._buf:
            return self._take(n)
        return b"" if self._eof else None

    def _parse_exactly(self, n: int) -> bytes | None:
        if len(self._buf) >= n:
            return self._take(n)
        if self._eof:
            raise IncompleteRead(self._take(len(self._buf)), n)
        return None

    def _parse_until(self, sep: bytes, limit: int, partial_at_eof: bool) -> bytes | None:
        buf = self._buf
        i = buf.find(sep)
        if i >= 0:
            end = i + len(sep)
            if end > limit:
                raise LimitOverrun(f"record of {end} bytes exceeds the limit of {limit}")
            return self._take(end)
        if len(buf) >= limit:
            raise LimitOverrun(f"no {sep!r} within {limit} bytes")
        if self._eof:
            rest = self._take(len(buf))
            if partial_at_eof:
                return rest
            raise IncompleteRead(rest, sep)
        return None

    # -- filling ------------------------------------------------------------------------

    def _fill(self) -> bool:
        """Read what has arrived without blocking; False if nothing has (EAGAIN)."""
        data = self.sock.recv_nowait(_CHUNK)
        if data is None:
            return False
        if data:
            self._buf += data
        else:
            self._eof = True
        return True

    def _read(self, parse: Callable[[], bytes | None]) -> bytes:
        while True:
            result = parse()
            if result is not None:
                return result
            # The socket's own blocking recv: after a short read (the kernel's buffer emptied)
            # it waits for the next edge first, where a try without waiting would cost a
            # system call that finds nothing.
            data = self.sock.recv(_CHUNK)
            if data:
                self._buf += data
            else:
                self._eof = True

    def _op(self, parse: Callable[[], bytes | None], what: str) -> BaseOp:
        def try_fn() -> Any:
            while True:
                result = parse()
                if result is not None:
                    return result
                if not self._fill():
                    return NOT_READY

        def on_readable(state: OpState, index: int, watch: list, err: int) -> None:
            if err or state.done:
                _on_ready(state, index, err)
                return
            try:
                result = try_fn()
            except Exception as exc:  # noqa: BLE001 - delivered to the performer
                state.complete(index, Raise(exc))
                return
            if result is NOT_READY:
                arm(state, index, watch)  # partial data: wait for more
            else:
                state.complete(index, result)

        def arm(state: OpState, index: int, watch: list) -> None:
            sched = state.ctx
            sock = self._raw
            if sched not in sock._pollers:
                sched._poller.register_edge(sock.fileno(), sock)
                sock._pollers.append(sched)
            # One live watch per perform (the previous one has fired): the operation object
            # may be performed again and again, so nothing of a perform may outlive it here.
            watch[:] = [sched.watch_fd(sock.fileno(), EPOLLIN, partial(on_readable, state, index, watch))]

        def block_fn(state: OpState, index: int):
            watch: list = []
            arm(state, index, watch)
            return partial(cancel, watch)

        def cancel(watch: list) -> None:
            while watch:
                watch.pop()()

        return BaseOp(try_fn, block_fn, None, lambda: f"{what} on fd {self.sock.fileno()}")

    # -- reads --------------------------------------------------------------------------

    def read(self, max_bytes: int = _CHUNK) -> bytes:
        """Up to ``max_bytes`` (at least one); b"" at end of stream."""
        return self._read(partial(self._parse_some, max_bytes))

    def read_exactly(self, n: int) -> bytes:
        """Exactly ``n`` bytes, or :class:`IncompleteRead` at end of stream."""
        return self._read(partial(self._parse_exactly, n))

    def readline(self, limit: int = DEFAULT_LIMIT) -> bytes:
        """A line with its b"\\n"; at end of stream what is left (b"" if nothing).

        Raises :class:`LimitOverrun` if no newline comes within ``limit`` bytes.
        """
        return self._read(partial(self._parse_until, b"\n", limit, True))

    def read_until(self, separator: bytes, limit: int = DEFAULT_LIMIT) -> bytes:
        """Bytes up to and including ``separator``; :class:`IncompleteRead` at end of stream."""
        if not separator:
            raise ValueError("separator must not be empty")
        return self._read(partial(self._parse_until, separator, limit, False))

    def read_op(self, max_bytes: int = _CHUNK) -> BaseOp:
        return self._op(partial(self._parse_some, max_bytes), "read")

    def read_exactly_op(self, n: int) -> BaseOp:
        return self._op(partial(self._parse_exactly, n), f"read {n} bytes")

    def readline_op(self, limit: int = DEFAULT_LIMIT) -> BaseOp:
        return self._op(partial(self._parse_until, b"\n", limit, True), "readline")

    def read_until_op(self, separator: bytes, limit: int = DEFAULT_LIMIT) -> BaseOp:
        if not separator:
            raise ValueError("separator must not be empty")
        return self._op(partial(self._parse_until, separator, limit, False), "read_until")

    # -- writes and closing -----------------------------------------------------------------

    def write(self, data: Any) -> None:
        """Send all of ``data`` (suspends while the peer does not read)."""
        self.sock.sendall(data)

    def shutdown_write(self) -> None:
        """Half-close: the peer reads end of stream; this side can still read."""
        self.sock.shutdown()

    def close(self) -> None:
        self.sock.close()
