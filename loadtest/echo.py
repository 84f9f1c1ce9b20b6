"""TCP echo benchmark: fibernet's server beside gevent, asyncio, uvloop, trio and raw epoll.

Run from the repository root::

    python loadtest/echo.py             # full run: 3 interleaved rounds (~8 min)
    python loadtest/echo.py --quick     # smoke run: 1 round, 2 s, 64 B only, 1,000 idle conns
    python loadtest/echo.py --json out/echo.json
    python loadtest/echo.py --profile fibernet --sizes 64   # cProfile of one server under load
    python loadtest/echo.py --callgrind   # instructions per message under callgrind

Servers (``loadtest/peers/echo_*.py``, each runs one in the foreground)::

    fibernet         fibernet.Server(fibernet.examples.echo.handle, threads=1), run the way
                     ``fibernet serve`` runs it (run_server: the runtime on the main thread)
    fibernet-t2      the same with threads=2 (two schedulers, two SO_REUSEPORT listeners,
                     one process, so both threads share the GIL and the one server CPU)
    gevent           gevent.server.StreamServer, recv(65536) / sendall loop per greenlet
    asyncio-streams  asyncio.start_server, reader.read(65536) / write / drain (stock loop)
    uvloop-streams   the same on uvloop
    uvloop-proto     uvloop create_server with an asyncio.Protocol: data_received -> write
    trio             trio.serve_tcp, receive_some(65536) / send_all
    raw-epoll        select.epoll, level-triggered, non-blocking sockets, recv then send in
                     the event loop itself: the floor for Python

Every server listens on 127.0.0.1 with backlog 1024 and sets TCP_NODELAY on its
connections (asyncio, uvloop, trio and fibernet do it themselves), and raises
RLIMIT_NOFILE to its hard limit.

Each measurement runs in a fresh child process (the load generator) pinned with ``taskset``
to the client CPU (default 1); the child starts the server in a process of its own pinned
to the server CPU (default 0), waits for it to print ``READY <port>``, measures, and kills
it.  Rounds are interleaved: for round: for workload: for impl: run.

echo-<size>
    Closed loop: ``--conns`` connections (default 100) each send one message of <size>
    bytes and wait for the whole echo before sending the next.  ``--warmup`` seconds
    (default 1) first, then a ``--duration`` window (default 5 s).  The load generator is
    a raw level-triggered epoll loop in Python that checks every echoed byte count (a short
    or long echo, or a closed connection, fails the run).  Reported:

    * msgs/s: round trips completed in the window / window length;
    * server us/msg: the server process's CPU time (utime + stime of all its threads, from
      psutil) over the window / round trips in the window.  This stays valid
      when the load generator is the bottleneck;
    * srv CPU and cli CPU: each process's CPU time / window.  A client at ~100 % means
      msgs/s measures the load generator (marked ``*``); the server then idles part of
      the time and its us/msg is still its cost per message.

idle
    Memory per idle connection: the client opens 10 connections, does one 1-byte round
    trip on each and closes them (warm-up), reads the server's resident memory (psutil),
    then opens ``--idle-conns`` connections (default 10,000) in batches of 100, with a
    1-byte round trip on each (so the server has accepted it and its handler is waiting
    for the next read), waits 0.5 s and reads VmRSS again.  Reported: (RSS after - RSS
    before) / connections, in KiB (VmRSS's "kB").  Connections are closed with an RST
    (SO_LINGER 0) so no TIME_WAIT piles up.

``--callgrind`` runs none of that: it counts the instructions each server spends per message
under ``valgrind --tool=callgrind`` (``_callgrind.py`` says how), 16 connections with one
message in flight each, ``--callgrind-counts N1,N2`` messages (default 1,000 and 5,000) of each
of ``--sizes``: fibernet compiled, fibernet with ``FIBERNET_PURE_PYTHON=1`` (``fibernet-pure``),
uvloop streams and gevent by default.  The bars: fibernet at most 0.8x uvloop streams' and
0.9x gevent's instructions per message.

How to read the tables: medians over rounds; ``spread`` is (max - min) / median, a noise
indicator.  ``fibernet ratio`` is fibernet's (threads=1) median / that row's median: below
1 means fibernet spends less CPU per message (or memory per connection).  fibernet's targets
(the bars) are checked on the medians in a separate table; the exit status is 1 if any bar
fails or any measurement errors.
"""

