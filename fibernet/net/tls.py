"""TLS over fiber sockets: ``ssl.SSLObject`` on two memory BIOs, driven by a :class:`Socket`.

No thread ever blocks in a handshake or a read: OpenSSL only ever sees memory buffers, and
the bytes move through the fiber-aware socket, which suspends the calling fiber alone.

:class:`TLSSocket` has the interface the servers' handlers and the HTTP connection loop use on
a plain :class:`~fibernet.net.sockets.Socket` (``recv``, ``recv_into``, ``send``, ``sendall``,
``shutdown``, ``close``, ``timeout``, the byte counters, ``getpeername``...), so a handler
cannot tell them apart (except by ``scheme == "https"`` and ``version()``).

- :class:`TLSConfig` holds what ``--ssl-*`` give (uvicorn's names) and makes the server's
  context again on demand (a certificate reload).  Every context made here, server or client,
  refuses anything older than TLS 1.2 and does not renegotiate.
- :func:`server_handshake` wraps an accepted socket and runs its handshake under a deadline.
- :func:`client_socket` is what ``connect(..., ssl=context, server_hostname=...)`` calls.

An error of the TLS layer on an established connection (a bad record, a reset) is raised as
``ConnectionAbortedError`` so that the servers count it as a peer gone, not a handler bug.
"""

from __future__ import annotations

import ssl
import time
from dataclasses import dataclass
from typing import Any

from fibernet.net.sockets import Socket

_CHUNK = 64 * 1024
_WRITE = 256 * 1024  # plaintext handed to OpenSSL at once (the outgoing BIO stays bounded)
MINIMUM_VERSION = ssl.TLSVersion.TLSv1_2


@dataclass(frozen=True)
class TLSConfig:
    """A server's certificate and policy, as uvicorn's ``--ssl-*`` options name them.

    ``cert_reqs`` is ``ssl.CERT_NONE`` (0), ``CERT_OPTIONAL`` (1) or ``CERT_REQUIRED`` (2);
    ``ca_certs`` the CAs client certificates are checked against; ``ciphers`` an OpenSSL
    cipher list for TLS 1.2 (None: OpenSSL's defaults); ``alpn`` the protocols offered.
    """

    certfile: str
    keyfile: str | None = None
    password: str | None = None
    ca_certs: str | None = None
    cert_reqs: int = ssl.CERT_NONE
    ciphers: str | None = None
    alpn: tuple[str, ...] = ("http/1.1",)

    def context(self) -> ssl.SSLContext:
        """A new server context with the certificate files as they are now on disk."""
        ctx = server_context()
        password = self.password
        ctx.load_cert_chain(self.certfile, self.keyfile, (lambda: password) if password else None)
        ctx.verify_mode = ssl.VerifyMode(self.cert_reqs)
        if self.ca_certs:
            ctx.load_verify_locations(self.ca_certs)
        if self.ciphers:
            ctx.set_ciphers(self.ciphers)
        if self.alpn:
            ctx.set_alpn_protocols(list(self.alpn))
        return ctx


