"""WebSocket echo benchmark: fibernet beside the websockets library's server and uvicorn's.

Run from the repository root, the peers from their own environment::

    fibernet loadtest --make-env /tmp/peers ws_echo          # 3 rounds
    fibernet loadtest --make-env /tmp/peers ws_echo --quick  # 1 round of 2 s
    python loadtest/peers/ws_fibernet.py --port 8765                        # one server, foreground

Servers (``loadtest/peers/ws_*.py``, each in its own process pinned to ``--server-cpu``),
all echoing every message on 127.0.0.1, with no compression and no keep-alive pings (so
that the numbers are the protocol's and the server's, not zlib's)::

    fibernet            fibernet.server.http.http_server with an app that accepts the
                        WebSocket and echoes (``for m in ws: ws.send(m)``), run by run_server
                        as ``fibernet serve`` runs it (one scheduler thread)
    websockets          the websockets library's asyncio server (websockets.asyncio.server)
    uvicorn-websockets  uvicorn (uvloop, httptools) with an ASGI echo app, --ws websockets
    uvicorn-wsproto     the same with --ws wsproto (the library fibernet uses)

One measurement is a fresh load-generator child pinned to ``--client-cpu`` that starts the
server, opens ``--conns`` WebSockets (a real handshake each) and runs a closed loop: each
connection sends one masked text frame of ``--size`` bytes and waits for the whole echoed
frame (checked byte for byte on the first echo of each connection, by length after) before
the next.  The client is a raw level-triggered epoll loop that sends one precomputed frame,
so the client's cost per message is that of a TCP echo client.  After ``--warmup`` seconds,
a ``--duration`` window: messages/s, and the server's CPU time (user + system, all threads,
/proc/PID/stat) per message, which stays valid when the client is the bottleneck.
``fibernet ratio`` = fibernet's us/msg / that server's (below 1: fibernet cheaper); ``rate
ratio`` = fibernet's msgs/s / that server's.  Medians over interleaved rounds.
"""

from __future__ import annotations

import base64
import os
import select
import shlex
import socket
import struct
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import _bench  # noqa: E402
from _bench import fmt_num  # noqa: E402
from _server import ServerProcess, pinned  # noqa: E402
from echo import CLIENT_BOUND, STALL_SECONDS, Mark  # noqa: E402
from peers import _serve  # noqa: E402

MASK = b"\x1f\x2e\x3d\x4c"


# the servers (loadtest/peers/NAME.py ARGS), by implementation
SERVERS = {
    "fibernet": ("ws_fibernet",), "websockets": ("ws_websockets",),
    "uvicorn-websockets": ("ws_uvicorn", "--ws", "websockets"),
    "uvicorn-wsproto": ("ws_uvicorn", "--ws", "wsproto"),
}
IMPLS = tuple(SERVERS)


# --------------------------------------------------------------------------
# the load generator (the child side)


def frame(payload: bytes, mask: bytes | None) -> bytes:
    """One final text frame (masked with ``mask`` for a client's)."""
    n = len(payload)
    bit = 0x80 if mask else 0
    head = bytes([0x81, bit | n]) if n < 126 else bytes([0x81, bit | 126]) + struct.pack("!H", n)
    if not mask:
        return head + payload
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return head + mask + masked


def open_ws(host: str, port: int) -> socket.socket:
    sock = socket.create_connection((host, port), timeout=10)
    _serve.nodelay(sock)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        f"GET / HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(4096)
        if not chunk:
            raise RuntimeError(f"handshake: connection closed after {head!r}")
        head += chunk
    if not head.startswith(b"HTTP/1.1 101"):
        raise RuntimeError(f"handshake refused: {head[:200]!r}")
    if not head.endswith(b"\r\n\r\n"):
        raise RuntimeError("bytes after the 101 before any message was sent")
    sock.settimeout(None)
    return sock


def measure(workload: str, impl: str, params: dict) -> dict:
    _serve.raise_nofile()
    cmd = _serve.command(*SERVERS[impl], host=params["host"])
    with ServerProcess(cmd, params["server_cpu"], name=impl) as server:
        return echo_loop(server.pid, server.port, params)


