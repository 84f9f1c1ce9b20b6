"""fibernet's load generator, written on fibernet's own client side.

Run from the repository root (or as ``fibernet loadtest load ...``)::

    python loadtest/load.py --workload http --port 8000 --path /hello -c 50 -d 10
    python loadtest/load.py --workload echo --port 9000 --size 1024 -c 100 --count 100000
    python loadtest/load.py --workload http --port 8000 --rate 5000 -d 30 --plot lat.png
    python loadtest/load.py --workload line --port 9000 --line PING --expect PONG -d 5
    python loadtest/load.py --workload churn --port 9000 -c 20 -d 5 --json churn.json

Workloads (``_load_workloads.py``): ``echo`` (``--size`` bytes, every echoed byte checked),
``line`` (one line per request, the answer must be the same line, ``--expect any`` or a
given line), ``http`` (``--method --path --header 'name: value' --body --no-keepalive
--pipeline D``; answers must be 2xx), ``churn`` (connect, one echo exchange, close).

Closed loop (default): ``--connections`` N connections, each sends its next request when
its answer has come (``--pipeline D``: keeps D requests in flight).  Open loop (``--rate R``
requests/s over all connections): request k is due at t0 + k/R; latency is measured from
that intended time, so a server that stalls is seen in the percentiles (coordinated
omission corrected as wrk2 does it).  Every run is bounded: ``--duration`` seconds or
``--count`` requests (a failed connect counts as an attempt), and each socket wait by
``--timeout``.  Only loopback addresses are allowed unless ``--allow-remote``.

``--processes P`` runs P load processes (this script with ``--_child``), splitting the
connections, the rate and the count; each writes its HdrHistogram (encoded) and counters as
JSON, and this process merges them.  Output: a progress line while it runs (``--progress``,
on by default when stderr is a terminal), a table at the end, ``--json PATH`` (``-`` for
stdout; the table then goes to stderr) and ``--plot FILE.png`` (latency by percentile and
throughput over time; needs matplotlib).

From Python: ``run_load(Config(workload="http", port=8000, count=1000)) -> Result``.
"""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import json
import os
import queue
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # the repository root, for `import fibernet`
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import _bench  # noqa: E402
from _load_engine import run_local, wait_for_go  # noqa: E402
from _load_stats import Progress, Result, dumps, plot, render  # noqa: E402
from _load_workloads import WORKLOADS, make_workload  # noqa: E402

CHILD_FLAG = "--_child"


@dataclass
class Config:
    workload: str = "echo"
    host: str = "127.0.0.1"
    port: int = 8000
    connections: int = 10
    duration: float | None = None
    count: int | None = None
    rate: float | None = None
    processes: int = 1
    size: int = 64
    line: str | None = None
    expect: str = "echo"
    method: str = "GET"
    path: str = "/"
    headers: list = field(default_factory=list)  # [(name, value)]
    body: str = ""
    keepalive: bool = True
    pipeline: int = 1
    timeout: float = 10.0
    allow_remote: bool = False
    progress: bool = False
    progress_interval: float = 1.0

    def validate(self) -> Config:
        if self.workload not in WORKLOADS:
            raise ValueError(f"workload must be one of {', '.join(WORKLOADS)}, not {self.workload!r}")
        if (self.duration is None) == (self.count is None):
            raise ValueError("give exactly one of duration and count: every run must stop by itself")
        if self.duration is not None and not 0 < self.duration <= 24 * 3600:
            raise ValueError("duration must be > 0 and at most a day")
        if self.count is not None and self.count < 1:
            raise ValueError("count must be at least 1")
        if self.connections < 1 or self.processes < 1:
            raise ValueError("connections and processes must be at least 1")
        if self.processes > self.connections:
            raise ValueError("every load process needs a connection: processes <= connections")
        if self.rate is not None and not self.rate > 0:
            raise ValueError("rate must be > 0 requests/s")
        if self.pipeline < 1:
            raise ValueError("pipeline depth must be at least 1")
        if self.timeout is None or not self.timeout > 0:
            raise ValueError("timeout must be > 0 (every wait is bounded)")
        if self.pipeline > 1 and (self.workload == "churn" or not self.keepalive):
            raise ValueError("pipelining needs kept connections (not churn, not --no-keepalive)")
        if not self.allow_remote and not is_loopback(self.host):
            raise ValueError(f"{self.host} is not a loopback address (pass allow_remote / --allow-remote)")
        make_workload(self)  # checks the workload's own options
        return self

    def describe(self) -> str:
        return make_workload(self).describe()

    def to_dict(self) -> dict:
        data = dataclasses.asdict(self)
        data["headers"] = [list(h) for h in self.headers]
        data["description"] = self.describe()
        return data


