"""The proxy in front: HAProxy's PROXY protocol (v1 and v2) on a listener, and the
X-Forwarded-For / X-Forwarded-Proto / Forwarded headers of trusted peers.

PROXY protocol (``--proxy-protocol``; https://www.haproxy.org/download/2.6/doc/proxy-protocol.txt):
the proxy sends one header before any byte of the client's; :func:`read_proxy_header` reads
exactly that header off the socket (peeking, so not one byte of the client's is taken) and
returns the client's address, which the server puts on the socket (``Socket.peer``) for the
handler's ``getpeername()`` and the HTTP request's ``client``.  A header that is missing,
malformed or late (the server's handshake deadline) raises :class:`ProxyHeaderError`, and the
server closes that connection.  A ``LOCAL`` command (the proxy's own health check) or an
``UNKNOWN``/unix family keeps the real peer address.

Proxy headers (``--proxy-headers``, ``--forwarded-allow-ips``, uvicorn's names and rules):
:class:`ForwardedPolicy` trusts a peer by address (IPs, networks, or ``*``); for a request from
a trusted peer it takes the scheme from X-Forwarded-Proto and the client from X-Forwarded-For
(the right-most address that is not itself a trusted proxy), or both from an RFC 7239
``Forwarded`` field when that is present instead.  A request from any other peer is left as
it came.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from collections.abc import Iterable
from typing import Any

from fibernet.errors import FibernetError
from fibernet.net.sockets import Socket
from fibernet.runtime.poller import EPOLLIN

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
_V1_PREFIX = b"PROXY "
_V1_MAX = 107  # the longest v1 line, CRLF included (the spec's bound)
_V2_FIXED = 16
_SCHEMES = frozenset({"http", "https", "ws", "wss"})
# The fields apply() reads (the parser marks a head that has one: RequestHead._proxied)
FORWARDED_FIELDS = frozenset((b"x-forwarded-for", b"x-forwarded-proto", b"forwarded"))


class ProxyHeaderError(FibernetError, ValueError):
    """The connection did not start with a valid PROXY protocol header."""


# -- the PROXY protocol ------------------------------------------------------------------


def parse_proxy_header(data: bytes) -> tuple[int, tuple[str, int] | None] | None:
    """Parse a PROXY header at the start of ``data``: (its length, the client's address or
    None to keep the peer's), or None if more bytes are needed."""
    n = min(len(data), len(V2_SIGNATURE))
    if data[:n] == V2_SIGNATURE[:n]:
        return _parse_v2(data)
    n = min(len(data), len(_V1_PREFIX))
    if data[:n] == _V1_PREFIX[:n]:
        return _parse_v1(data)
    raise ProxyHeaderError(f"no PROXY protocol header (the connection starts with {data[:16]!r})")


def _parse_v1(data: bytes) -> tuple[int, tuple[str, int] | None] | None:
    end = data.find(b"\r\n", 0, _V1_MAX)
    if end < 0:
        if len(data) >= _V1_MAX:
            raise ProxyHeaderError(f"PROXY v1 line longer than {_V1_MAX} bytes")
        return None
    parts = data[:end].decode("ascii", "replace").split(" ")
    if len(parts) >= 2 and parts[1] == "UNKNOWN":
        return end + 2, None
    if len(parts) != 6 or parts[1] not in ("TCP4", "TCP6"):
        raise ProxyHeaderError(f"bad PROXY v1 line {data[:end]!r}")
    _, family, src, _dst, sport, dport = parts
    try:
        address = ipaddress.ip_address(src)
        ipaddress.ip_address(_dst)
    except ValueError:
        raise ProxyHeaderError(f"bad address in PROXY v1 line {data[:end]!r}") from None
    if address.version != (4 if family == "TCP4" else 6):
        raise ProxyHeaderError(f"{family} with address {src}")
    port = _port(sport, data[:end])
    _port(dport, data[:end])
    return end + 2, (str(address), port)


def _port(text: str, line: bytes) -> int:
    if not text.isdigit() or len(text) > 5 or int(text) > 65535 or (text[0] == "0" and text != "0"):
        raise ProxyHeaderError(f"bad port in PROXY v1 line {line!r}")
    return int(text)


def _parse_v2(data: bytes) -> tuple[int, tuple[str, int] | None] | None:
    if len(data) < _V2_FIXED:
        return None
    version, command = data[12] >> 4, data[12] & 0x0F
    if version != 2 or command > 1:
        raise ProxyHeaderError(f"bad PROXY v2 version/command byte 0x{data[12]:02x}")
    family = data[13] >> 4
    length = int.from_bytes(data[14:16], "big")
    total = _V2_FIXED + length
    if len(data) < total:
        return None
    if command == 0:  # LOCAL: the proxy speaking for itself (a health check)
        return total, None
    body = data[_V2_FIXED:total]
    if family == 1:  # AF_INET: src, dst (4 bytes each), sport, dport
        if length < 12:
            raise ProxyHeaderError(f"PROXY v2 IPv4 addresses in {length} bytes")
        return total, (socket.inet_ntop(socket.AF_INET, body[0:4]), int.from_bytes(body[8:10], "big"))
    if family == 2:  # AF_INET6
        if length < 36:
            raise ProxyHeaderError(f"PROXY v2 IPv6 addresses in {length} bytes")
        return total, (socket.inet_ntop(socket.AF_INET6, body[0:16]), int.from_bytes(body[32:34], "big"))
    if family in (0, 3):  # UNSPEC, or a unix socket: keep the peer's address
        return total, None
    raise ProxyHeaderError(f"bad PROXY v2 address family {family}")


def read_proxy_header(sock: Socket, timeout: float) -> tuple[str, int] | None:
    """Take the PROXY header off ``sock`` within ``timeout`` seconds; the client's address
    (None: keep the peer's).  Raises :class:`ProxyHeaderError` or ``TimeoutError``.

    Bytes are peeked, and taken only once they are known to be the header's: a complete
    header is taken exactly; the start of one is taken whole (so the next wait is for new
    bytes or the end of the stream, which a peek cannot tell from the bytes it saw before).
    """
    deadline = time.monotonic() + timeout
    raw = sock.sock
    got = b""
    want = _V1_MAX
    saved = sock.timeout
    try:
        while True:
            try:
                peeked = raw.recv(want - len(got), socket.MSG_PEEK)
            except BlockingIOError:
                peeked = None
            if peeked is not None:
                if not peeked:
                    raise ProxyHeaderError(f"the connection closed before a whole PROXY header ({got!r})")
                data = got + peeked
                parsed = parse_proxy_header(data)
                if parsed is not None:
                    length, address = parsed
                    _discard(sock, length - len(got))
                    return address
                _discard(sock, len(peeked))  # the start of a header: all of it is the header's
                got = data
                if got[:12] == V2_SIGNATURE and len(got) >= _V2_FIXED:
                    want = _V2_FIXED + int.from_bytes(got[14:16], "big")
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no complete PROXY header within {timeout}s")
            sock.timeout = left
            sock._wait(EPOLLIN)
    finally:
        sock.timeout = saved


def _discard(sock: Socket, length: int) -> None:
    """Read exactly ``length`` bytes that were peeked already."""
    while length:
        chunk = sock.recv(length)
        if not chunk:
            raise ProxyHeaderError("the connection closed inside its PROXY header")
        length -= len(chunk)


# -- X-Forwarded-For, X-Forwarded-Proto, Forwarded ------------------------------------------


class ForwardedPolicy:
    """Which peers may say who the client is (``--forwarded-allow-ips``), and how.

    ``allow_ips``: a comma-separated string or a list of IP addresses, networks
    (``10.0.0.0/8``), other literals (matched as strings), or ``*`` for every peer.
    """

    def __init__(self, allow_ips: str | Iterable[str] = "127.0.0.1") -> None:
        items = allow_ips.split(",") if isinstance(allow_ips, str) else list(allow_ips)
        items = [item.strip() for item in items if item.strip()]
        self.always = "*" in items
        self.networks: list[Any] = []
        self.literals: set[str] = set()
        for item in items:
            try:
                self.networks.append(ipaddress.ip_network(item, strict=False))
            except ValueError:
                self.literals.add(item)

    def __repr__(self) -> str:
        return f"<ForwardedPolicy {'*' if self.always else [*map(str, self.networks), *self.literals]}>"

    def trusts_host(self, host: str | None) -> bool:
        if self.always:
            return True
        if not host:
            return False
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return host in self.literals
        return any(address in network for network in self.networks)

    def trusts(self, peer: Any) -> bool:
        """Is the connection's peer (``getpeername()``) a trusted proxy?"""
        host = peer[0] if isinstance(peer, tuple) and peer else (peer or None)
        return self.trusts_host(host)

    def client_host(self, hosts: list[str]) -> str | None:
        """The client among a proxy chain's addresses: the right-most untrusted one."""
        if not hosts:
            return None
        if self.always:
            return hosts[0]
        for host in reversed(hosts):
            if not self.trusts_host(host):
                return host
        return hosts[0]  # every one is a trusted proxy: the first is the client

    def apply(self, request: Any) -> None:
        """Set ``request.client`` and ``request.scheme`` from the proxy's fields (call only
        for a request whose peer :meth:`trusts`; the HTTP server calls it only for a request
        that has one of ``FORWARDED_FIELDS``, which its parser marks)."""
        headers = request.headers
        forwarded = headers.get("forwarded")
        if forwarded is not None and headers.get("x-forwarded-for") is None:
            hosts, proto = _parse_forwarded(forwarded)
        else:
            xff = headers.get("x-forwarded-for")
            hosts = [h.strip() for h in xff.split(",") if h.strip()] if xff is not None else []
            proto = (headers.get("x-forwarded-proto") or "").strip().lower() or None
        if proto in _SCHEMES:
            request.scheme = proto
        host = self.client_host(hosts)
        if host:
            request.client = (host, 0)


def _parse_forwarded(value: str) -> tuple[list[str], str | None]:
    """The ``for`` addresses (in order) and the last ``proto`` of an RFC 7239 field."""
    hosts: list[str] = []
    proto = None
    for element in value.split(","):
        for pair in element.split(";"):
            name, _, token = pair.strip().partition("=")
            token = token.strip().strip('"')
            name = name.strip().lower()
            if name == "for" and token:
                hosts.append(_node_host(token))
            elif name == "proto" and token:
                proto = token.lower()
    return hosts, proto


def _node_host(node: str) -> str:
    """An RFC 7239 node without its port: ``"[2001:db8::1]:4711"`` -> ``2001:db8::1``."""
    if node.startswith("["):
        return node[1 : node.find("]")] if "]" in node else node
    host, sep, _port_part = node.rpartition(":")
    return host if sep and host.count(":") == 0 else node
