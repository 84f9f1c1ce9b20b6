"""TCP echo benchmark: fibernet's server beside gevent, asyncio, uvloop, trio and a raw epoll loop
(loadtest/peers/echo_*.py), the server and a load-generator child pinned to CPUs of their own:
msgs/s and server CPU per message in a closed loop (echo-SIZE), RSS per idle connection (idle),
or instructions per message (--callgrind); --ws: the same closed loop of text frames through
WebSocket servers (loadtest/peers/ws_*.py; ws_echo runs this).  docs/pages/benchmarks.md, "TCP
echo" and "WebSocket echo", has the bars.
"""

from __future__ import annotations

import base64
import os
import select
import shlex
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from functools import partial

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.dirname(HERE)]  # its own modules, and fibernet from the checkout

import _bench  # noqa: E402
import _callgrind  # noqa: E402
import _idle  # noqa: E402
import _proc  # noqa: E402
from _bench import fmt_fixed, fmt_num, fmt_pct  # noqa: E402
from _server import ECHO, WS, ServerProcess, peer, pinned  # noqa: E402
from peers import _serve  # noqa: E402

CLIENT_BOUND = 0.90  # client CPU fraction from which msgs/s measures the load generator
STALL_SECONDS = 15.0  # no echo at all for this long: the server is stuck
IMPLS = tuple(ECHO)
MASK = b"\x1f\x2e\x3d\x4c"  # (--ws: the client's frames are masked)
CALLGRIND_IMPLS = ("fibernet", "fibernet-pure", "uvloop-streams", "gevent")
CALLGRIND_BARS = {"uvloop-streams": 0.8, "gevent": 0.9}


def start_server(table: dict, impl: str, params: dict) -> ServerProcess:
    extra = ["--profile-out", params["profile_out"]] if params.get("profile_out") else []
    return ServerProcess(peer(table, impl, *extra, host=params["host"]), params["server_cpu"], name=impl)


# --------------------------------------------------------------------------
# the load generator (the child side)


@dataclass
class Mark:
    """Counters at one instant of a closed loop."""

    wall: float
    msgs: int
    srv_user: float
    srv_sys: float
    cli_user: float
    cli_sys: float
    busy: float  # CPU seconds the server's and the client's CPUs spent busy, anyone's work
    srv_ctxsw: int

    @classmethod
    def take(cls, msgs: int, server_pid: int, cpus: list[int]) -> Mark:
        su, ss = _proc.cpu_times(server_pid)
        t = os.times()
        busy, switches = _proc.cpus_busy(cpus), _proc.ctx_switches(server_pid)
        return cls(time.monotonic(), msgs, su, ss, t.user, t.system, busy, switches)


