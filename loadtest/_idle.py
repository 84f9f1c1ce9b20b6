"""Memory per idle connection, for ``echo.py`` (workload ``idle``) and ``http_hello.py
--idle-conns N``: the server's resident memory before and after N connections that each had one
exchange answered, so that each waits idle for the next.

Open a few connections and close them (warm-up), wait ``settle`` s, read the server's RSS
(psutil), open N connections in batches of 100 (each with one exchange, checked), wait
``settle`` s, read it again: (after - before) / N.  Connections close with an RST (SO_LINGER 0),
so no TIME_WAIT piles up; RLIMIT_NOFILE is raised to its hard limit first (a server started
afterwards inherits it).
"""

from __future__ import annotations

import http.client
import socket
import struct
import time
from collections.abc import Callable

import _bench
from _server import HOST
from peers._serve import BODY, raise_nofile

WARM_CONNS = 10
BATCH = 100
HTTP_REQUEST = b"GET /hello HTTP/1.1\r\nHost: bench\r\n\r\n"
KEEPALIVE = "600"


def echo_answered(sock: socket.socket) -> bool:
    return sock.recv(1) == b"x"


def http_answered(sock: socket.socket) -> bool:
    """One response read with the standard library's parser: 200 Hello, World!?"""
    response = http.client.HTTPResponse(sock)
    response.begin()
    return response.status == 200 and response.read() == BODY


def ask_all(socks: list[socket.socket], request: bytes, answered: Callable[[socket.socket], bool]) -> int:
    """Send ``request`` on every connection, then read every answer: how many were right."""
    for s in socks:
        s.sendall(request)
    return sum(answered(s) for s in socks)


def open_idle(port: int, count: int, request: bytes, answered: Callable[[socket.socket], bool]) -> list:
    """``count`` connections, each with one exchange answered, closing with an RST."""
    socks = []
    try:
        for _ in range(count):
            s = socket.create_connection((HOST, port), timeout=30)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            socks.append(s)
        if ask_all(socks, request, answered) != count:
            raise RuntimeError(f"a first exchange was not answered right ({request[:16]!r}...)")
    except BaseException:
        _bench.close_all(socks)
        raise
    return socks


def measure(port: int, wanted: int, rss_kib: Callable[[], int], settle: float, request: bytes,
            answered: Callable[[socket.socket], bool], again: bool = False) -> dict:
    """Open the idle connections on a running server and measure; with ``again``, every
    connection is asked once more afterwards (``second_answered``: how many answered right)."""
    limit = raise_nofile()
    n = min(wanted, limit - 64)  # the largest count this machine allows
    if n < 100:
        raise RuntimeError(f"RLIMIT_NOFILE is {limit}: too few descriptors for an idle test")
    _bench.close_all(open_idle(port, WARM_CONNS, request, answered))
    time.sleep(settle)
    rss0 = rss_kib()
    socks: list[socket.socket] = []
    started = time.monotonic()
    try:
        while len(socks) < n:
            socks += open_idle(port, min(BATCH, n - len(socks)), request, answered)
        opened = time.monotonic() - started
        time.sleep(settle)
        rss1 = rss_kib()
        more = {"second_answered": ask_all(socks, request, answered)} if again else {}
    finally:
        _bench.close_all(socks)
    return {"conns": n, "conns_wanted": wanted, "rss0_kib": rss0, "rss1_kib": rss1,
            "kib_per_conn": (rss1 - rss0) / n, "bytes_per_conn": 1024 * (rss1 - rss0) / n,
            "open_seconds": opened, **more}


def describe(result: dict) -> str:
    """RSS before -> after, and how long the connections took to open."""
    return (f"(RSS {result['rss0_kib'] / 1024:.1f} -> {result['rss1_kib'] / 1024:.1f} MiB, "
            f"{result['conns']} conns opened in {result['open_seconds']:.1f}s)")


def summarise(samples: _bench.Samples, impls: list[str]) -> list[dict]:
    """A row per server: the median bytes (and KiB) per connection, its spread and fibernet's
    ratio, the fewest connections a round opened, RSS before and after (MiB, medians), and
    whether every connection answered again in every round (None when not asked)."""
    rows = []
    for row in _bench.summary_rows(samples, "idle", impls, "bytes_per_conn", ("kib_per_conn",),
                                   keep_empty=True):
        results = samples.results.get(("idle", row["impl"]), [])
        again = [r["second_answered"] == r["conns"] for r in results if "second_answered" in r]
        rows.append({**row, "conns": min((r["conns"] for r in results), default=None),
                     "rss0_mib": _bench.median(r["rss0_kib"] / 1024 for r in results),
                     "rss1_mib": _bench.median(r["rss1_kib"] / 1024 for r in results),
                     "second_ok": all(again) if again else None, "failed_rounds": row["errors"]})
    return rows


def render(rows: list[dict]) -> str:
    fixed, ok = _bench.fmt_fixed, {True: "yes", False: "NO", None: "-"}
    table = [[r["impl"], "-" if r["conns"] is None else f"{r['conns']:,}", fixed(r["bytes_per_conn"], 0),
              fixed(r["kib_per_conn"], 2), _bench.fmt_pct(r["spread"]), fixed(r["rss0_mib"]),
              fixed(r["rss1_mib"]), ok[r["second_ok"]], fixed(r["ratio"], 2),
              f"{r['rounds']}" + (f" ({r['failed_rounds']} failed)" if r["failed_rounds"] else "")]
             for r in rows]
    return _bench.format_table(["server", "idle conns", "B/conn", "KiB/conn", "spread", "RSS before MiB",
                                "RSS after MiB", "2nd req all OK", "fibernet ratio", "rounds"], table)


def http_server_options(impl: str, conns: int) -> list[str]:
    """What an HTTP server's command line needs for N idle connections kept for the whole run
    (gevent.pywsgi has no keep-alive timeout)."""
    if impl.startswith("fibernet"):
        return ["--keepalive-timeout", KEEPALIVE, "--max-connections", str(conns + 1000)]
    return ["--timeout-keep-alive", KEEPALIVE] if impl == "uvicorn" else []