from __future__ import annotations

import os
import shlex
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)  # the repository root, for `import fibernet`
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import _bench  # noqa: E402
import _callgrind  # noqa: E402
import _proc  # noqa: E402
from _bench import fmt_num  # noqa: E402
from _server import ServerProcess, pinned  # noqa: E402
from peers import _serve  # noqa: E402

CLIENT_BOUND = 0.90  # client CPU fraction from which msgs/s measures the load generator
STALL_SECONDS = 15.0  # no echo at all for this long: the server is stuck
READY_TIMEOUT = 30.0
IDLE_BATCH = 100
IDLE_WARM_CONNS = 10
IDLE_SETTLE = 0.5


# the servers (loadtest/peers/NAME.py ARGS), by implementation
SERVERS = {
    "fibernet": ("echo_fibernet",),
    "fibernet-t2": ("echo_fibernet", "--threads", "2"),
    "fibernet-nomonitor": ("echo_fibernet", "--block-warning", "0"),
    "gevent": ("echo_gevent",),
    "asyncio-streams": ("echo_asyncio",),
    "uvloop-streams": ("echo_asyncio", "--loop", "uvloop"),
    "uvloop-proto": ("echo_asyncio", "--loop", "uvloop", "--api", "protocol"),
    "trio": ("echo_trio",),
    "raw-epoll": ("echo_epoll",),
}
IMPLS = tuple(SERVERS)


def server_command(impl: str, host: str, profile_out: str | None = None,
                   python: str | None = None) -> list[str]:
    """``loadtest/peers/NAME.py`` serving IMPL."""
    name, *options = SERVERS[impl]
    return _serve.command(name, *options, *(["--profile-out", profile_out] if profile_out else []),
                          python=python, host=host)


def start_server(impl: str, params: dict) -> ServerProcess:
    cmd = server_command(impl, params["host"], params.get("profile_out"))
    return ServerProcess(cmd, params["server_cpu"], timeout=READY_TIMEOUT, name=f"server {impl}")


def proc_rss_kib(pid: int) -> int:
    rss = _proc.rss_bytes(pid)
    if rss is None:
        raise RuntimeError(f"no VmRSS for pid {pid}")
    return rss // 1024


# --------------------------------------------------------------------------
# load generators (the child side)


@dataclass
class Mark:
    """Counters at one instant of the echo run."""

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