def closed_loop(server: ServerProcess, socks: list[socket.socket], request: bytes, reply: bytes,
                params: dict) -> dict:
    """Each connection sends ``request`` and waits for the whole ``reply`` (checked byte for byte
    on its first echo, by length after) before the next; ``params["warmup"]`` s, then a
    ``params["duration"]`` window.  A raw level-triggered epoll loop on blocking sockets:
    recv_into is only called when epoll says readable; sendall may block, but only while the
    server reads our message (it has no echo of ours left to send), so it cannot deadlock."""
    ep = select.epoll(len(socks))
    top = max(s.fileno() for s in socks) + 1
    recv_into, sendall, left = [None] * top, [None] * top, [0] * top
    got = [bytearray() for _ in range(top)]  # the first echo of each connection
    for s in socks:
        fd = s.fileno()
        recv_into[fd], sendall[fd], left[fd] = s.recv_into, s.sendall, len(reply)
        ep.register(fd, select.EPOLLIN)
    buf = bytearray(max(_serve.RECV_SIZE, len(reply)))
    view, poll, msgs, marks = memoryview(buf), ep.poll, 0, []
    profiling = params.get("profile", False)
    cpus = sorted(os.sched_getaffinity(0) | os.sched_getaffinity(server.pid))
    try:
        for s in socks:
            s.sendall(request)
        deadline = time.monotonic() + params["warmup"]
        last_progress, last_msgs = time.monotonic(), 0
        while True:
            for fd, _ev in poll(1.0):
                n = recv_into[fd](buf)
                if not n:
                    raise RuntimeError(f"the server closed a connection {len(reply) - left[fd]}/{len(reply)} "
                                       "bytes into an echo")
                if got[fd] is not None:
                    got[fd] += view[:n]
                rest = left[fd] - n
                if rest > 0:
                    left[fd] = rest
                    continue
                if rest:
                    raise RuntimeError(f"echo too long: {len(reply) - rest} bytes, not {len(reply)}")
                if got[fd] is not None:
                    if got[fd] != reply:
                        raise RuntimeError(f"wrong echo: {bytes(got[fd])[:80]!r}")
                    got[fd] = None
                left[fd] = len(reply)
                sendall[fd](request)
                msgs += 1
            now = time.monotonic()
            if now >= deadline:
                marks.append(Mark.take(msgs, server.pid, cpus))
                if len(marks) == 2:
                    break
                deadline = marks[0].wall + params["duration"]
                if profiling:
                    os.kill(server.pid, signal.SIGUSR2)
            if msgs != last_msgs:
                last_progress, last_msgs = now, msgs
            elif now - last_progress > STALL_SECONDS:
                server.check_alive()
                raise RuntimeError(f"no echo for {STALL_SECONDS:g}s after {msgs} messages: server stuck")
    finally:
        if profiling:  # the server writes its profile and exits: do not kill it before
            os.kill(server.pid, signal.SIGUSR1)
            try:
                server.proc.wait(30)
            except subprocess.TimeoutExpired:
                pass
        ep.close()
        _bench.close_all(socks)
    a, b = marks
    window, count = b.wall - a.wall, b.msgs - a.msgs
    if count <= 0:
        raise RuntimeError("no message completed in the window")
    srv_user, srv_sys = b.srv_user - a.srv_user, b.srv_sys - a.srv_sys
    cli = (b.cli_user - a.cli_user) + (b.cli_sys - a.cli_sys)
    result = {
        "conns": len(socks), "msgs": count, "msgs_total": msgs, "window": window, "rate": count / window,
        "us_per_msg": 1e6 * (srv_user + srv_sys) / count, "us_per_msg_sys": 1e6 * srv_sys / count,
        "server_cpu": (srv_user + srv_sys) / window, "client_cpu": cli / window,
        "client_us_per_msg": 1e6 * cli / count,
        # what else ran on these CPUs: a busy shared machine shows here
        "others_cpu": max(0.0, (b.busy - a.busy) - (srv_user + srv_sys) - cli) / window,
        "cpus_watched": cpus, "server_ctxsw_per_msg": (b.srv_ctxsw - a.srv_ctxsw) / count,
        "bytes_checked": msgs * len(reply),
    }
    result["summary"] = (f"{fmt_num(result['rate'])} msgs/s, server {result['us_per_msg']:.1f} us/msg "
                         f"(cpu {fmt_pct(result['server_cpu'])}), "
                         f"client cpu {fmt_pct(result['client_cpu'])}, "
                         f"others {fmt_pct(result['others_cpu'])}")
    return result