def server_context() -> ssl.SSLContext:
    """An empty server context with fibernet's floor: TLS 1.2, no renegotiation."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = MINIMUM_VERSION
    ctx.options |= ssl.OP_NO_RENEGOTIATION | ssl.OP_NO_COMPRESSION
    return ctx


def client_context(cafile: str | None = None) -> ssl.SSLContext:
    """``ssl.create_default_context()`` with the TLS 1.2 floor (checks names and chains)."""
    ctx = ssl.create_default_context(cafile=cafile)
    ctx.minimum_version = MINIMUM_VERSION
    return ctx


class TLSSocket:
    """A TLS connection over a fiber-aware socket (``raw``); see the module's docstring."""

    __slots__ = ("raw", "_ssl", "_in", "_out", "_ready")

    scheme = "https"

    def __init__(
        self, raw: Socket, context: ssl.SSLContext, server_side: bool, server_hostname: str | None = None
    ) -> None:
        self.raw = raw
        self._in = ssl.MemoryBIO()
        self._out = ssl.MemoryBIO()
        self._ssl = context.wrap_bio(
            self._in, self._out, server_side=server_side, server_hostname=server_hostname
        )
        self._ready = False  # the handshake is done (close sends close_notify only then)

    def __repr__(self) -> str:
        return f"<fibernet TLSSocket {self._ssl.version() or 'handshaking'} over {self.raw!r}>"

    def __enter__(self) -> TLSSocket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- moving the encrypted bytes ------------------------------------------------------

    def _flush(self) -> None:
        """Send what OpenSSL wrote to the outgoing buffer (suspends while the peer is slow)."""
        data = self._out.read()
        if data:
            self.raw.sendall(data)

    def _feed(self) -> None:
        """Wait for encrypted bytes from the peer and hand them to OpenSSL."""
        data = self.raw.recv(_CHUNK)
        if data:
            self._in.write(data)
        else:
            self._in.write_eof()

    def do_handshake(self, timeout: float | None = None) -> None:
        """Run the handshake, all of it within ``timeout`` seconds (``TimeoutError``)."""
        raw = self.raw
        saved = raw.timeout
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            while True:
                try:
                    self._ssl.do_handshake()
                    break
                except ssl.SSLError as exc:
                    if not isinstance(exc, ssl.SSLWantReadError):
                        self._flush_nowait()  # the alert that tells the peer why
                        raise
                    # (want more bytes from the peer:)
                    self._flush()
                    if deadline is not None:
                        left = deadline - time.monotonic()
                        if left <= 0:
                            raise TimeoutError(f"TLS handshake not complete within {timeout}s") from None
                        raw.timeout = left
                    self._feed()
            self._flush()  # the last flight (and TLS 1.3's session tickets)
        finally:
            raw.timeout = saved
        self._ready = True

    # -- data ---------------------------------------------------------------------------

    def recv(self, bufsize: int) -> bytes:
        """Up to ``bufsize`` bytes of plaintext; b"" at the end of the stream."""
        sslobj = self._ssl
        while True:
            try:
                return sslobj.read(bufsize)
            except ssl.SSLWantReadError:
                if self._out.pending:
                    self._flush()  # a post-handshake message to answer (a key update)
                self._feed()
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                return b""  # close_notify, or a peer that just closed (as most HTTP clients do)
            except ssl.SSLError as exc:
                raise ConnectionAbortedError(f"TLS: {exc.reason or exc}") from None

    def recv_nowait(self, bufsize: int) -> bytes | None:
        """Plaintext that can be had without waiting, b"" at the end, None if none yet."""
        sslobj = self._ssl
        while True:
            try:
                return sslobj.read(bufsize)
            except ssl.SSLWantReadError:
                data = self.raw.recv_nowait(_CHUNK)
                if data is None:
                    return None
                if data:
                    self._in.write(data)
                else:
                    self._in.write_eof()
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                return b""
            except ssl.SSLError as exc:
                raise ConnectionAbortedError(f"TLS: {exc.reason or exc}") from None

    def recv_into(self, buffer: Any, nbytes: int = 0) -> int:
        view = memoryview(buffer).cast("B")
        data = self.recv(nbytes or len(view))
        view[: len(data)] = data
        return len(data)

    def sendall(self, data: Any) -> None:
        """Encrypt and send every byte; suspends while the peer does not read."""
        view = memoryview(data).cast("B")
        total = len(view)
        sent = 0
        sslobj = self._ssl
        try:
            while True:
                sent += sslobj.write(view[sent : sent + _WRITE])
                self._flush()
                if sent >= total:
                    return
        except ssl.SSLError as exc:
            raise ConnectionAbortedError(f"TLS: {exc.reason or exc}") from None

    def send(self, data: Any) -> int:
        self.sendall(data)
        return len(memoryview(data).cast("B"))

    # -- ending -------------------------------------------------------------------------

    def _close_notify(self) -> None:
        """Put close_notify in the outgoing buffer (once; nothing before the handshake)."""
        if self._ready:
            self._ready = False
            try:
                self._ssl.unwrap()
            except ssl.SSLError:
                pass  # (SSLWantReadError: ours is written, the peer's is not awaited)

    def shutdown(self, how: int | None = None) -> None:
        """Half-close: send close_notify, then stop sending; this side can still read."""
        self._close_notify()
        self._flush()
        self.raw.shutdown() if how is None else self.raw.shutdown(how)

    def _flush_nowait(self) -> None:
        """Send what is in the outgoing buffer if the kernel takes it now; else drop it."""
        data = self._out.read()
        if data and not self.raw.closed:
            try:
                self.raw.sock.send(data)
            except OSError:
                pass

    def close(self) -> None:
        """Send close_notify if it can go without waiting, then close the socket.  Idempotent."""
        if not self.raw.closed:
            self._close_notify()
            self._flush_nowait()
        self.raw.close()

    # -- what the handler may ask ---------------------------------------------------------

    def version(self) -> str | None:
        return self._ssl.version()

    def cipher(self) -> tuple | None:
        return self._ssl.cipher()

    def selected_alpn_protocol(self) -> str | None:
        return self._ssl.selected_alpn_protocol()

    def getpeercert(self, binary_form: bool = False) -> Any:
        return self._ssl.getpeercert(binary_form)

    @property
    def ssl_object(self) -> ssl.SSLObject:
        return self._ssl

    # -- the plain socket's interface, delegated -----------------------------------------

    def fileno(self) -> int:
        return self.raw.fileno()

    @property
    def sock(self) -> Any:
        return self.raw.sock

    @property
    def closed(self) -> bool:
        return self.raw.closed

    @property
    def family(self) -> int:
        return self.raw.family

    @property
    def timeout(self) -> float | None:
        return self.raw.timeout

    @timeout.setter
    def timeout(self, value: float | None) -> None:
        self.raw.timeout = value

    @property
    def bytes_in(self) -> int:
        return self.raw.bytes_in

    @property
    def bytes_out(self) -> int:
        return self.raw.bytes_out

    @property
    def active(self) -> bool:
        return self.raw.active

    @active.setter
    def active(self, value: bool) -> None:
        self.raw.active = value

    def interrupt_wait(self) -> bool:
        return self.raw.interrupt_wait()

    def _wait(self, events: int) -> None:
        self.raw._wait(events)

    def getpeername(self) -> Any:
        return self.raw.getpeername()

    def getsockname(self) -> Any:
        return self.raw.getsockname()

    def setsockopt(self, *args: Any) -> None:
        self.raw.setsockopt(*args)

    def getsockopt(self, *args: Any) -> Any:
        return self.raw.getsockopt(*args)


def server_handshake(raw: Socket, context: ssl.SSLContext, timeout: float | None) -> TLSSocket:
    """Wrap an accepted socket and complete the handshake within ``timeout`` seconds.

    Raises ``ssl.SSLError``, ``TimeoutError`` or ``OSError``; the caller closes ``raw``.
    """
    conn = TLSSocket(raw, context, server_side=True)
    conn.do_handshake(timeout)
    return conn


def client_socket(raw: Socket, context: ssl.SSLContext, server_hostname: str | None) -> TLSSocket:
    """Wrap a connected socket as a TLS client and handshake (within ``raw.timeout``)."""
    conn = TLSSocket(raw, context, server_side=False, server_hostname=server_hostname)
    conn.do_handshake(raw.timeout)
    return conn
