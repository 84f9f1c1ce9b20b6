"""Plain blocking clients (standard-library sockets with timeouts) for the server tests."""

from __future__ import annotations

import logging
import os
import socket
import threading

TIMEOUT = 10.0


def client(address, timeout: float = TIMEOUT) -> socket.socket:
    return socket.create_connection(address[:2], timeout=timeout)


def recv_exactly(sock: socket.socket, n: int) -> bytes:
    data = bytearray()
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise EOFError(f"end of stream after {len(data)} of {n} bytes: {bytes(data)[:80]!r}")
        data += chunk
    return bytes(data)


def recv_until_eof(sock: socket.socket) -> bytes:
    data = bytearray()
    while chunk := sock.recv(65536):
        data += chunk
    return bytes(data)


def roundtrip(sock: socket.socket, data: bytes) -> bytes:
    sock.sendall(data)
    return recv_exactly(sock, len(data))


class LineReader:
    """Lines from a blocking socket (a small buffer of its own)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._buf = bytearray()

    def readline(self) -> str:
        while (i := self._buf.find(b"\n")) < 0:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError(f"end of stream; buffered {bytes(self._buf)!r}")
            self._buf += chunk
        line = bytes(self._buf[: i + 1])
        del self._buf[: i + 1]
        return line.decode().rstrip("\n")


def fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


class LogEvent(logging.Handler):
    """A logging handler that sets ``event`` when a record's message contains ``text``.

    Use as a context manager on a logger; it lowers the logger's level to ``level`` for the
    block and restores it.
    """

    def __init__(self, logger: str, text: str, level: int = logging.INFO) -> None:
        super().__init__(level)
        self.logger = logging.getLogger(logger)
        self.text = text
        self.event = threading.Event()
        self._old_level = self.logger.level

    def emit(self, record: logging.LogRecord) -> None:
        if self.text in record.getMessage():
            self.event.set()

    def __enter__(self) -> LogEvent:
        self.logger.addHandler(self)
        if self.logger.getEffectiveLevel() > self.level:
            self.logger.setLevel(self.level)
        return self

    def __exit__(self, *exc: object) -> None:
        self.logger.removeHandler(self)
        self.logger.setLevel(self._old_level)