def echo_load(server: ServerProcess, params: dict) -> dict:
    """The closed loop (see the module docstring); returns the window's numbers."""
    import select

    size, nconns, host = params["size"], params["conns"], params["host"]
    msg = (b"fibernet-echo-0123456789abcdef\n" * (size // 31 + 1))[:size]
    socks = []
    for _ in range(nconns):
        s = socket.create_connection((host, server.port), timeout=10)
        s.settimeout(None)  # blocking: sendall never meets EAGAIN (see below)
        _serve.nodelay(s)
        socks.append(s)
    # Level-triggered epoll, blocking sockets: recv_into is only called when epoll says
    # readable, so it does not block; sendall may, but only while the server reads the
    # message (it has no echo of ours left to send, we read it all), so it cannot deadlock.
    ep = select.epoll(nconns)
    size_of = max(s.fileno() for s in socks) + 1
    recv_into = [None] * size_of
    sendall = [None] * size_of
    left = [0] * size_of  # bytes of the current echo still expected, per descriptor
    for s in socks:
        fd = s.fileno()
        recv_into[fd], sendall[fd], left[fd] = s.recv_into, s.sendall, size
        ep.register(fd, select.EPOLLIN)
    buf = bytearray(max(_serve.RECV_SIZE, size))
    poll = ep.poll
    msgs = 0
    marks: list[Mark] = []
    profiling = params.get("profile", False)
    cpus = sorted(os.sched_getaffinity(0) | os.sched_getaffinity(server.pid))
    try:
        for s in socks:
            s.sendall(msg)
        deadline = time.monotonic() + params["warmup"]
        last_progress, last_msgs = time.monotonic(), 0
        while True:
            events = poll(1.0)
            for fd, _ev in events:
                n = recv_into[fd](buf)
                rest = left[fd] - n
                if rest > 0:
                    left[fd] = rest
                    continue
                if rest or not n:
                    if not n:
                        raise RuntimeError(
                            f"server closed a connection {size - left[fd]}/{size} bytes into an echo"
                        )
                    raise RuntimeError(f"echo too long: {size - rest} bytes for a {size}-byte message")
                left[fd] = size
                sendall[fd](msg)
                msgs += 1
            now = time.monotonic()
            if now >= deadline:
                marks.append(Mark.take(msgs, server.pid, cpus))
                if len(marks) == 1:
                    deadline = marks[0].wall + params["duration"]
                    if profiling:
                        os.kill(server.pid, signal.SIGUSR2)
                else:
                    break
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
        for s in socks:
            s.close()
    a, b = marks
    window, count = b.wall - a.wall, b.msgs - a.msgs
    if count <= 0:
        raise RuntimeError("no message completed in the window")
    srv_user, srv_sys = b.srv_user - a.srv_user, b.srv_sys - a.srv_sys
    cli = (b.cli_user - a.cli_user) + (b.cli_sys - a.cli_sys)
    result = {
        "size": size,
        "conns": nconns,
        "msgs": count,
        "msgs_total": msgs,
        "window": window,
        "rate": count / window,
        "us_per_msg": 1e6 * (srv_user + srv_sys) / count,
        "us_per_msg_sys": 1e6 * srv_sys / count,
        "server_cpu": (srv_user + srv_sys) / window,
        "client_cpu": cli / window,
        "client_us_per_msg": 1e6 * cli / count,
        # what else ran on these CPUs: a busy shared machine shows here
        "others_cpu": max(0.0, (b.busy - a.busy) - (srv_user + srv_sys) - cli) / window,
        "cpus_watched": cpus,
        "server_ctxsw_per_msg": (b.srv_ctxsw - a.srv_ctxsw) / count,
        "bytes_checked": msgs * size,
    }
    result["summary"] = (
        f"{fmt_num(result['rate'])} msgs/s, server {result['us_per_msg']:.1f} us/msg "
        f"(cpu {_bench.fmt_pct(result['server_cpu'])}), client cpu {_bench.fmt_pct(result['client_cpu'])}, "
        f"others {_bench.fmt_pct(result['others_cpu'])}"
    )
    return result


def _open_idle(host: str, port: int, count: int) -> list[socket.socket]:
    """``count`` connections, each with a 1-byte round trip done, closing with an RST."""
    linger = struct.pack("ii", 1, 0)
    socks = []
    try:
        for _ in range(count):
            s = socket.create_connection((host, port), timeout=30)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
            socks.append(s)
        for s in socks:
            s.sendall(b"x")
        for s in socks:
            if s.recv(1) != b"x":
                raise RuntimeError("idle connection: no 1-byte echo")
    except BaseException:
        _bench.close_all(socks)
        raise
    return socks


def idle_load(server: ServerProcess, params: dict) -> dict:
    wanted, host = params["conns"], params["host"]
    limit = _serve.raise_nofile()  # the server raises its own to the same hard limit
    n = min(wanted, limit - 64)  # the largest count this machine allows
    if n < 100:
        raise RuntimeError(f"RLIMIT_NOFILE is {limit}: too few descriptors for an idle test")
    _bench.close_all(_open_idle(host, server.port, IDLE_WARM_CONNS))
    time.sleep(IDLE_SETTLE)
    rss0 = proc_rss_kib(server.pid)
    socks: list[socket.socket] = []
    started = time.monotonic()
    try:
        while len(socks) < n:
            socks += _open_idle(host, server.port, min(IDLE_BATCH, n - len(socks)))
        opened = time.monotonic() - started
        time.sleep(IDLE_SETTLE)
        rss1 = proc_rss_kib(server.pid)
        server.check_alive()
    finally:
        _bench.close_all(socks)
    result = {
        "conns": n,
        "conns_wanted": wanted,
        "rss0_kib": rss0,
        "rss1_kib": rss1,
        "kib_per_conn": (rss1 - rss0) / n,
        "open_seconds": opened,
    }
    result["summary"] = (
        f"{result['kib_per_conn']:.2f} KiB/conn (RSS {rss0 / 1024:.1f} -> {rss1 / 1024:.1f} MiB, "
        f"{n} conns opened in {opened:.1f}s)"
    )
    return result


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


class TimeBank:
    """Seconds the whole run may spend waiting for quiet CPUs and retrying noisy runs, kept
    in a file the parent creates (children run one at a time); none without a file."""

    def __init__(self, path: str | None) -> None:
        self.path = path

    def balance(self) -> float:
        try:
            with open(self.path) as fh:
                return max(0.0, float(fh.read()))
        except (TypeError, OSError, ValueError):
            return 0.0

    def spend(self, seconds: float) -> None:
        if self.path:
            left = max(0.0, self.balance() - seconds)  # read before "w" truncates the file
            with open(self.path, "w") as fh:
                fh.write(repr(left))


def measure_echo(impl: str, params: dict) -> dict:
    """One echo measurement, on quiet CPUs if the run's time bank allows.

    Before each attempt, wait up to ``quiet_timeout`` s for the two CPUs to carry at most
    ``max_others`` CPUs of other work; after it, if other work exceeded that during the
    window, try again (up to ``retries`` more times).  Keep the attempt with the least
    other work.  Waits and retries are paid from the time bank (``--noise-budget``), so a
    busy machine cannot stretch the run without bound."""
    server_cpu = params["server_cpu"]
    cpus = sorted(os.sched_getaffinity(0) | ({server_cpu} if server_cpu is not None else set()))
    bank = TimeBank(params.get("time_bank"))
    limit = params.get("max_others", 0.0)
    attempts = []
    for attempt in range(1 + params.get("retries", 0)):
        started = time.monotonic()
        waited, busy = wait_quiet(cpus, limit, min(params.get("quiet_timeout", 0.0), bank.balance()))
        with start_server(impl, params) as server:
            result = echo_load(server, params)
            if not params.get("profile_out"):
                server.check_alive()
        result.update(quiet_wait=waited, busy_before=busy)
        attempts.append(result)
        if attempt:
            bank.spend(time.monotonic() - started)  # the whole retry was extra
        else:
            bank.spend(waited)
        cost = params["warmup"] + params["duration"] + 1.0
        if result["others_cpu"] <= limit or bank.balance() < cost:
            break
    best = min(attempts, key=lambda r: r["others_cpu"])
    best["attempts"] = len(attempts)
    best["others_per_attempt"] = [r["others_cpu"] for r in attempts]
    best["quiet_wait_total"] = sum(r["quiet_wait"] for r in attempts)
    if len(attempts) > 1:
        best["summary"] += f" [best of {len(attempts)} attempts]"
    return best


def dispatch(workload: str, impl: str, params: dict) -> dict:
    if params["kind"] == "echo":
        result = measure_echo(impl, params)
    else:
        with start_server(impl, params) as server:
            result = idle_load(server, params)
            server.check_alive()
    result["server_cpus"] = [params["server_cpu"]]
    return result


# --------------------------------------------------------------------------
# parent side: plan, run, summarise


def size_label(size: int) -> str:
    if size >= 1024 and size % 1024 == 0:
        return f"{size // 1024}KiB"
    return f"{size}B"


def build_plan(args) -> list[tuple[str, str, dict]]:
    common = {"host": args.host, "server_cpu": args.server_cpu}
    plan = []
    if "echo" in args.workloads:
        for size in args.sizes:
            params = {**common, "kind": "echo", "size": size, "conns": args.conns, "warmup": args.warmup,
                      "duration": args.duration, "max_others": args.max_others, "retries": args.retries,
                      "quiet_timeout": args.quiet_timeout, "time_bank": args.time_bank}
            plan += [(f"echo-{size_label(size)}", impl, params) for impl in args.impls]
    if "idle" in args.workloads:
        params = {**common, "kind": "idle", "conns": args.idle_conns}
        plan += [("idle", impl, params) for impl in args.impls]
    return plan


def _med(samples: _bench.Samples, workload: str, impl: str, key: str) -> float | None:
    return _bench.median(samples.values(workload, impl, key))


def _rows(samples: _bench.Samples, args, workload: str, key: str, medians: tuple[str, ...]) -> list[dict]:
    """A row per implementation measured in ``workload``: the medians of ``key`` (its spread,
    fibernet's ratio) and of ``medians``."""
    rows = []
    ours = _med(samples, workload, "fibernet", key)
    for impl in args.impls:
        values = samples.values(workload, impl, key)
        errors = len(samples.errors.get((workload, impl), []))
        if values or errors:
            mid = _bench.median(values)
            rows.append({"workload": workload, "impl": impl, key: mid, "rounds": len(values),
                         "errors": errors,
                         "ratio": None if impl == "fibernet" else _bench.ratio(ours, mid),
                         **{k: _med(samples, workload, impl, k) for k in medians}})
    return rows


def summarise_echo(samples: _bench.Samples, args) -> list[dict]:
    rows = []
    for size in args.sizes if "echo" in args.workloads else []:
        w = f"echo-{size_label(size)}"
        medians = ("rate", "us_per_msg_sys", "server_cpu", "client_cpu", "others_cpu", "server_ctxsw_per_msg")
        for row in _rows(samples, args, w, "us_per_msg", medians):
            values = samples.values(w, row["impl"], "us_per_msg")
            cli = row["client_cpu"]
            rates = samples.values(w, row["impl"], "rate")
            rows.append({**row, "size": size, "rate_spread": _bench.spread(rates),
                         "us_min": min(values) if values else None, "us_spread": _bench.spread(values),
                         "client_bound": cli is not None and cli >= CLIENT_BOUND})
    return rows


def summarise_idle(samples: _bench.Samples, args) -> list[dict]:
    if "idle" not in args.workloads:
        return []
    rows = _rows(samples, args, "idle", "kib_per_conn", ("conns", "rss0_kib", "rss1_kib"))
    for row in rows:
        row["spread"] = _bench.spread(samples.values("idle", row["impl"], "kib_per_conn"))
        for k in ("rss0", "rss1"):
            kib = row.pop(f"{k}_kib")
            row[f"{k}_mib"] = None if kib is None else kib / 1024
    return rows


@dataclass(frozen=True)
class Bar:
    """``ours(key) / peer(key) <= max_ratio`` (or ``>= min_ratio``), or ``ours <= max_value``."""

    workload: str
    key: str
    text: str
    ours: str = "fibernet"
    peer: str | None = None
    max_ratio: float | None = None
    min_ratio: float | None = None
    max_value: float | None = None
    unit: str = ""

    def check(self, samples: _bench.Samples) -> dict:
        ours = _med(samples, self.workload, self.ours, self.key)
        errors = bool(samples.errors.get((self.workload, self.ours)))
        if self.peer is not None:
            errors = errors or bool(samples.errors.get((self.workload, self.peer)))
            theirs = _med(samples, self.workload, self.peer, self.key)
            value = _bench.ratio(ours, theirs)
            if value is None:
                ok, measured = None, "-"
            else:
                ok = value <= self.max_ratio if self.max_ratio is not None else value >= self.min_ratio
                measured = f"{value:.2f}x ({_num(ours)} vs {_num(theirs)} {self.unit})"
        else:
            value = ours
            ok = None if ours is None else ours <= self.max_value
            measured = "-" if ours is None else f"{_num(ours)} {self.unit}"
        return {"bar": self.text, "value": value, "measured": measured, "pass": False if errors else ok,
                "errors": errors}


def _num(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.3g}" if abs(value) < 1000 else fmt_num(value)


def build_bars(args) -> list[Bar]:
    bars = []
    for size in args.sizes if "echo" in args.workloads else []:
        w, label = f"echo-{size_label(size)}", size_label(size)
        for peer, limit in (("gevent", 0.6), ("uvloop-streams", 1.0)):
            if peer in args.impls:
                bars.append(Bar(w, "us_per_msg", f"{label}: server CPU/msg fibernet <= {limit:g}x {peer}",
                                peer=peer, max_ratio=limit, unit="us"))
        if "fibernet-t2" in args.impls:
            bars.append(Bar(w, "rate", f"{label}: msgs/s fibernet threads=2 >= 0.9x threads=1",
                            ours="fibernet-t2", peer="fibernet", min_ratio=0.9, unit="msgs/s"))
    if "idle" in args.workloads:
        text = f"idle memory at {args.idle_conns:,} conns: fibernet <= 4 KiB/conn"
        bars.append(Bar("idle", "kib_per_conn", text, max_value=4.0, unit="KiB/conn"))
    return bars


def _verdict(ok: bool | None, errors: int | bool = 0) -> str:
    if errors:
        return "ERROR"
    return {True: "PASS", False: "FAIL", None: "n/a"}[ok]


def _fixed(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _rounds(r: dict) -> str | int:
    return f"ERROR x{r['errors']}" if r["errors"] else r["rounds"]


def render_echo(rows: list[dict]) -> str:
    pct = _bench.fmt_pct
    table = [[size_label(r["size"]), r["impl"], fmt_num(r["rate"]) + ("*" if r["client_bound"] else ""),
              pct(r["rate_spread"]), _fixed(r["us_per_msg"]), _fixed(r["us_per_msg_sys"]),
              pct(r["us_spread"]), _fixed(r["us_min"]), pct(r["server_cpu"]), pct(r["client_cpu"]),
              pct(r["others_cpu"]), _fixed(r["server_ctxsw_per_msg"], 3), _bench.fmt_ratio(r["ratio"]),
              _rounds(r)] for r in rows]
    headers = ["size", "impl", "msgs/s", "spread", "server us/msg", "of it sys", "spread", "min", "srv CPU",
               "cli CPU", "others", "srv ctxsw/msg", "fibernet ratio", "rounds"]
    return _bench.format_table(headers, table)


def render_idle(rows: list[dict]) -> str:
    table = [[r["impl"], "-" if r["conns"] is None else f"{r['conns']:,.0f}", _fixed(r["kib_per_conn"], 2),
              _bench.fmt_pct(r["spread"]), _fixed(r["rss0_mib"]), _fixed(r["rss1_mib"]),
              _bench.fmt_ratio(r["ratio"]), _rounds(r)] for r in rows]
    headers = ["impl", "idle conns", "KiB/conn", "spread", "RSS before MiB", "RSS after MiB",
               "fibernet ratio", "rounds"]
    return _bench.format_table(headers, table)


def render_bars(results: list[dict]) -> str:
    table = [[r["bar"], r["measured"], _verdict(r["pass"], r["errors"])] for r in results]
    return _bench.format_table(["bar (medians)", "measured", "result"], table)


# --------------------------------------------------------------------------
# profile mode


def run_profile(args) -> int:
    """One echo run with the server under cProfile for the measured window; top 25 by tottime."""
    import pstats

    impl = args.profile
    size = args.sizes[0]
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "server.prof")
        params = {
            "host": args.host,
            "server_cpu": args.server_cpu,
            "kind": "echo",
            "size": size,
            "conns": args.conns,
            "warmup": args.warmup,
            "duration": args.duration,
            "profile": True,
            "profile_out": out,
        }
        result = _bench.run_child(
            __file__, f"echo-{size_label(size)}", impl, params, args.client_cpu, args.timeout
        )
        print(f"{impl} {size_label(size)} under cProfile: {result['summary']}")
        print("(cProfile slows the server: read the shares, not the absolute times)\n")
        stats = pstats.Stats(out)
        if args.profile_save:
            stats.dump_stats(args.profile_save)
        stats.sort_stats("tottime").print_stats(args.profile_top)
    return 0


# --------------------------------------------------------------------------
# command line


def parse_args(argv=None):
    parser = _bench.argument_parser(__doc__)
    parser.add_argument("--quick", action="store_true", help="1 round, 2 s, 64 B only, 1,000 idle conns")
    parser.add_argument("--rounds", type=int, help="interleaved rounds (default 3, --quick 1)")
    parser.add_argument("--duration", type=float, help="measured seconds per echo run (default 5, --quick 2)")
    parser.add_argument(
        "--warmup", type=float, help="warm-up seconds before the window (default 1, --quick 0.5)"
    )
    parser.add_argument("--sizes", help="comma list of message sizes in bytes (default 64,16384; --quick 64)")
    parser.add_argument("--conns", type=int, default=100, help="echo connections (default %(default)s)")
    parser.add_argument("--idle-conns", type=int, help="idle connections (default 10000, --quick 1000)")
    parser.add_argument(
        "--impls", help=f"comma list (default: {','.join(IMPLS)}; --callgrind: {','.join(CALLGRIND_IMPLS)})"
    )
    parser.add_argument(
        "--callgrind", action="store_true", help="instead: instructions per message under callgrind"
    )
    parser.add_argument("--callgrind-counts", default="1000,5000", help="N1,N2 messages (default 1000,5000)")
    parser.add_argument(
        "--callgrind-warmup", type=int, default=500, help="messages before them (default 500)"
    )
    parser.add_argument(
        "--workloads", default="echo,idle", help="comma list of echo,idle (default: %(default)s)"
    )
    parser.add_argument("--server-cpu", default="0", help="CPU of the server (default 0; 'none': no pinning)")
    parser.add_argument("--client-cpu", default="1", help="CPU of the load generator (default 1; 'none')")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--json", metavar="PATH", help="also write all results as JSON to PATH")
    parser.add_argument(
        "--max-others",
        type=float,
        default=0.3,
        help="other work on the two CPUs (in CPUs) above which an echo run is noisy: wait for "
        "quiet before it, retry after it (default %(default)s)",
    )
    parser.add_argument(
        "--retries", type=int, default=1, help="extra attempts of a noisy echo run (default %(default)s)"
    )
    parser.add_argument(
        "--quiet-timeout",
        type=float,
        default=5,
        help="longest wait for quiet CPUs before a run, s (default %(default)s)",
    )
    parser.add_argument(
        "--noise-budget",
        type=float,
        default=120,
        help="seconds the whole run may spend on those waits and retries (default %(default)s)",
    )
    parser.add_argument("--timeout", type=float, default=300, help="per-child timeout, seconds")
    parser.add_argument(
        "--profile",
        metavar="IMPL",
        choices=IMPLS,
        help="instead: one echo run (first of --sizes) with IMPL's server under cProfile",
    )
    parser.add_argument("--profile-top", type=int, default=25, help="rows of the profile (default 25)")
    parser.add_argument("--profile-save", metavar="PATH", help="also save the raw cProfile stats to PATH")
    args = parser.parse_args(argv)

    _bench.fill_defaults(
        args,
        {"rounds": 1, "duration": 2.0, "warmup": 0.5, "sizes": "64", "idle_conns": 1000}
        if args.quick
        else {"rounds": 3, "duration": 5.0, "warmup": 1.0, "sizes": "64,16384", "idle_conns": 10_000},
    )
    args.time_bank = None  # set by main()
    args.server_cpu = _bench.cpu_option(args.server_cpu)
    args.client_cpu = _bench.cpu_option(args.client_cpu)
    try:
        args.sizes = [int(x) for x in args.sizes.split(",") if x.strip()]
    except ValueError:
        parser.error(f"--sizes: not a comma list of integers: {args.sizes!r}")
    if not args.sizes or min(args.sizes) < 1:
        parser.error("--sizes: positive sizes needed")
    if args.callgrind:
        args.impls = _bench.comma_list(parser, args.impls or ",".join(CALLGRIND_IMPLS),
                                       (*IMPLS, "fibernet-pure"), "--impls")
        return args
    args.impls = _bench.comma_list(parser, args.impls or ",".join(IMPLS), IMPLS, "--impls")
    args.workloads = _bench.comma_list(parser, args.workloads, ("echo", "idle"), "--workloads")
    if "fibernet" not in args.impls:
        parser.error("--impls must include fibernet")
    if args.server_cpu is not None and args.server_cpu == args.client_cpu:
        print("warning: server and client pinned to the same CPU", file=sys.stderr)
    return args


CALLGRIND_IMPLS = ("fibernet", "fibernet-pure", "uvloop-streams", "gevent")
CALLGRIND_BARS = {"uvloop-streams": 0.8, "gevent": 0.9}


def callgrind_target(impl: str, host: str) -> _callgrind.Target:
    """fibernet runs with its scheduler monitor off (see _callgrind.py); fibernet-pure the same
    with FIBERNET_PURE_PYTHON=1."""
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")]))}
    serve = impl
    if impl in ("fibernet", "fibernet-pure"):
        serve = "fibernet-nomonitor"
        if impl == "fibernet-pure":
            env["FIBERNET_PURE_PYTHON"] = "1"
    name, *options = SERVERS[serve]
    return _callgrind.Target(impl, lambda port: _serve.command(name, *options, host=host, port=port), env)


def callgrind_main(args) -> int:
    targets = [callgrind_target(i, args.host) for i in args.impls]
    workloads = [(f"echo {size_label(size)}", targets, _callgrind.echo_exchange(size)) for size in args.sizes]
    return _callgrind.main(args, workloads, CALLGRIND_BARS)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.callgrind:
        return callgrind_main(args)
    _bench.check_cpu(args.server_cpu)
    _bench.check_cpu(args.client_cpu)
    if args.profile:
        return run_profile(args)
    command = _bench.command_line()
    with tempfile.NamedTemporaryFile("w", prefix="echo-bank-", suffix=".txt") as bank:
        bank.write(repr(args.noise_budget))
        bank.flush()
        args.time_bank = bank.name
        plan = build_plan(args)
        print(f"command: {command}", flush=True)
        print(
            f"{len(plan)} measurements x {args.rounds} rounds; each is a load-generator child pinned to CPU "
            f"{args.client_cpu} that starts its server pinned to CPU {args.server_cpu}, e.g.:\n  "
            + _bench.example_child(__file__, plan, args.client_cpu)
            + "\n  server: "
            + shlex.join(pinned(server_command(plan[0][1], args.host), args.server_cpu)),
            flush=True,
        )
        samples = _bench.run_interleaved(__file__, plan, args.rounds, args.client_cpu, args.timeout)
        args.noise_budget_left = TimeBank(bank.name).balance()
    echo_rows = summarise_echo(samples, args)
    idle_rows = summarise_idle(samples, args)
    bars = [b.check(samples) for b in build_bars(args)]

    print()
    if echo_rows:
        print(
            f"TCP echo, closed loop, {args.conns} connections, {args.duration:g} s window after "
            f"{args.warmup:g} s warm-up, medians of {args.rounds} round(s)"
        )
        print(render_echo(echo_rows))
        print(
            "server us/msg = server CPU (user+sys, all threads) in the window / messages echoed in it "
            "(median; min = the lowest round); fibernet ratio = fibernet us/msg / row us/msg, medians "
            "(below 1: fibernet cheaper).\n"
            f"* load generator at >= {CLIENT_BOUND:.0%} of its CPU: msgs/s measures the client there; "
            "server us/msg is still valid.\n"
            "others = busy time of the two CPUs not spent by server or client (other processes, "
            "softirq not charged to either), in CPUs: noise from a shared machine.\n"
            "srv ctxsw/msg = the server threads' context switches per message (GIL hand-offs show here)."
        )
        noisy = [
            f"{r['workload']}/{r['impl']} {_bench.fmt_pct(r['others_cpu'])}"
            for r in echo_rows
            if r["others_cpu"] is not None and r["others_cpu"] > args.max_others
        ]
        if noisy:
            print(
                f"NOISY (others above {args.max_others:g} CPUs on the best attempt; msgs/s is unreliable "
                f"there, us/msg less so; {args.noise_budget - args.noise_budget_left:.0f} of "
                f"{args.noise_budget:g} s of noise budget spent): " + ", ".join(noisy)
            )
        print()
    if idle_rows:
        print(
            "Memory per idle connection (server VmRSS growth / connections), "
            f"medians of {args.rounds} round(s)"
        )
        print(render_idle(idle_rows))
        capped = [r["impl"] for r in idle_rows if r["conns"] is not None and r["conns"] < args.idle_conns]
        if capped:
            print(
                f"note: RLIMIT_NOFILE allowed fewer than {args.idle_conns:,} connections "
                f"for {', '.join(capped)}"
            )
        print()
    if bars:
        print(render_bars(bars))
    print(f"\ncommand: {command}")
    _bench.save_json(
        args.json,
        {
            "command": command,
            "args": vars(args),
            "echo": echo_rows,
            "idle": idle_rows,
            "bars": bars,
            "samples": samples.to_json(),
        },
    )
    return _bench.exit_status(bars, samples)


if __name__ == "__main__":
    if _bench.is_child():
        sys.exit(_bench.serve_child(dispatch))
    sys.exit(main())
