"""HTTP hello-world benchmark: fibernet side by side with uvicorn, gevent.pywsgi, aiohttp
and a bare uvloop protocol over httptools, under ``wrk -t1 -c100``.

Run from the repository root::

    python loadtest/http_hello.py            # full run: 3 interleaved rounds of 5 s (~2.5 min)
    python loadtest/http_hello.py --quick    # smoke run: 1 round of 2 s
    python loadtest/http_hello.py --json out/http_hello.json
    python loadtest/http_hello.py --profile /tmp/fibernet.prof   # cProfile fibernet under wrk
    python loadtest/http_hello.py --idle-conns 10000   # memory per idle keep-alive connection
                                                       # (fibernet, uvicorn, gevent; _http_idle.py)
    python loadtest/http_hello.py --callgrind  # instructions per request under callgrind

(The module is not called ``http.py``: that name would shadow the standard library's
``http`` package for every script in this directory.)

Every server answers ``GET /hello`` with ``200 Hello, World!`` (``text/plain``, keep-alive):

fibernet
    ``fibernet serve fibernet.examples.hello:app --threads 1`` (the CLI, one scheduler thread).
uvicorn
    ``uvicorn --http httptools --loop uvloop --no-access-log`` serving a raw ASGI app
    (``loadtest/peers/hello_asgi.py``, no framework).
gevent
    ``gevent.pywsgi.WSGIServer`` (``log=None``) with a WSGI app.
aiohttp
    an ``aiohttp.web`` application on the default asyncio loop, access log off.
uvloop-proto
    an ``asyncio.Protocol`` on uvloop that feeds ``httptools.HttpRequestParser`` and writes a
    canned keep-alive response: close to the least Python can do per request (a reference,
    not a peer).
greenlet-floor
    ``loadtest/http_floor.py --serve``: the same canned-response loop in a greenlet per
    connection under a 30-line epoll hub, with none of a runtime's features (timers,
    limits, cancellation, run queue): the floor of any greenlet-per-connection server.
    After the rounds ``http_floor.py --layer`` (pinned to the server CPU) measures what
    fibernet's HTTP layer costs per request without I/O over a bare httptools parse; the
    greenlet floor plus that is printed beside the uvicorn bar.
fibernet-raw
    the same canned-response httptools loop as a fibernet *TCP* handler (``fibernet serve
    hello_raw:handle --app-dir loadtest/peers --protocol tcp``): fibernet's runtime floor -- fibers, epoll and
    socket calls without the HTTP layer.  Informational: the gap between it and ``fibernet``
    is the cost of fibernet's HTTP layer, the gap between it and ``uvloop-proto`` the cost of
    the fiber runtime.

One measurement (each in a fresh driver subprocess, pinned to the wrk CPU; rounds are
interleaved: for round: for server: measure):

1. start the server pinned with ``taskset -c SERVER_CPU`` (default 0) on a free port and
   wait until ``GET /hello`` answers; check status, body, content type and that two requests
   go over one connection (keep-alive);
2. warm up: ``taskset -c WRK_CPU wrk -t1 -c100 -d1s URL`` (default CPU 1);
3. read utime+stime of the server (``/proc/PID/stat``, the process and any descendants),
   run ``taskset -c WRK_CPU wrk -t1 -c100 -dDs URL``, read them again;
4. CPU time per request = that delta / requests completed (wrk's count), and its user and
   system parts; also requests/s, the server's CPU use over the run (100% = one CPU busy),
   how much of the server CPU other processes used meanwhile (``/proc/stat``: a noise
   indicator for shared machines), its RSS, and errors (wrk's non-2xx/3xx responses plus
   socket errors connect/read/write/timeout);
5. stop the server (SIGTERM; SIGKILL after 15 s).

How to read the table: ``CPU/req`` is the median over rounds of the server's CPU time per
request (less = better), ``spread`` is (max - min) / median over rounds (noise).
``fibernet ratio`` is fibernet's median CPU/req divided by that row's (below 1: fibernet
spends less).  ``issue ref`` is the CPU/req first measured on another machine, for scale.
The bars (fibernet's targets): fibernet CPU/req <= 0.33x uvicorn's and <= 0.15x gevent.pywsgi's,
and no error at all in fibernet's runs.  The exit status is 1 if a bar fails or a
measurement errors.

``--callgrind`` runs no wrk: it counts the instructions each server spends per request under
``valgrind --tool=callgrind`` (``_callgrind.py`` says how), driven by 16
keep-alive connections, one request in flight each, ``--callgrind-counts N1,N2`` requests
(default 1,000 and 5,000): fibernet compiled, fibernet with ``FIBERNET_PURE_PYTHON=1``
(``fibernet-pure``), uvicorn and gevent.pywsgi by default (``--impls`` picks others).  The bar:
fibernet at most 0.33x uvicorn's instructions per request.

``--profile OUT.prof`` runs no benchmark: it serves fibernet's hello app (or, with
``--profile-target fibernet-raw``, the raw handler) under cProfile, pinned the same way, while
wrk runs for ``--duration`` s, then prints the top functions by own time per request (CPU-time
clock by default) and saves the stats.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from functools import partial

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)  # the repository root, for `import fibernet`
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import _bench  # noqa: E402
import _callgrind  # noqa: E402
import _http_idle  # noqa: E402
import _proc  # noqa: E402
import _wrk  # noqa: E402
from _bench import fmt_num  # noqa: E402
from _server import ServerProcess, pinned  # noqa: E402
from peers import _serve, hello_asgi  # noqa: E402

HOST = "127.0.0.1"
PATH = "/hello"
BODY = _serve.BODY
WORKLOAD = "hello"
PEERS = {"gevent": "hello_wsgi", "aiohttp": "hello_aiohttp", "uvloop-proto": "hello_uvloop"}
IDLE = "idle"  # --idle-conns N: memory per idle keep-alive connection (loadtest/_http_idle.py)


# --------------------------------------------------------------------------
# server command lines


@dataclass(frozen=True)
class Impl:
    name: str
    label: str  # what the table calls it
    issue_us: float | None  # CPU us/request first measured on another machine, for scale


IMPLS = {
    i.name: i
    for i in (
        Impl("fibernet", "fibernet", None),
        Impl("fibernet-nomonitor", "fibernet, scheduler monitor off (--block-warning 0)", None),
        Impl("uvicorn", "uvicorn (httptools, uvloop, raw ASGI)", 69),
        Impl("gevent", "gevent.pywsgi", 209),
        Impl("aiohttp", "aiohttp", 105),
        Impl("uvloop-proto", "uvloop protocol + httptools (reference)", 12.9),
        Impl("fibernet-raw", "fibernet TCP handler + httptools (floor)", None),
        Impl("greenlet-floor", "minimal greenlet per connection + httptools (floor)", None),
    )
}
DEFAULT_IMPLS = tuple(IMPLS)


def _exe(name: str, fallback: list[str]) -> list[str]:
    """The console script ``name`` next to this interpreter (or on PATH), else ``fallback``."""
    local = os.path.join(os.path.dirname(sys.executable), name)
    if os.access(local, os.X_OK):
        return [local]
    found = shutil.which(name)
    return [found] if found else fallback


FIBERNET_CLI = [sys.executable, "-c", "import sys; from fibernet_cli.main import cli; sys.exit(cli())"]


def fibernet_serve(cli: list[str], target: str, port: int, *options: str) -> list[str]:
    """``CLI serve TARGET OPTIONS`` on HOST:port, one scheduler thread, warnings only."""
    return [
        *cli,
        "serve",
        target,
        *options,
        "--host",
        HOST,
        "--port",
        str(port),
        "--threads",
        "1",
        "--log-level",
        "warning",
    ]


def uvicorn_serve(uvicorn: list[str], port: int) -> list[str]:
    """uvicorn (httptools, uvloop, no access log) serving ``peers/hello_asgi.py`` on HOST:port."""
    return [*uvicorn, *hello_asgi.uvicorn_args(HOST, port)]


def server_command(impl: str, port: int, extra: list[str] | None = None,
                   python: str | None = None) -> list[str]:
    """The command line of ``impl`` on ``port`` (with ``extra`` options: fibernet's and uvicorn's), its
    peers on ``python``."""
    extra = extra or []
    fibernet = _exe("fibernet", FIBERNET_CLI)
    if impl == "fibernet":
        return fibernet_serve(fibernet, "fibernet.examples.hello:app", port, *extra)
    if impl == "fibernet-nomonitor":
        return fibernet_serve(fibernet, "fibernet.examples.hello:app", port, "--block-warning", "0", *extra)
    if impl == "fibernet-raw":
        raw = ("--app-dir", _serve.HERE, "--protocol", "tcp")
        return fibernet_serve(fibernet, "hello_raw:handle", port, *raw)
    if impl == "greenlet-floor":
        return [sys.executable, os.path.join(HERE, "http_floor.py"), "--serve", str(port)]
    if impl == "uvicorn":
        uvicorn = [python, "-m", "uvicorn"] if python else _exe("uvicorn", [sys.executable, "-m", "uvicorn"])
        return uvicorn_serve(uvicorn, port) + extra
    return _serve.command(PEERS[impl], python=python, host=HOST, port=port)


def wrk_command(params: dict, port: int, duration: float) -> list[str]:
    url = f"http://{HOST}:{port}{PATH}"
    wrk = _wrk.command(params["wrk"], url, params["wrk_threads"], params["connections"], duration)
    return ["taskset", "-c", str(params["wrk_cpu"]), *wrk]


# --------------------------------------------------------------------------
# driver side: one measurement (runs in its own subprocess, pinned to the wrk CPU)

def check_hello(port: int) -> dict:
    """Two GETs over one connection: both must be 200 'Hello, World!' text/plain, keep-alive."""
    import http.client

    conn = http.client.HTTPConnection(HOST, port, timeout=5)
    try:
        seen = []
        for _ in range(2):
            conn.request("GET", PATH)
            resp = conn.getresponse()
            body = resp.read()
            seen.append((resp.status, body, resp.getheader("content-type", ""), resp.will_close))
            if resp.will_close:
                break
        headers = dict(resp.getheaders())
    finally:
        conn.close()
    problems = []
    for status, body, ctype, will_close in seen:
        if status != 200 or body != BODY or not ctype.startswith("text/plain"):
            problems.append(f"got {status} {body!r} content-type {ctype!r}")
        if will_close:
            problems.append("the server closes the connection after a response (no keep-alive)")
    if problems:
        raise RuntimeError("; ".join(problems))
    return headers


def run_wrk(params: dict, port: int, duration: float) -> tuple[dict, str]:
    cmd = wrk_command(params, port, duration)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60)
    if proc.returncode != 0:
        raise RuntimeError(f"exit {proc.returncode}: {shlex.join(cmd)}\n{proc.stderr}{proc.stdout}")
    return _wrk.result(proc.stdout), proc.stdout


def measure_idle(impl: str, params: dict) -> dict:
    """``--idle-conns``: memory per idle keep-alive connection (see loadtest/_http_idle.py)."""
    _http_idle.raise_nofile()  # (the server inherits it)
    port = _bench.free_port(HOST)
    cmd = server_command(impl, port, _http_idle.server_options(impl, params["conns"]))
    with ServerProcess(cmd, params["server_cpu"], port, params["start_timeout"]) as server:
        try:
            check_hello(port)
            rss = lambda: (_proc.rss_bytes(server.pid, descendants=True) or 0) // 1024  # noqa: E731
            result = _http_idle.idle_load(port, params["conns"], rss)
            server.check_alive()
        except Exception as exc:
            server.stop(5.0)
            raise RuntimeError(f"{exc}\n{server.tail()}") from None
        server.stop()
        result["server_command"] = shlex.join(server.command)
    return result


def measure(workload: str, impl: str, params: dict) -> dict:
    port = _bench.free_port(HOST)
    cmd = server_command(impl, port)
    with ServerProcess(cmd, params["server_cpu"], port, params["start_timeout"]) as server:
        try:
            headers = check_hello(port)
            run_wrk(params, port, params["warmup"])
            server.check_alive()
            box0 = _proc.cpu_user_steal(params["server_cpu"])
            cpu0, t0 = _proc.cpu_times(server.pid, descendants=True), time.perf_counter()
            result, wrk_text = run_wrk(params, port, params["duration"])
            cpu1, wall = _proc.cpu_times(server.pid, descendants=True), time.perf_counter() - t0
            box1 = _proc.cpu_user_steal(params["server_cpu"])
            rss = _proc.rss_bytes(server.pid)
            server.check_alive()
        except Exception as exc:
            server.stop(5.0)
            raise RuntimeError(f"{exc}\n{server.tail()}") from None
        stop_seconds, killed = server.stop()
        server_log = server.output()
        cmd = server.command
    user, system = cpu1[0] - cpu0[0], cpu1[1] - cpu0[1]
    cpu = user + system
    n = result["requests"]
    errors = sum(result["errors"].values())
    result.update(
        cpu_seconds=cpu,
        wall_seconds=wall,
        cpu_us_per_req=1e6 * cpu / n if n else None,
        user_us_per_req=1e6 * user / n if n else None,
        sys_us_per_req=1e6 * system / n if n else None,
        cpu_util=cpu / wall,
        # what else ran on the server's CPU meanwhile (other processes; noise), and steal
        others_util=max(0.0, (box1[0] - box0[0]) - cpu) / wall,
        steal_util=(box1[1] - box0[1]) / wall,
        rss=rss,
        error_total=errors,
        response_headers=headers,
        stop_seconds=stop_seconds,
        killed=killed,
        server_command=shlex.join(cmd),
        server_log=server_log,
        wrk_output=wrk_text,
    )
    result["summary"] = (
        f"{result['cpu_us_per_req']:.1f} us CPU/req, {fmt_num(result['rps'])} req/s, "
        f"CPU {100 * result['cpu_util']:.0f}% (others on CPU {params['server_cpu']}: "
        f"{100 * result['others_util']:.0f}%), errors {errors}, stop {stop_seconds:.1f}s"
        + (" (SIGKILLed)" if killed else "")
    )
    return result


def dispatch(workload: str, impl: str, params: dict) -> dict:
    if workload == IDLE:
        return measure_idle(impl, params)
    return measure(workload, impl, params)


# --------------------------------------------------------------------------
# --profile: fibernet under cProfile and wrk


def profile_fibernet(args, params: dict) -> int:
    """Serve fibernet's hello app under cProfile (pinned like the benchmark) while wrk runs
    for ``--duration`` s, stop it, and print the top functions by own time, per request."""
    import pstats

    port = _bench.free_port(HOST)
    out = args.profile
    cmd = _serve.command("hello_profile", "--out", out, "--clock", args.profile_clock,
                         "--target", args.profile_target, host=HOST, port=port)
    wrk = wrk_command(params, port, args.duration)
    print(f"command: {_bench.command_line()}\nserver:  {shlex.join(pinned(cmd, params['server_cpu']))}\n"
          f"load:    {shlex.join(wrk)}", flush=True)
    with ServerProcess(cmd, params["server_cpu"], port, params["start_timeout"]) as server:
        try:
            check_hello(port)  # 2 requests
            result, text = run_wrk(params, port, args.duration)
        finally:
            server.stop(30)  # (it writes the stats as it stops)
    print(text)
    requests = result["requests"] + 2
    stats = pstats.Stats(out)
    total = stats.total_tt
    print(
        f"profiled ({args.profile_clock} clock): {requests} requests, {total:.3f} s of profiled time = "
        f"{1e6 * total / requests:.1f} us/request\n(cProfile inflates Python-heavy code several-fold: "
        "compare shares and calls/req, not absolute times)\n"
    )
    rows = []
    entries = sorted(stats.stats.items(), key=lambda kv: kv[1][2], reverse=True)[: args.profile_top]
    for (filename, line, func), (_cc, nc, tt, ct, _callers) in entries:
        if filename == "~":
            where = func
        else:
            short = (
                os.path.relpath(filename, ROOT) if filename.startswith(ROOT) else os.path.basename(filename)
            )
            where = f"{short}:{line}({func})"
        rows.append(
            [
                f"{nc / requests:.2f}",
                f"{1e6 * tt / requests:.2f}",
                f"{100 * tt / total:.1f}%",
                f"{1e6 * tt / nc:.2f}" if nc else "-",
                f"{1e6 * ct / requests:.2f}",
                where,
            ]
        )
    print(
        _bench.format_table(
            ["calls/req", "tottime us/req", "share", "us/call", "cumtime us/req", "function"], rows
        )
    )
    print(f"\nstats written to {out} (python -m pstats {out})")
    return 0


# --------------------------------------------------------------------------
# parent side: plan, run, summarise


@dataclass(frozen=True)
class Bar:
    peer: str
    max_ratio: float  # fibernet CPU/req <= max_ratio x peer's

    def describe(self) -> str:
        return f"fibernet CPU/req <= {self.max_ratio:g}x {IMPLS[self.peer].label}"


BARS = (Bar("uvicorn", 0.33), Bar("gevent", 0.15))


def summarise(samples: _bench.Samples, impls: list[str]) -> list[dict]:
    ours = _bench.median(samples.values(WORKLOAD, "fibernet", "cpu_us_per_req"))
    ours_rps = _bench.median(samples.values(WORKLOAD, "fibernet", "rps"))
    rows = []
    for impl in impls:
        cpu = samples.values(WORKLOAD, impl, "cpu_us_per_req")
        rps = samples.values(WORKLOAD, impl, "rps")
        results = samples.results.get((WORKLOAD, impl), [])
        error_kinds: dict[str, int] = {}
        for r in results:
            for kind, count in r["errors"].items():
                error_kinds[kind] = error_kinds.get(kind, 0) + count
        median = _bench.median(cpu)
        rows.append(
            {
                "impl": impl,
                "label": IMPLS[impl].label,
                "cpu_us_per_req": median,
                "user_us_per_req": _bench.median(samples.values(WORKLOAD, impl, "user_us_per_req")),
                "sys_us_per_req": _bench.median(samples.values(WORKLOAD, impl, "sys_us_per_req")),
                "spread": _bench.spread(cpu),
                "rps": _bench.median(rps),
                "cpu_util": _bench.median(samples.values(WORKLOAD, impl, "cpu_util")),
                "others_util": max(samples.values(WORKLOAD, impl, "others_util"), default=None),
                "rss": _bench.median(samples.values(WORKLOAD, impl, "rss")),
                "errors": sum(error_kinds.values()),
                "error_kinds": {k: v for k, v in error_kinds.items() if v},
                "rounds": len(results),
                "failed_rounds": len(samples.errors.get((WORKLOAD, impl), [])),
                "ratio": None if impl == "fibernet" else _bench.ratio(ours, median),
                "rps_ratio": None if impl == "fibernet" else _bench.ratio(ours_rps, _bench.median(rps)),
                "issue_us": IMPLS[impl].issue_us,
                "stop_seconds": max((r["stop_seconds"] for r in results), default=None),
                "killed": sum(r["killed"] for r in results),
            }
        )
    return rows


def check_bars(rows: list[dict], samples: _bench.Samples) -> list[dict]:
    by_impl = {r["impl"]: r for r in rows}
    ours = by_impl["fibernet"]
    checks = []
    for bar in BARS:
        peer = by_impl.get(bar.peer)
        ratio = peer["ratio"] if peer else None
        checks.append(
            {
                "bar": bar.describe(),
                "measured": None
                if ratio is None
                else f"{ratio:.3f}x ({ours['cpu_us_per_req']:.1f} vs {peer['cpu_us_per_req']:.1f} us)",
                "pass": None if ratio is None else ratio <= bar.max_ratio,
            }
        )
    failed_rounds = ours["failed_rounds"]
    checks.append(
        {
            "bar": "fibernet: no errors (non-2xx, socket errors, failed runs)",
            "measured": f"{ours['errors']} errors"
            + (f" {ours['error_kinds']}" if ours["error_kinds"] else "")
            + f" in {ours['rounds']} runs, {failed_rounds} failed runs",
            "pass": ours["errors"] == 0 and failed_rounds == 0 and ours["rounds"] > 0,
        }
    )
    return checks


def render_rows(rows: list[dict]) -> str:
    def errors(r: dict) -> str:
        text = str(r["errors"])
        if r["error_kinds"]:
            text += " (" + ", ".join(f"{k} {v}" for k, v in sorted(r["error_kinds"].items())) + ")"
        if r["failed_rounds"]:
            text += f"; {r['failed_rounds']} runs FAILED"
        return text

    table = [
        [
            r["label"],
            "-" if r["cpu_us_per_req"] is None else f"{r['cpu_us_per_req']:.1f}",
            _bench.fmt_pct(r["spread"]),
            "-"
            if r["user_us_per_req"] is None
            else f"{r['user_us_per_req']:.1f} / {r['sys_us_per_req']:.1f}",
            fmt_num(r["rps"]),
            _bench.fmt_pct(r["cpu_util"]),
            _bench.fmt_pct(r["others_util"]),
            "-" if r["rss"] is None else f"{r['rss'] / 2**20:.0f}",
            errors(r),
            _bench.fmt_ratio(r["ratio"]),
            _bench.fmt_ratio(r["rps_ratio"]),
            "-" if r["issue_us"] is None else f"{r['issue_us']:g}",
        ]
        for r in rows
    ]
    headers = [
        "server",
        "CPU us/req",
        "spread",
        "user / sys us",
        "req/s",
        "server CPU",
        "others on CPU*",
        "RSS MiB",
        "errors",
        "fibernet ratio (CPU)",
        "fibernet ratio (req/s)",
        "issue ref us/req",
    ]
    return _bench.format_table(headers, table)


def floor_estimate(rows: list[dict], server_cpu: int) -> dict | None:
    """The greenlet floor plus what fibernet's HTTP layer costs over a bare parse (measured
    without I/O by ``http_floor.py --layer``, pinned to the server CPU), beside the uvicorn
    bar: a lower bound for a greenlet-based server that does the HTTP work."""
    by_impl = {r["impl"]: r for r in rows}
    floor, uvicorn = by_impl.get("greenlet-floor"), by_impl.get("uvicorn")
    if not floor or not uvicorn or floor["cpu_us_per_req"] is None or uvicorn["cpu_us_per_req"] is None:
        return None
    out = subprocess.run(
        [
            "taskset",
            "-c",
            str(server_cpu),
            sys.executable,
            os.path.join(HERE, "http_floor.py"),
            "--layer",
            "--json",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    ).stdout
    layer = json.loads(out.strip().splitlines()[-1])
    bar = next(b for b in BARS if b.peer == "uvicorn")
    return {
        "greenlet_floor_us": floor["cpu_us_per_req"],
        **layer,
        "lower_bound_us": floor["cpu_us_per_req"] + layer["extra_us"],
        "bar_us": bar.max_ratio * uvicorn["cpu_us_per_req"],
    }


def render_floor(est: dict) -> str:
    return (
        f"floor: a greenlet per connection with nothing else {est['greenlet_floor_us']:.2f} us/req"
        f" + fibernet's HTTP layer over a bare parse {est['extra_us']:.2f} us (without I/O:"
        f" {est['layer_us']:.2f} vs {est['bare_parse_us']:.2f})\n"
        f"       = {est['lower_bound_us']:.2f} us/req for greenlets doing the HTTP work, no runtime at all;"
        f" the uvicorn bar allows {est['bar_us']:.2f}"
    )


def render_checks(checks: list[dict]) -> str:
    verdict = {True: "PASS", False: "FAIL", None: "n/a"}
    return _bench.format_table(
        ["bar", "measured", "result"], [[c["bar"], c["measured"] or "-", verdict[c["pass"]]] for c in checks]
    )


# --------------------------------------------------------------------------
# command line


def parse_args(argv=None):
    parser = _bench.argument_parser(__doc__)
    parser.add_argument("--quick", action="store_true", help="1 round of 2 s (smoke run)")
    parser.add_argument("--rounds", type=int, help="interleaved rounds (default 3, --quick 1)")
    parser.add_argument("--duration", type=float, help="measured wrk run, seconds (default 5, --quick 2)")
    parser.add_argument("--warmup", type=float, default=1.0, help="wrk warm-up run, seconds (default 1)")
    parser.add_argument("--connections", type=int, default=100, help="wrk -c (default 100)")
    parser.add_argument("--wrk-threads", type=int, default=1, help="wrk -t (default 1)")
    parser.add_argument("--server-cpu", type=int, default=0, help="CPU the server is pinned to (default 0)")
    parser.add_argument(
        "--wrk-cpu", type=int, default=1, help="CPU wrk (and the driver) is pinned to (default 1)"
    )
    parser.add_argument(
        "--impls", help=f"comma list out of {','.join(IMPLS)} (default: all; --callgrind: "
        f"{','.join(CALLGRIND_IMPLS)}, and fibernet-pure)"
    )
    parser.add_argument("--callgrind", action="store_true", help="instructions per request under callgrind")
    parser.add_argument("--callgrind-counts", default="1000,5000", help="N1,N2 requests (default 1000,5000)")
    parser.add_argument(
        "--callgrind-warmup", type=int, default=500, help="requests before them (default 500)"
    )
    parser.add_argument("--json", metavar="PATH", help="also write all results as JSON to PATH")
    parser.add_argument(
        "--idle-conns",
        type=int,
        metavar="N",
        help="instead of wrk: memory per idle keep-alive connection at N connections "
        "(default impls then: fibernet,uvicorn,gevent)",
    )
    parser.add_argument("--start-timeout", type=float, default=30, help="seconds a server may take to answer")
    parser.add_argument("--timeout", type=float, default=120, help="per-measurement timeout, seconds")
    parser.add_argument(
        "--profile",
        metavar="OUT.prof",
        help="instead of the benchmark: run fibernet under "
        "cProfile while wrk runs for --duration s, print the top functions, save the stats",
    )
    parser.add_argument("--profile-top", type=int, default=30, help="functions --profile prints (default 30)")
    parser.add_argument(
        "--profile-target",
        choices=("fibernet", "fibernet-raw"),
        default="fibernet",
        help="what --profile serves: the hello app (default) or the peers/hello_raw.py TCP handler",
    )
    parser.add_argument(
        "--profile-clock",
        choices=("cpu", "wall"),
        default="cpu",
        help="cProfile's timer: the thread's CPU time (default) or wall time",
    )
    args = parser.parse_args(argv)
    _bench.fill_defaults(
        args, {"rounds": 1, "duration": 2.0} if args.quick else {"rounds": 3, "duration": 5.0}
    )
    if args.callgrind:
        args.impls = _bench.comma_list(parser, args.impls or ",".join(CALLGRIND_IMPLS),
                                       (*IMPLS, "fibernet-pure"), "--impls")
        return args
    if args.impls is None:
        args.impls = "fibernet,uvicorn,gevent" if args.idle_conns else ",".join(DEFAULT_IMPLS)
    args.impls = _bench.comma_list(parser, args.impls, IMPLS, "--impls")
    if "fibernet" not in args.impls:
        parser.error("--impls must include fibernet")
    if args.server_cpu == args.wrk_cpu:
        parser.error("--server-cpu and --wrk-cpu must differ")
    return args


CALLGRIND_IMPLS = ("fibernet", "fibernet-pure", "uvicorn", "gevent")
CALLGRIND_BARS = {"uvicorn": 0.33}


def callgrind_target(impl: str) -> _callgrind.Target:
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")]))}
    if impl in ("fibernet", "fibernet-pure"):
        if impl == "fibernet-pure":
            env["FIBERNET_PURE_PYTHON"] = "1"
        return _callgrind.Target(impl, lambda port: fibernet_serve(
            FIBERNET_CLI, "fibernet.examples.hello:app", port, "--block-warning", "0"), env)
    return _callgrind.Target(impl, partial(server_command, impl), env)


def callgrind_main(args) -> int:
    targets = [callgrind_target(i) for i in args.impls]
    return _callgrind.main(args, [("HTTP hello", targets, _callgrind.http_exchange(PATH))], CALLGRIND_BARS)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.callgrind:
        return callgrind_main(args)
    for cpu in (args.server_cpu, args.wrk_cpu):
        _bench.check_cpu(cpu)
    if not shutil.which("taskset"):
        raise SystemExit("taskset not found (util-linux)")
    wrk = shutil.which("wrk")
    if not wrk:
        raise SystemExit("wrk not found: apt-get install -y wrk")
    params = {
        "duration": args.duration,
        "warmup": args.warmup,
        "connections": args.connections,
        "wrk_threads": args.wrk_threads,
        "server_cpu": args.server_cpu,
        "wrk_cpu": args.wrk_cpu,
        "wrk": wrk,
        "start_timeout": args.start_timeout,
    }
    if args.profile:
        return profile_fibernet(args, params)
    if args.idle_conns:
        return main_idle(args, params)
    plan = [(WORKLOAD, impl, params) for impl in args.impls]
    command = _bench.command_line()
    print(f"command: {command}", flush=True)
    print(
        f"{len(plan)} servers x {args.rounds} rounds, each measured by a fresh driver pinned to CPU "
        f"{args.wrk_cpu}, e.g.:\n  " + _bench.example_child(__file__, plan, args.wrk_cpu)
    )
    print(f"servers (pinned to CPU {args.server_cpu}, PORT = a free port):")
    for impl in args.impls:
        print(
            f"  {impl:<13} taskset -c {args.server_cpu} "
            + shlex.join(server_command(impl, 0)).replace("--port 0", "--port PORT")
        )
    print(
        "load: " + shlex.join(wrk_command(params, 0, args.warmup)).replace(":0/", ":PORT/") + "   (warm-up)"
    )
    print(
        "      "
        + shlex.join(wrk_command(params, 0, args.duration)).replace(":0/", ":PORT/")
        + "   (measured)",
        flush=True,
    )

    samples = _bench.run_interleaved(__file__, plan, args.rounds, args.wrk_cpu, args.timeout)
    rows = summarise(samples, args.impls)
    checks = check_bars(rows, samples)

    print()
    print(render_rows(rows))
    print()
    print(render_checks(checks))
    floor = floor_estimate(rows, args.server_cpu)
    if floor is not None:
        print()
        print(render_floor(floor))
    print(
        "\nCPU us/req = server utime+stime during the measured wrk run / requests completed (median of "
        f"{args.rounds}; user / sys: the two parts, medians);\nserver CPU = that CPU time / wall time; "
        "fibernet ratio (CPU) = fibernet's CPU us/req / the row's (below 1: fibernet spends less);\n"
        "fibernet ratio (req/s) = fibernet's req/s / the row's.\n"
        "* others on CPU: the largest share, over rounds, of the server CPU's time used by other processes\n"
        "  during the run (noise; ideally ~0%)."
    )
    stops = [
        f"{r['impl']} {r['stop_seconds']:.1f}s" + (f" ({r['killed']} SIGKILLed)" if r["killed"] else "")
        for r in rows
        if r["stop_seconds"] is not None
    ]
    print("slowest stop after SIGTERM: " + ", ".join(stops))
    print(f"command: {command}")
    _bench.save_json(
        args.json,
        {
            "command": command,
            "args": vars(args),
            "rows": rows,
            "checks": checks,
            "floor": floor,
            "samples": samples.to_json(),
        },
    )
    return _bench.exit_status(checks, samples)


def main_idle(args, params: dict) -> int:
    params = {**params, "conns": args.idle_conns}
    plan = [(IDLE, impl, params) for impl in args.impls]
    command = _bench.command_line()
    print(f"command: {command}", flush=True)
    for impl in args.impls:
        extra = _http_idle.server_options(impl, args.idle_conns)
        line = shlex.join(server_command(impl, 0, extra)).replace("--port 0", "--port PORT")
        print(f"  {impl:<13} {line}")
    samples = _bench.run_interleaved(__file__, plan, args.rounds, args.wrk_cpu, args.timeout)
    rows = _http_idle.summarise(samples, args.impls, IDLE)
    checks = _http_idle.check_bar(rows)
    print(f"\nMemory per idle keep-alive HTTP connection (server VmRSS growth / connections), "
          f"median of {args.rounds} round(s):")
    print(_http_idle.render(rows))
    print()
    print(render_checks(checks))
    print(f"command: {command}")
    _bench.save_json(args.json, {"command": command, "args": vars(args), "rows": rows, "checks": checks,
                                 "samples": samples.to_json()})
    return _bench.exit_status(checks, samples)


if __name__ == "__main__":
    if _bench.is_child():
        sys.exit(_bench.serve_child(dispatch))
    sys.exit(main())
