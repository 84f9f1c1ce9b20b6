"""WebSocket echo benchmark: fibernet beside the websockets server and uvicorn's (websockets and
wsproto), loadtest/peers/ws_*.py: --conns WebSockets in a closed loop of --size byte text
frames, msgs/s and server CPU per message, medians over interleaved rounds
(docs/pages/benchmarks.md, "WebSocket echo").
"""

from __future__ import annotations

import base64
import os
import shlex
import socket
import struct
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.dirname(HERE)]  # its own modules, and fibernet from the checkout

import _bench  # noqa: E402
from _bench import fmt_num, fmt_pct, fmt_ratio  # noqa: E402
from _server import WS, peer, pinned  # noqa: E402
from echo import CLIENT_BOUND, closed_loop, start_server  # noqa: E402
from peers import _serve  # noqa: E402

MASK = b"\x1f\x2e\x3d\x4c"
IMPLS = tuple(WS)


def frame(payload: bytes, mask: bytes | None) -> bytes:
    """One final text frame (masked with ``mask`` for a client's)."""
    n, bit = len(payload), 0x80 if mask else 0
    head = bytes([0x81, bit | n]) if n < 126 else bytes([0x81, bit | 126]) + struct.pack("!H", n)
    if not mask:
        return head + payload
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def open_ws(host: str, port: int) -> socket.socket:
    sock = socket.create_connection((host, port), timeout=10)
    _serve.nodelay(sock)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(f"GET / HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(4096)
        if not chunk:
            sock.close()
            raise RuntimeError(f"handshake: connection closed after {head!r}")
        head += chunk
    if not head.startswith(b"HTTP/1.1 101") or not head.endswith(b"\r\n\r\n"):
        sock.close()
        raise RuntimeError(f"handshake refused, or bytes after the 101: {head[:200]!r}")
    sock.settimeout(None)
    return sock


def measure(workload: str, impl: str, params: dict) -> dict:
    _serve.raise_nofile()
    payload = (b"fibernet-ws-echo-0123456789abcdef\n" * (params["size"] // 34 + 1))[: params["size"]]
    with start_server(WS, impl, params) as server:
        socks = []
        try:
            for _ in range(params["conns"]):
                socks.append(open_ws(params["host"], server.port))
        except BaseException:
            _bench.close_all(socks)
            raise
        return closed_loop(server, socks, frame(payload, MASK), frame(payload, None), params)


def summarise(samples: _bench.Samples, impls: list[str], workload: str) -> str:
    ours_rate, rows = samples.median(workload, "fibernet", "rate"), []
    for r in _bench.summary_rows(samples, workload, impls, "us_per_msg", ("rate", "server_cpu", "client_cpu"),
                                 keep_empty=True):
        bound = "*" if r["client_cpu"] is not None and r["client_cpu"] >= CLIENT_BOUND else ""
        ours = r["impl"] == "fibernet"
        rows.append([r["impl"], fmt_num(r["rate"]) + bound,
                     fmt_pct(_bench.spread(samples.values(workload, r["impl"], "rate"))),
                     _bench.fmt_fixed(r["us_per_msg"]), fmt_pct(r["server_cpu"]), fmt_pct(r["client_cpu"]),
                     "-" if ours else fmt_ratio(r["ratio"]),
                     "-" if ours else fmt_ratio(_bench.ratio(ours_rate, r["rate"])),
                     f"ERROR x{r['errors']}" if r["errors"] else r["rounds"]])
    return _bench.format_table(["server", "msgs/s", "spread", "server us/msg", "srv CPU", "cli CPU",
                                "fibernet CPU x", "fibernet rate x", "rounds"], rows)


def parse_args(argv=None):
    parser = _bench.argument_parser(__doc__)
    _bench.round_options(parser, "1 round of 2 s after 0.5 s", "measured seconds (default 5, --quick 2)",
                         "warm-up seconds (default 1, --quick 0.5)")
    add = parser.add_argument
    add("--size", type=int, default=64, help="message size in bytes, < 65536 (default 64)")
    add("--conns", type=int, default=50, help="WebSocket connections (default 50)")
    add("--impls", default=",".join(IMPLS), help="comma list (default: %(default)s)")
    add("--server-cpu", default="0", help="CPU of the server (default 0; 'none')")
    add("--client-cpu", default="1", help="CPU of the load generator (default 1; 'none')")
    add("--host", default="127.0.0.1")
    add("--timeout", type=float, default=120, help="per-measurement timeout, seconds")
    args = parser.parse_args(argv)
    _bench.fill_defaults(args, {"rounds": 1, "duration": 2.0, "warmup": 0.5} if args.quick
                         else {"rounds": 3, "duration": 5.0, "warmup": 1.0})
    if not 0 < args.size < 65536:
        parser.error("--size: 1 to 65535 bytes")
    args.impls = _bench.comma_list(parser, args.impls, IMPLS, "--impls")
    if "fibernet" not in args.impls:
        parser.error("--impls must include fibernet")
    args.server_cpu, args.client_cpu = _bench.cpu_option(args.server_cpu), _bench.cpu_option(args.client_cpu)
    _bench.check_cpu(args.server_cpu)
    _bench.check_cpu(args.client_cpu)
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    params = {k: getattr(args, k) for k in ("size", "conns", "host", "warmup", "duration", "server_cpu")}
    workload = f"ws-echo-{args.size}"
    plan = [(workload, impl, params) for impl in args.impls]
    command = _bench.command_line()
    server = shlex.join(pinned(peer(WS, "fibernet", host=args.host), args.server_cpu))
    print(f"command: {command}\n{_bench.describe_plan(__file__, plan, args.rounds, args.client_cpu)}\n"
          f"  server: {server}", flush=True)
    samples = _bench.run_interleaved(__file__, plan, args.rounds, args.client_cpu, args.timeout)
    print(f"\nWebSocket echo, closed loop, {args.conns} connections, {args.size} B text messages, "
          f"{args.duration:g} s window after {args.warmup:g} s, medians of {args.rounds} round(s)")
    print(summarise(samples, args.impls, workload))
    print("fibernet CPU x = fibernet us/msg / row us/msg (below 1: fibernet cheaper); fibernet rate x = "
          f"fibernet msgs/s / row msgs/s.  * client at >= {CLIENT_BOUND:.0%} of its CPU: msgs/s is the "
          "client's there, us/msg still the server's.")
    _bench.save_json(args.json, {"command": command, "args": vars(args), "samples": samples.to_json()})
    return 1 if samples.errors else 0


if __name__ == "__main__":
    if _bench.is_child():
        sys.exit(_bench.serve_child(measure))
    sys.exit(main())