def frame(payload: bytes, mask: bytes | None) -> bytes:
    """One final WebSocket text frame (masked with ``mask`` for a client's)."""
    n, bit = len(payload), 0x80 if mask else 0
    head = bytes([0x81, bit | n]) if n < 126 else bytes([0x81, bit | 126]) + struct.pack("!H", n)
    if not mask:
        return head + payload
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def open_ws(sock: socket.socket, host: str, port: int) -> None:
    """The WebSocket handshake on ``sock``: the 101 answer and not a byte more."""
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(f"GET / HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(4096)
        if not chunk:
            raise RuntimeError(f"handshake: connection closed after {head!r}")
        head += chunk
    if not head.startswith(b"HTTP/1.1 101") or not head.endswith(b"\r\n\r\n"):
        raise RuntimeError(f"handshake refused, or bytes after the 101: {head[:200]!r}")


def echo_load(server: ServerProcess, params: dict) -> dict:
    """``conns`` connections (WebSockets with ``ws``) in the closed loop of ``size`` byte messages."""
    size, ws = params["size"], params.get("ws")
    msg = (b"fibernet-echo-0123456789abcdef\n" * (size // 31 + 1))[:size]
    socks = []
    try:
        for _ in range(params["conns"]):
            socks.append(socket.create_connection((params["host"], server.port), timeout=10))
            _serve.nodelay(socks[-1])
            if ws:
                open_ws(socks[-1], params["host"], server.port)
            socks[-1].settimeout(None)  # blocking: see closed_loop
    except BaseException:
        _bench.close_all(socks)
        raise
    request, reply = (frame(msg, MASK), frame(msg, None)) if ws else (msg, msg)
    return {"size": size, **closed_loop(server, socks, request, reply, params)}


def wait_quiet(cpus: list[int], limit: float, timeout: float) -> tuple[float, float]:
    """Wait (up to ``timeout`` s) until ``cpus`` are busy with at most ``limit`` CPUs of
    other work over a 0.25 s sample; returns (seconds waited, last busy level in CPUs)."""
    started = time.monotonic()
    while True:
        b0, t0 = _proc.cpus_busy(cpus), time.monotonic()
        time.sleep(0.25)
        busy = (_proc.cpus_busy(cpus) - b0) / (time.monotonic() - t0)
        waited = time.monotonic() - started
        if busy <= limit or waited >= timeout:
            return waited, busy


def bank_balance(path: str | None) -> float:
    """Seconds left in the run's time bank for waiting for quiet CPUs and retrying noisy runs: a
    file the parent creates (children run one at a time); none without a file."""
    try:
        with open(path) as fh:
            return max(0.0, float(fh.read()))
    except (TypeError, OSError, ValueError):
        return 0.0


def bank_spend(path: str | None, seconds: float) -> None:
    if path:
        left = max(0.0, bank_balance(path) - seconds)  # read before "w" truncates the file
        with open(path, "w") as fh:
            fh.write(repr(left))


def measure_echo(impl: str, params: dict) -> dict:
    """One echo measurement on quiet CPUs if the time bank allows: before each attempt wait up
    to ``quiet_timeout`` s for at most ``max_others`` CPUs of other work; after one with more,
    try again (``retries``); keep the attempt with the least.  Waits and retries are paid from
    the time bank (``--noise-budget``), so a busy machine cannot stretch the run without bound."""
    server_cpu = params["server_cpu"]
    cpus = sorted(os.sched_getaffinity(0) | ({server_cpu} if server_cpu is not None else set()))
    bank, limit, attempts = params.get("time_bank"), params.get("max_others", 0.0), []
    for attempt in range(1 + params.get("retries", 0)):
        started = time.monotonic()
        waited, busy = wait_quiet(cpus, limit, min(params.get("quiet_timeout", 0.0), bank_balance(bank)))
        with start_server(WS if params.get("ws") else ECHO, impl, params) as server:
            result = echo_load(server, params)
            if not params.get("profile_out"):
                server.check_alive()
        result.update(quiet_wait=waited, busy_before=busy)
        attempts.append(result)
        bank_spend(bank, time.monotonic() - started if attempt else waited)  # a retry is extra as a whole
        if result["others_cpu"] <= limit or bank_balance(bank) < params["warmup"] + params["duration"] + 1.0:
            break
    best = min(attempts, key=lambda r: r["others_cpu"])
    best.update(attempts=len(attempts), others_per_attempt=[r["others_cpu"] for r in attempts],
                quiet_wait_total=sum(r["quiet_wait"] for r in attempts))
    if len(attempts) > 1:
        best["summary"] += f" [best of {len(attempts)} attempts]"
    return best


def dispatch(workload: str, impl: str, params: dict) -> dict:
    if params["kind"] == "echo":
        result = measure_echo(impl, params)
    else:
        with start_server(ECHO, impl, params) as server:
            rss = lambda: (_proc.rss_bytes(server.pid) or 0) // 1024  # noqa: E731
            result = _idle.measure(server.port, params["conns"], rss, 0.5, b"x", _idle.echo_answered)
            server.check_alive()
        result["summary"] = f"{result['kib_per_conn']:.2f} KiB/conn " + _idle.describe(result)
    result["server_cpus"] = [params["server_cpu"]]
    return result


# --------------------------------------------------------------------------
# parent side: plan, summaries, tables


def size_label(size: int) -> str:
    return f"{size // 1024}KiB" if size >= 1024 and size % 1024 == 0 else f"{size}B"


def workload(args, size: int) -> str:
    return f"{'ws-' if args.ws else ''}echo-{size_label(size)}"


def build_plan(args) -> list[tuple[str, str, dict]]:
    common, plan = {"host": args.host, "server_cpu": args.server_cpu}, []
    for size in args.sizes if "echo" in args.workloads else []:
        params = {**common, "kind": "echo", "size": size, "conns": args.conns, "warmup": args.warmup,
                  "duration": args.duration, "max_others": args.max_others, "retries": args.retries,
                  "quiet_timeout": args.quiet_timeout, "time_bank": args.time_bank, "ws": args.ws}
        plan += [(workload(args, size), impl, params) for impl in args.impls]
    if "idle" in args.workloads:
        plan += [("idle", impl, {**common, "kind": "idle", "conns": args.idle_conns}) for impl in args.impls]
    return plan


def summarise_echo(samples: _bench.Samples, args) -> list[dict]:
    rows = []
    for size in args.sizes if "echo" in args.workloads else []:
        w = workload(args, size)
        medians = ("rate", "us_per_msg_sys", "server_cpu", "client_cpu", "others_cpu", "server_ctxsw_per_msg")
        for row in _bench.summary_rows(samples, w, args.impls, "us_per_msg", medians):
            values, cli = partial(samples.values, w, row["impl"]), row["client_cpu"]
            rows.append({**row, "size": size, "rate_spread": _bench.spread(values("rate")),
                         "us_min": min(values("us_per_msg"), default=None), "us_spread": row["spread"],
                         "client_bound": cli is not None and cli >= CLIENT_BOUND})
    return rows


def build_bars(args) -> list[_bench.Bar]:
    bars = []
    for size in args.sizes if "echo" in args.workloads else []:
        w, label = workload(args, size), size_label(size)
        for peer_impl, limit in (("gevent", 0.6), ("uvloop-streams", 1.0)):
            if peer_impl in args.impls:
                bars.append(_bench.Bar(w, "us_per_msg", f"{label}: server CPU/msg fibernet <= {limit:g}x "
                                       f"{peer_impl}", peer=peer_impl, max_ratio=limit, unit="us"))
        if "fibernet-t2" in args.impls:
            bars.append(_bench.Bar(w, "rate", f"{label}: msgs/s fibernet threads=2 >= 0.9x threads=1",
                                   ours="fibernet-t2", peer="fibernet", min_ratio=0.9, unit="msgs/s"))
    if "idle" in args.workloads:
        bars.append(_bench.Bar("idle", "kib_per_conn", f"idle memory at {args.idle_conns:,} conns: fibernet "
                               "<= 4 KiB/conn", max_value=4.0, unit="KiB/conn"))
    return bars


def _rounds(r: dict) -> str | int:
    return f"ERROR x{r['errors']}" if r["errors"] else r["rounds"]


def render_echo(rows: list[dict]) -> str:
    table = [[size_label(r["size"]), r["impl"], fmt_num(r["rate"]) + ("*" if r["client_bound"] else ""),
              fmt_pct(r["rate_spread"]), fmt_fixed(r["us_per_msg"]), fmt_fixed(r["us_per_msg_sys"]),
              fmt_pct(r["us_spread"]), fmt_fixed(r["us_min"]), fmt_pct(r["server_cpu"]),
              fmt_pct(r["client_cpu"]), fmt_pct(r["others_cpu"]), fmt_fixed(r["server_ctxsw_per_msg"], 3),
              _bench.fmt_ratio(r["ratio"]), _rounds(r)] for r in rows]
    return _bench.format_table(["size", "impl", "msgs/s", "spread", "server us/msg", "of it sys", "spread",
                                "min", "srv CPU", "cli CPU", "others", "srv ctxsw/msg", "fibernet ratio",
                                "rounds"], table)


def run_profile(args) -> int:
    """One echo run with the server under cProfile for the measured window; top rows by tottime."""
    import pstats

    size = args.sizes[0]
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "server.prof")
        params = {"host": args.host, "server_cpu": args.server_cpu, "kind": "echo", "size": size,
                  "conns": args.conns, "warmup": args.warmup, "duration": args.duration, "profile": True,
                  "profile_out": out}
        result = _bench.run_child(__file__, f"echo-{size_label(size)}", args.profile, params, args.client_cpu,
                                  args.timeout)
        print(f"{args.profile} {size_label(size)} under cProfile: {result['summary']}")
        print("(cProfile slows the server: read the shares, not the absolute times)\n")
        stats = pstats.Stats(out)
        if args.profile_save:
            stats.dump_stats(args.profile_save)
        stats.sort_stats("tottime").print_stats(args.profile_top)
    return 0


# --------------------------------------------------------------------------
# command line


def parse_args(argv=None):
    parser = _bench.parser(__doc__, quick="1 round, 2 s, 64 B only, 1,000 idle conns", cpu=None, timeout=300,
                           duration="measured seconds per echo run (default 5, --quick 2)",
                           warmup="warm-up seconds before the window (default 1, --quick 0.5)")
    add = parser.add_argument
    add("--sizes", "--size", help="comma list of message sizes in bytes (default 64,16384; --quick, --ws 64)")
    add("--conns", type=int, help="echo connections (default 100, --ws 50)")
    add("--ws", action="store_true", help=f"instead of TCP: WebSockets, servers {','.join(WS)}, text "
        "frames of < 65536 bytes, no idle workload (ws_echo runs this)")
    add("--idle-conns", type=int, help="idle connections (default 10000, --quick 1000)")
    add("--impls", help=f"comma list (default: {','.join(IMPLS)}; --callgrind: {','.join(CALLGRIND_IMPLS)})")
    _callgrind.options(parser, "message")
    add("--workloads", help="comma list of echo,idle (default: echo,idle)")
    add("--server-cpu", default="0", help="CPU of the server (default 0; 'none': no pinning)")
    add("--client-cpu", default="1", help="CPU of the load generator (default 1; 'none')")
    add("--host", default="127.0.0.1")
    add("--max-others", type=float, default=0.3, help="other work on the two CPUs (in CPUs) above which an "
        "echo run is noisy: wait for quiet before it, retry after it (default %(default)s)")
    add("--retries", type=int, default=1, help="extra attempts of a noisy echo run (default %(default)s)")
    add("--quiet-timeout", type=float, default=5, help="longest wait for quiet CPUs before a run, s "
        "(default %(default)s)")
    add("--noise-budget", type=float, default=120, help="seconds the whole run may spend on those waits and "
        "retries (default %(default)s)")
    add("--profile", metavar="IMPL", choices=IMPLS,
        help="instead: one echo run (first of --sizes) with IMPL's "
        "server under cProfile")
    add("--profile-top", type=int, default=25, help="rows of the profile (default 25)")
    add("--profile-save", metavar="PATH", help="also save the raw cProfile stats to PATH")
    args = _bench.parse(parser, argv, {"rounds": 1, "duration": 2.0, "warmup": 0.5, "idle_conns": 1000},
                        {"rounds": 3, "duration": 5.0, "warmup": 1.0, "idle_conns": 10_000})
    args.sizes = args.sizes or ("64" if args.quick or args.ws else "64,16384")
    args.conns = args.conns or (50 if args.ws else 100)
    args.workloads = args.workloads or ("echo" if args.ws else "echo,idle")
    args.time_bank = None  # set by main()
    args.server_cpu, args.client_cpu = _bench.cpu_option(args.server_cpu), _bench.cpu_option(args.client_cpu)
    try:
        args.sizes = [int(x) for x in args.sizes.split(",") if x.strip()]
    except ValueError:
        parser.error(f"--sizes: not a comma list of integers: {args.sizes!r}")
    if not args.sizes or min(args.sizes) < 1 or (args.ws and max(args.sizes) > 65535):
        parser.error("--sizes: positive sizes needed" + (", < 65536 with --ws" if args.ws else ""))
    if args.ws and (args.callgrind or args.profile or args.workloads != "echo"):
        parser.error("--ws: the echo workload only (no --callgrind, --profile or idle)")
    if args.callgrind:
        args.impls = _bench.comma_list(parser, args.impls or ",".join(CALLGRIND_IMPLS),
                                       (*IMPLS, "fibernet-pure"), "--impls")
        return args
    known = tuple(WS) if args.ws else IMPLS
    args.impls = _bench.comma_list(parser, args.impls or ",".join(known), known, "--impls")
    args.workloads = _bench.comma_list(parser, args.workloads, ("echo", "idle"), "--workloads")
    if "fibernet" not in args.impls:
        parser.error("--impls must include fibernet")
    if args.server_cpu is not None and args.server_cpu == args.client_cpu:
        print("warning: server and client pinned to the same CPU", file=sys.stderr)
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.callgrind:
        exchanges = [(f"echo {size_label(size)}", _callgrind.echo_exchange(size)) for size in args.sizes]
        command = lambda impl, port: peer(ECHO, impl, host=args.host, port=port)  # noqa: E731
        return _callgrind.main(args, exchanges, command, CALLGRIND_BARS)
    _bench.check_cpu(args.server_cpu)
    _bench.check_cpu(args.client_cpu)
    if args.profile:
        return run_profile(args)
    with tempfile.NamedTemporaryFile("w", prefix="echo-bank-", suffix=".txt") as bank:
        bank.write(repr(args.noise_budget))
        bank.flush()
        args.time_bank = bank.name
        plan = build_plan(args)
        server = peer(WS if args.ws else ECHO, plan[0][1], host=args.host)
        return _bench.run(__file__, args, plan, lambda samples: report(samples, args), pin="client_cpu",
                          intro=f"\n  server: {shlex.join(pinned(server, args.server_cpu))}")


ECHO_NOTES = (
    "server us/msg = server CPU (user+sys, all threads) in the window / messages echoed in it (median; min "
    "= the lowest round); fibernet ratio = fibernet us/msg / row us/msg, medians (below 1: fibernet "
    f"cheaper).\n* load generator at >= {CLIENT_BOUND:.0%} of its CPU: msgs/s measures the client there; "
    "server us/msg is still valid.\nothers = busy time of the two CPUs not spent by server or client (other "
    "processes, softirq not charged to either), in CPUs: noise from a shared machine.\nsrv ctxsw/msg = the "
    "server threads' context switches per message (GIL hand-offs show here).")


def report(samples: _bench.Samples, args) -> tuple[dict, str]:
    """The echo and idle tables, the bars and the notes on them (while the time bank is there)."""
    echo_rows = summarise_echo(samples, args)
    idle_rows = _idle.summarise(samples, args.impls) if "idle" in args.workloads else []
    bars = [b.check(samples) for b in build_bars(args)]
    args.noise_budget_left = bank_balance(args.time_bank)
    text = []
    if echo_rows:
        text.append(f"{'WebSocket echo (text frames)' if args.ws else 'TCP echo'}, closed loop, {args.conns} "
                    f"connections, {args.duration:g} s window after {args.warmup:g} s warm-up, medians of "
                    f"{args.rounds} round(s)\n{render_echo(echo_rows)}\n{ECHO_NOTES}")
        noisy = [f"{r['workload']}/{r['impl']} {fmt_pct(r['others_cpu'])}" for r in echo_rows
                 if r["others_cpu"] is not None and r["others_cpu"] > args.max_others]
        if noisy:
            spent = args.noise_budget - args.noise_budget_left
            text[-1] += (f"\nNOISY (others above {args.max_others:g} CPUs on the best attempt; msgs/s is "
                         f"unreliable there, us/msg less so; {spent:.0f} of {args.noise_budget:g} s of noise "
                         "budget spent): " + ", ".join(noisy))
    if idle_rows:
        text.append("Memory per idle connection (server VmRSS growth / connections), "
                    f"medians of {args.rounds} round(s)\n{_idle.render(idle_rows)}")
        capped = [r["impl"] for r in idle_rows if r["conns"] is not None and r["conns"] < args.idle_conns]
        if capped:
            text[-1] += (f"\nnote: RLIMIT_NOFILE allowed fewer than {args.idle_conns:,} connections "
                         f"for {', '.join(capped)}")
    if bars:
        text.append(_bench.render_bars(bars))
    return {"echo": echo_rows, "idle": idle_rows, "bars": bars}, "\n\n".join(text) + "\n"


if __name__ == "__main__":
    _bench.main(dispatch, main)