def is_loopback(host: str) -> bool:
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(info[4][0]).is_loopback for info in infos)


def _split(total: int | float | None, parts: int, index: int) -> Any:
    if total is None:
        return None
    if isinstance(total, float) or not isinstance(total, int):
        return total / parts
    return total // parts + (1 if index < total % parts else 0)


def child_configs(cfg: Config) -> list[Config]:
    """The configs of P load processes: connections, rate and count split between them."""
    out = []
    for i in range(cfg.processes):
        count = _split(cfg.count, cfg.processes, i)
        out.append(
            dataclasses.replace(
                cfg, processes=1, connections=_split(cfg.connections, cfg.processes, i),
                rate=None if cfg.rate is None else cfg.rate / cfg.processes, count=count,
            )
        )
    return [c for c in out if c.count is None or c.count > 0]


# --------------------------------------------------------------------------
# running


def run_load(config: Config) -> Result:
    """Run the load ``config`` describes (in this process, or in ``processes`` children)
    and return the merged :class:`Result`."""
    cfg = config.validate()
    if cfg.processes == 1:
        progress = Progress() if cfg.progress else None
        emit = (lambda p: progress.show(p["elapsed"], p["ok"], p["errors"])) if progress else None
        try:
            part = run_local(cfg, emit)
        finally:
            if progress:
                progress.close()
        return Result.merge(cfg.to_dict(), [part])
    return Result.merge(cfg.to_dict(), run_children(cfg))


def run_children(cfg: Config) -> list[dict]:
    configs = child_configs(cfg)
    events: queue.Queue = queue.Queue()
    procs: list[subprocess.Popen] = []
    readers: list[threading.Thread] = []

    def read(i: int, proc: subprocess.Popen) -> None:
        for line in proc.stdout:  # type: ignore[union-attr]
            line = line.strip()
            if line.startswith("{"):
                try:
                    events.put((i, json.loads(line)))
                except ValueError:
                    pass
        events.put((i, None))

    try:
        for i, child in enumerate(configs):
            proc = subprocess.Popen(
                [sys.executable, os.path.abspath(__file__), CHILD_FLAG], stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, text=True,
            )
            procs.append(proc)
            proc.stdin.write(json.dumps(dataclasses.asdict(child)) + "\n")  # type: ignore[union-attr]
            proc.stdin.flush()  # type: ignore[union-attr]
            t = threading.Thread(target=read, args=(i, proc), name=f"load-child-{i}", daemon=True)
            t.start()
            readers.append(t)
        parts: dict[int, dict] = {}
        ready: set[int] = set()
        ended: set[int] = set()
        latest: dict[int, dict] = {}
        progress = Progress() if cfg.progress else None
        started = False
        shown = 0
        while len(ended) < len(procs):
            i, event = events.get()
            if event is None:
                ended.add(i)
                if not started and i not in ready:
                    break  # a child died before it was ready: nothing to wait for
                continue
            if "ready" in event:
                ready.add(i)
                if len(ready) == len(procs):
                    for proc in procs:  # all connected: start together
                        proc.stdin.write("go\n")  # type: ignore[union-attr]
                        proc.stdin.flush()  # type: ignore[union-attr]
                    started = True
            elif "progress" in event:
                latest[i] = event["progress"]
                if progress and len(latest) == len(procs):
                    snap = list(latest.values())
                    tick = min(p["tick"] for p in snap)
                    if tick > shown:  # every child has reported this tick: show the sum
                        shown = tick
                        progress.show(
                            tick * cfg.progress_interval, sum(p["ok"] for p in snap),
                            sum(p["errors"] for p in snap),
                        )
            elif "part" in event:
                parts[i] = event["part"]
        if progress:
            progress.close()
    finally:
        for proc in procs:
            try:
                proc.stdin.close()  # type: ignore[union-attr]
            except OSError:
                pass
        for proc in procs:
            try:
                proc.wait(timeout=cfg.timeout + 30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            proc.stdout.close()  # type: ignore[union-attr]
        for t in readers:
            t.join(5)
    failed = [i for i in range(len(procs)) if i not in parts]
    if failed:
        codes = ", ".join(f"#{i} exit {procs[i].returncode}" for i in failed)
        raise RuntimeError(f"load process(es) {codes} gave no result (see their output above)")
    return [parts[i] for i in sorted(parts)]


def child_main() -> int:
    """``load.py --_child``: config on the first stdin line; JSON lines on stdout:
    {"ready"}, then {"progress"} every progress_interval, then {"part"}."""
    cfg = Config(**json.loads(sys.stdin.buffer.readline()))
    cfg.headers = [tuple(h) for h in cfg.headers]

    def say(obj: dict) -> None:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()

    def before_start() -> None:
        say({"ready": True})
        wait_for_go()

    part = run_local(cfg, lambda p: say({"progress": p}), before_start)
    say({"part": part})
    return 0


# --------------------------------------------------------------------------
# command line


def _header(text: str) -> tuple[str, str]:
    name, sep, value = text.partition(":")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"a header is 'name: value', not {text!r}")
    return name.strip(), value.strip()


