"""The idle mode of ``http_hello.py`` (``--idle-conns N``): memory per idle keep-alive
HTTP connection.

Per server (in a fresh driver, rounds interleaved as for the hello runs): start it with a
keep-alive timeout long enough for the run (fibernet ``--keepalive-timeout 600
--max-connections N+1000``, uvicorn ``--timeout-keep-alive 600``; gevent.pywsgi has none),
open 10 keep-alive connections with one ``GET /hello`` each and close them (warm-up), read
the server's VmRSS (``/proc/PID/status``, the process and its descendants), open N
connections in batches of 100, each with one request answered (so each is idle between
requests, waiting for the next head), wait 2 s (fibernet parks a connection idle for 1 s),
read VmRSS again.  Reported: (RSS after - RSS before) / N, in bytes and KiB.  Then every
connection sends a second request, and the run counts the ones answered 200 ``Hello,
World!`` (all must be).  Connections close with an
RST (SO_LINGER 0), so no TIME_WAIT piles up.  The driver raises its RLIMIT_NOFILE to the hard
limit before it starts the server, which inherits it.
"""

from __future__ import annotations

import http.client
import socket
import struct
import time
from collections.abc import Callable

import _bench
from peers._serve import raise_nofile

REQUEST = b"GET /hello HTTP/1.1\r\nHost: bench\r\n\r\n"
BODY = b"Hello, World!"
WARM_CONNS = 10
BATCH = 100
SETTLE = 2.0  # longer than fibernet's park_after (1 s): every idle connection has parked
KEEPALIVE = "600"


def server_options(impl: str, conns: int) -> list[str]:
    """What a server's command line needs for N idle connections kept for the whole run."""
    if impl.startswith("fibernet"):
        return ["--keepalive-timeout", KEEPALIVE, "--max-connections", str(conns + 1000)]
    if impl == "uvicorn":
        return ["--timeout-keep-alive", KEEPALIVE]
    return []


def read_response(sock: socket.socket) -> tuple[int, bytes]:
    """One response (the standard library's parser): (status, body)."""
    response = http.client.HTTPResponse(sock)
    response.begin()
    return response.status, response.read()


def ask_all(socks: list[socket.socket]) -> int:
    """Send the request on every connection, then read every answer: how many were right."""
    for s in socks:
        s.sendall(REQUEST)
    good = 0
    for s in socks:
        status, body = read_response(s)
        good += status == 200 and body == BODY
    return good


def open_idle(port: int, count: int) -> list[socket.socket]:
    """``count`` keep-alive connections, each with one request answered."""
    linger = struct.pack("ii", 1, 0)
    socks = []
    try:
        for _ in range(count):
            s = socket.create_connection(("127.0.0.1", port), timeout=30)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
            socks.append(s)
        if ask_all(socks) != count:
            raise RuntimeError("a first request was not answered 200 Hello, World!")
    except BaseException:
        _bench.close_all(socks)
        raise
    return socks


def idle_load(port: int, conns: int, rss_kib: Callable[[], int]) -> dict:
    """Open the idle connections on a running server and measure; see the docstring."""
    limit = raise_nofile()
    n = min(conns, limit - 64)
    if n < 100:
        raise RuntimeError(f"RLIMIT_NOFILE is {limit}: too few descriptors for an idle test")
    _bench.close_all(open_idle(port, WARM_CONNS))
    time.sleep(SETTLE)
    rss0 = rss_kib()
    socks: list[socket.socket] = []
    started = time.monotonic()
    try:
        while len(socks) < n:
            socks += open_idle(port, min(BATCH, n - len(socks)))
        opened = time.monotonic() - started
        time.sleep(SETTLE)
        rss1 = rss_kib()
        answered = ask_all(socks)
    finally:
        _bench.close_all(socks)
    result = {
        "conns": n,
        "conns_wanted": conns,
        "rss0_kib": rss0,
        "rss1_kib": rss1,
        "kib_per_conn": (rss1 - rss0) / n,
        "bytes_per_conn": (rss1 - rss0) * 1024 / n,
        "second_answered": answered,
        "open_seconds": opened,
    }
    result["summary"] = (
        f"{result['bytes_per_conn']:.0f} B/conn (RSS {rss0 / 1024:.1f} -> {rss1 / 1024:.1f} MiB, "
        f"{n} conns opened in {opened:.1f}s), second request answered on {answered}/{n}"
    )
    return result


def summarise(samples: _bench.Samples, impls: list[str], workload: str) -> list[dict]:
    ours = _bench.median(samples.values(workload, "fibernet", "bytes_per_conn"))
    rows = []
    for impl in impls:
        per_conn = samples.values(workload, impl, "bytes_per_conn")
        results = samples.results.get((workload, impl), [])
        rows.append(
            {
                "impl": impl,
                "bytes_per_conn": _bench.median(per_conn),
                "spread": _bench.spread(per_conn),
                "conns": min((r["conns"] for r in results), default=None),
                "second_ok": all(r["second_answered"] == r["conns"] for r in results) and bool(results),
                "rss1_mib": _bench.median(r["rss1_kib"] / 1024 for r in results),
                "rounds": len(results),
                "failed_rounds": len(samples.errors.get((workload, impl), [])),
                "ratio": None if impl == "fibernet" else _bench.ratio(ours, _bench.median(per_conn)),
            }
        )
    return rows


BAR_BYTES = 2048  # issue 18: at most 2 KB per idle keep-alive HTTP connection


def check_bar(rows: list[dict]) -> list[dict]:
    ours = next(r for r in rows if r["impl"] == "fibernet")
    value = ours["bytes_per_conn"]
    return [
        {
            "bar": f"fibernet: idle keep-alive HTTP connection <= {BAR_BYTES} B, every one answers again",
            "measured": None
            if value is None
            else f"{value:.0f} B/conn, second requests all answered: {ours['second_ok']}",
            "pass": None if value is None else value <= BAR_BYTES and ours["second_ok"],
        }
    ]


def render(rows: list[dict]) -> str:
    return _bench.format_table(
        [
            "server",
            "idle conns",
            "B/conn",
            "KiB/conn",
            "spread",
            "RSS after MiB",
            "2nd req all OK",
            "fibernet ratio",
            "rounds",
        ],
        [
            [
                r["impl"],
                r["conns"] if r["conns"] is not None else "-",
                f"{r['bytes_per_conn']:.0f}" if r["bytes_per_conn"] is not None else "-",
                f"{r['bytes_per_conn'] / 1024:.2f}" if r["bytes_per_conn"] is not None else "-",
                _bench.fmt_pct(r["spread"]) if r["spread"] is not None else "-",
                f"{r['rss1_mib']:.1f}" if r["rss1_mib"] is not None else "-",
                "yes" if r["second_ok"] else "NO",
                f"{r['ratio']:.2f}" if r["ratio"] is not None else "-",
                f"{r['rounds']}" + (f" ({r['failed_rounds']} failed)" if r["failed_rounds"] else ""),
            ]
            for r in rows
        ],
    )