def echo_loop(server_pid: int, port: int, params: dict) -> dict:
    size, nconns, host = params["size"], params["conns"], params["host"]
    payload = (b"fibernet-ws-echo-0123456789abcdef\n" * (size // 34 + 1))[:size]
    request, reply = frame(payload, MASK), frame(payload, None)
    socks = [open_ws(host, port) for _ in range(nconns)]
    ep = select.epoll(nconns)
    top = max(s.fileno() for s in socks) + 1
    recv_into, sendall, left = [None] * top, [None] * top, [0] * top
    got = [bytearray() for _ in range(top)]  # the first echo of each, checked byte for byte
    for s in socks:
        fd = s.fileno()
        recv_into[fd], sendall[fd], left[fd] = s.recv_into, s.sendall, len(reply)
        ep.register(fd, select.EPOLLIN)
    buf = bytearray(65536)
    view = memoryview(buf)
    msgs, marks = 0, []
    cpus = sorted(os.sched_getaffinity(0) | os.sched_getaffinity(server_pid))
    try:
        for s in socks:
            s.sendall(request)
        deadline = time.monotonic() + params["warmup"]
        last_progress, last_msgs = time.monotonic(), 0
        while True:
            for fd, _ev in ep.poll(1.0):
                n = recv_into[fd](buf)
                if not n:
                    raise RuntimeError("the server closed a WebSocket mid-run")
                if got[fd] is not None:
                    got[fd] += view[:n]
                rest = left[fd] - n
                if rest > 0:
                    left[fd] = rest
                    continue
                if rest:
                    raise RuntimeError(f"echo too long: {len(reply) - rest} bytes, not {len(reply)}")
                if got[fd] is not None:
                    if bytes(got[fd]) != reply:
                        raise RuntimeError(f"wrong echo: {bytes(got[fd])[:80]!r}")
                    got[fd] = None
                left[fd] = len(reply)
                sendall[fd](request)
                msgs += 1
            now = time.monotonic()
            if now >= deadline:
                marks.append(Mark.take(msgs, server_pid, cpus))
                if len(marks) == 2:
                    break
                deadline = marks[0].wall + params["duration"]
            if msgs != last_msgs:
                last_progress, last_msgs = now, msgs
            elif now - last_progress > STALL_SECONDS:
                raise RuntimeError(f"no echo for {STALL_SECONDS:g}s after {msgs} messages")
    finally:
        ep.close()
        for s in socks:
            s.close()
    a, b = marks
    window, count = b.wall - a.wall, b.msgs - a.msgs
    server = (b.srv_user - a.srv_user) + (b.srv_sys - a.srv_sys)
    client = (b.cli_user - a.cli_user) + (b.cli_sys - a.cli_sys)
    out = {
        "rate": count / window, "us_per_msg": 1e6 * server / count, "server_cpu": server / window,
        "client_cpu": client / window, "msgs": count,
    }
    out["summary"] = (
        f"{fmt_num(out['rate'])} msgs/s, server {out['us_per_msg']:.1f} us/msg "
        f"(cpu {_bench.fmt_pct(out['server_cpu'])}), client cpu {_bench.fmt_pct(out['client_cpu'])}"
    )
    return out


# --------------------------------------------------------------------------
# the parent: plan, rounds, table


def summarise(samples: _bench.Samples, impls: list[str], workload: str) -> str:
    med = lambda impl, key: _bench.median(samples.values(workload, impl, key))  # noqa: E731
    ours_us, ours_rate = med("fibernet", "us_per_msg"), med("fibernet", "rate")
    rows = []
    for impl in impls:
        errors = len(samples.errors.get((workload, impl), []))
        us, rate, client = med(impl, "us_per_msg"), med(impl, "rate"), med(impl, "client_cpu")
        bound = "*" if client is not None and client >= CLIENT_BOUND else ""
        rows.append(
            [
                impl, fmt_num(rate) + bound,
                _bench.fmt_pct(_bench.spread(samples.values(workload, impl, "rate"))),
                "-" if us is None else f"{us:.1f}", _bench.fmt_pct(med(impl, "server_cpu")),
                _bench.fmt_pct(client),
                "-" if impl == "fibernet" else _bench.fmt_ratio(_bench.ratio(ours_us, us)),
                "-" if impl == "fibernet" else _bench.fmt_ratio(_bench.ratio(ours_rate, rate)),
                f"ERROR x{errors}" if errors else len(samples.values(workload, impl, "rate")),
            ]
        )
    head = [
        "server", "msgs/s", "spread", "server us/msg", "srv CPU", "cli CPU", "fibernet CPU x",
        "fibernet rate x", "rounds",
    ]
    return _bench.format_table(head, rows)


def parse_args(argv=None):
    parser = _bench.argument_parser(__doc__)
    parser.add_argument("--quick", action="store_true", help="1 round of 2 s after 0.5 s")
    parser.add_argument("--rounds", type=int, help="interleaved rounds (default 3, --quick 1)")
    parser.add_argument("--duration", type=float, help="measured seconds (default 5, --quick 2)")
    parser.add_argument("--warmup", type=float, help="warm-up seconds (default 1, --quick 0.5)")
    parser.add_argument("--size", type=int, default=64, help="message size in bytes, < 65536 (default 64)")
    parser.add_argument("--conns", type=int, default=50, help="WebSocket connections (default 50)")
    parser.add_argument("--impls", default=",".join(IMPLS), help="comma list (default: %(default)s)")
    parser.add_argument("--server-cpu", default="0", help="CPU of the server (default 0; 'none')")
    parser.add_argument("--client-cpu", default="1", help="CPU of the load generator (default 1; 'none')")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--timeout", type=float, default=120, help="per-measurement timeout, seconds")
    parser.add_argument("--json", metavar="PATH", help="also write all results as JSON to PATH")
    args = parser.parse_args(argv)
    _bench.fill_defaults(
        args,
        {"rounds": 1, "duration": 2.0, "warmup": 0.5}
        if args.quick
        else {"rounds": 3, "duration": 5.0, "warmup": 1.0},
    )
    if not 0 < args.size < 65536:
        parser.error("--size: 1 to 65535 bytes")
    args.impls = _bench.comma_list(parser, args.impls, IMPLS, "--impls")
    if "fibernet" not in args.impls:
        parser.error("--impls must include fibernet")
    args.server_cpu = _bench.cpu_option(args.server_cpu)
    args.client_cpu = _bench.cpu_option(args.client_cpu)
    _bench.check_cpu(args.server_cpu)
    _bench.check_cpu(args.client_cpu)
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    params = {k: getattr(args, k) for k in ("size", "conns", "host", "warmup", "duration", "server_cpu")}
    workload = f"ws-echo-{args.size}"
    plan = [(workload, impl, params) for impl in args.impls]
    print(f"command: {_bench.command_line()}", flush=True)
    print(_bench.describe_plan(__file__, plan, args.rounds, args.client_cpu), flush=True)
    server = pinned(_serve.command("ws_fibernet", host=args.host), args.server_cpu)
    print("  server: " + shlex.join(server), flush=True)
    samples = _bench.run_interleaved(__file__, plan, args.rounds, args.client_cpu, args.timeout)
    print(
        f"\nWebSocket echo, closed loop, {args.conns} connections, {args.size} B text messages, "
        f"{args.duration:g} s window after {args.warmup:g} s, medians of {args.rounds} round(s)"
    )
    print(summarise(samples, args.impls, workload))
    print(
        "fibernet CPU x = fibernet us/msg / row us/msg (below 1: fibernet cheaper); fibernet rate x = "
        f"fibernet msgs/s / row msgs/s.  * client at >= {CLIENT_BOUND:.0%} of its CPU: msgs/s is the "
        "client's there, us/msg still the server's."
    )
    _bench.save_json(
        args.json, {"command": _bench.command_line(), "args": vars(args), "samples": samples.to_json()}
    )
    return 1 if samples.errors else 0


if __name__ == "__main__":
    if _bench.is_child():
        sys.exit(_bench.serve_child(measure))
    sys.exit(main())