def parse_args(argv: list[str] | None = None) -> tuple[Config, argparse.Namespace]:
    p = argparse.ArgumentParser(
        prog="load.py", description="fibernet's load generator: closed or open loop, HdrHistogram latencies.",
        epilog="Every run stops by itself: --duration (default 10 s) or --count.",
    )
    p.add_argument("--workload", "-w", choices=WORKLOADS, default="echo")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", "-p", type=int, required=True)
    p.add_argument("--connections", "-c", type=int, default=10)
    bound = p.add_mutually_exclusive_group()
    bound.add_argument("--duration", "-d", type=float, help="seconds (default 10 if no --count)")
    bound.add_argument("--count", "-n", type=int, help="requests in all (attempts: failed connects count)")
    p.add_argument("--rate", "-r", type=float, help="open loop: requests/s over all connections")
    p.add_argument("--processes", "-P", type=int, default=1, help="load processes (default 1)")
    p.add_argument("--size", "-s", type=int, default=64, help="echo/churn message, line length (bytes)")
    p.add_argument("--line", help="line workload: the request line (default: generated, --size bytes)")
    p.add_argument("--expect", default="echo", help="line workload: 'echo' (default), 'any' or a line")
    p.add_argument("--method", "-m", default="GET")
    p.add_argument("--path", default="/")
    p.add_argument("--header", "-H", type=_header, action="append", default=[], metavar="'NAME: VALUE'")
    p.add_argument("--body", default="", help="HTTP request body (text)")
    p.add_argument("--keepalive", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--pipeline", type=int, default=1, help="requests in flight per connection")
    p.add_argument("--timeout", type=float, default=10.0, help="bound of each socket wait (s)")
    p.add_argument("--allow-remote", action="store_true", help="allow a non-loopback --host")
    p.add_argument("--json", metavar="PATH", help="write the result as JSON ('-': stdout)")
    p.add_argument("--plot", metavar="FILE.png", help="latency percentiles and throughput over time")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--progress-interval", type=float, default=1.0)
    args = p.parse_args(argv)
    if args.duration is None and args.count is None:
        args.duration = 10.0
    cfg = Config(
        workload=args.workload, host=args.host, port=args.port, connections=args.connections,
        duration=args.duration, count=args.count, rate=args.rate, processes=args.processes, size=args.size,
        line=args.line, expect=args.expect, method=args.method, path=args.path, headers=args.header,
        body=args.body, keepalive=args.keepalive, pipeline=args.pipeline, timeout=args.timeout,
        allow_remote=args.allow_remote,
        progress=sys.stderr.isatty() if args.progress is None else args.progress,
        progress_interval=args.progress_interval,
    )
    try:
        cfg.validate()
    except ValueError as exc:
        p.error(str(exc))
    return cfg, args


def main(argv: list[str] | None = None) -> int:
    cfg, args = parse_args(argv)
    started = time.time()
    result = run_load(cfg)
    table = render(result, _bench.fmt_num, _bench.format_table)
    print(table, file=sys.stderr if args.json == "-" else sys.stdout, flush=True)
    if args.json:
        extra = {
            "command": _bench.command_line(), "environment": _bench.environment(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        }
        text = dumps(result, extra)
        if args.json == "-":
            print(text)
        else:
            with open(args.json, "w") as fh:
                fh.write(text + "\n")
    if args.plot:
        try:
            plot(result, args.plot)
        except ImportError:
            print("--plot needs matplotlib: pip install 'fibernet[loadtest]'", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == CHILD_FLAG:
        sys.exit(child_main())
    sys.exit(main())
