"""Bus benchmark: cross-process pub/sub over one Redis, fibernet's bus against redis-py, and a
remote actor call against a local one.

Run from the repository root::

    python loadtest/bus.py              # N = 50,000 messages, 5,000 calls
    python loadtest/bus.py --quick      # smoke run: small N
    python loadtest/bus.py --json out/bus.json

It starts its own ``redis-server`` (Debian's) on a free loopback port in a temporary directory
(or uses ``--url``).  All of it runs in one run, against the same broker.

workloads
    ``pubsub``: a publisher (this process) sends N messages ``{"t": monotonic, "i": i}`` to
    one topic as fast as it can; a subscriber in a child process receives them and takes
    ``monotonic() - t`` for each (CLOCK_MONOTONIC is system-wide on Linux, so the two
    processes' clocks agree).  Throughput is N / (last received - first sent).  The latency
    of this run is mostly queueing (fibernet's publish does not wait for the broker; redis-py's
    does, one at a time), so:
    ``pubsub-paced``: the same at a fixed rate (``--rate``, 2,000/s; N/5 messages): the
    latency percentiles to compare -- but only where both publishers kept that rate.  The
    ``sent/s`` column is the rate each publisher offered: redis-py's ``publish`` waits for
    the broker's reply, so on a busy machine it sends slower than asked and its percentiles
    are those of a lighter load (coordinated omission); fibernet's publish does not wait,
    so it keeps the rate and catches up when it is behind.
    ``call``: N sequential calls with a 5 s timeout, answered with their argument.

implementations
    ``fibernet``: ``fibernet.bus`` on both sides (fibers, hiredis.Reader, one scheduler).
    ``redis-py``: redis-py's own client: ``Redis.publish`` in the publisher's thread and
    ``PubSub.listen()`` in the subscriber's thread (redis-py uses hiredis too when installed).
    ``fibernet-remote`` / ``fibernet-local`` (call): a ``RemoteRef.call`` to an actor served by
    the child process over the bus, against ``ActorRef.call`` to an actor in the same scheduler.

redis-py is a test/loadtest dependency only; fibernet never uses it at run time.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # the repository root, for `import fibernet`
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import _bench  # noqa: E402

TOPIC = "bench"
TIMEOUT = 5.0


def percentiles(values: list[float]) -> dict:
    values = sorted(values)
    pick = lambda q: values[min(len(values) - 1, int(q * len(values)))] * 1e6  # noqa: E731
    return {"p50_us": pick(0.50), "p90_us": pick(0.90), "p99_us": pick(0.99), "max_us": values[-1] * 1e6}


# -- the child: a subscriber, or the host of the remote actor ---------------------------------


def child_fibernet_sub(url: str, n: int) -> dict:
    import fibernet as fn
    import fibernet.bus as fb

    def main() -> dict:
        bus = fb.connect(url, wait=10)
        sub = bus.subscribe(TOPIC, capacity=n + 1)
        print("ready", flush=True)
        lat, first = [], None
        for _ in range(n):
            m = sub.get()
            lat.append(time.monotonic() - m["t"])
            first = first if first is not None else m["t"]
        last = time.monotonic()
        lost = bus.stats["lost"]
        bus.close()
        return {"received": n, "lost": lost, "seconds": last - first, "lat": lat}

    return fn.run(main)


def child_redispy_sub(url: str, n: int) -> dict:
    import redis

    r = redis.Redis.from_url(url)
    p = r.pubsub()
    p.subscribe(TOPIC)
    p.get_message(timeout=10)  # the subscribe confirmation
    print("ready", flush=True)
    lat, first, got = [], None, 0
    for message in p.listen():
        if message["type"] != "message":
            continue
        m = json.loads(message["data"])
        lat.append(time.monotonic() - m["t"])
        first = first if first is not None else m["t"]
        got += 1
        if got == n:
            break
    last = time.monotonic()
    p.close()
    r.close()
    return {"received": n, "lost": 0, "seconds": last - first, "lat": lat}


def child_actor_host(url: str, n: int) -> dict:
    import fibernet as fn
    import fibernet.bus as fb
    from fibernet.actors import start
    from fibernet.net.threadpool import run_in_thread

    def main() -> dict:
        bus = fb.connect(url, wait=10)
        bus.register(start(lambda mailbox: [m.reply(m.body) for m in mailbox], name="bench-echo"))
        print("ready", flush=True)
        run_in_thread(sys.stdin.readline)  # until the parent is done
        bus.close()
        return {}

    return fn.run(main)


CHILDREN = {"fibernet": child_fibernet_sub, "redis-py": child_redispy_sub, "host": child_actor_host}


def start_child(kind: str, url: str, n: int) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, __file__, "--child", kind, url, str(n)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    line = proc.stdout.readline().strip()
    if line != "ready":
        proc.kill()
        raise RuntimeError(f"child {kind} did not start: {line!r}")
    return proc


def finish_child(proc: subprocess.Popen) -> dict:
    out, _ = proc.communicate(timeout=120)
    return json.loads(out.strip().splitlines()[-1])


# -- the parent: publishers and callers ----------------------------------------------------------


def publish_fibernet(url: str, n: int, rate: float | None) -> float:
    """Publish n messages (at ``rate`` per second, or flat out); the rate offered."""
    import fibernet as fn
    import fibernet.bus as fb

    def main() -> float:
        bus = fb.connect(url, wait=10)
        start = time.monotonic()
        for i in range(n):
            if rate is not None and (ahead := start + i / rate - time.monotonic()) > 0:
                fn.sleep(ahead)
            while not bus.publish(TOPIC, {"t": time.monotonic(), "i": i}):
                fn.yield_now()  # the outbox is full: let the connection's fiber send
        sent = n / (time.monotonic() - start)
        bus.close()  # sends what is queued, then closes
        return sent

    return fn.run(main)


def publish_redispy(url: str, n: int, rate: float | None) -> float:
    import redis

    r = redis.Redis.from_url(url)
    start = time.monotonic()
    for i in range(n):
        if rate is not None and (ahead := start + i / rate - time.monotonic()) > 0:
            time.sleep(ahead)
        r.publish(TOPIC, json.dumps({"t": time.monotonic(), "i": i}))
    sent = n / (time.monotonic() - start)
    r.close()
    return sent


def run_pubsub(impl: str, url: str, n: int, rate: float | None = None) -> dict:
    proc = start_child(impl, url, n)
    sent = (publish_fibernet if impl == "fibernet" else publish_redispy)(url, n, rate)
    result = finish_child(proc)
    workload = "pubsub" if rate is None else "pubsub-paced"
    return {
        "workload": workload,
        "impl": impl,
        "n": n,
        "rate": n / result["seconds"],
        "sent": sent,
        "lost": result["lost"],
        **percentiles(result["lat"]),
    }


def run_calls(url: str, n: int) -> list[dict]:
    import fibernet as fn
    import fibernet.bus as fb
    from fibernet.actors import start

    proc = start_child("host", url, n)

    def main() -> tuple[list[float], list[float]]:
        bus = fb.connect(url, wait=10)
        remote = bus.whereis("bench-echo")
        local = start(lambda mailbox: [m.reply(m.body) for m in mailbox], name="local-echo")
        times: dict[str, list[float]] = {"remote": [], "local": []}
        for name, ref in (("remote", remote), ("local", local)):
            for i in range(n):
                t0 = time.perf_counter()
                assert ref.call(i, timeout=TIMEOUT) == i
                times[name].append(time.perf_counter() - t0)
        local.stop()
        bus.close()
        return times["remote"], times["local"]

    remote, local = fn.run(main)
    proc.stdin.write("done\n")
    proc.stdin.flush()
    finish_child(proc)
    return [
        {"workload": "call", "impl": f"fibernet-{name}", "n": n, "rate": n / sum(t), **percentiles(t)}
        for name, t in (("remote", remote), ("local", local))
    ]


def start_redis(directory: str) -> tuple[subprocess.Popen, str]:
    exe = shutil.which("redis-server") or "/usr/bin/redis-server"
    port = _bench.free_port()
    proc = subprocess.Popen(
        [
            exe,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--dir",
            directory,
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        stdout=subprocess.DEVNULL,
    )
    import socket

    for _ in range(500):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    return proc, f"redis://127.0.0.1:{port}/0"
        except OSError:
            time.sleep(0.02)
    proc.kill()
    raise RuntimeError("redis-server did not start")


def main(argv=None) -> int:
    parser = _bench.argument_parser(__doc__)
    parser.add_argument("--quick", action="store_true", help="a smoke run: small N")
    parser.add_argument("--messages", type=int, default=None, help="messages per pub/sub run (50,000)")
    parser.add_argument("--calls", type=int, default=None, help="calls per call run (5,000)")
    parser.add_argument("--rate", type=float, default=2000.0, help="messages per second, pubsub-paced")
    parser.add_argument("--url", default=None, help="use this Redis instead of starting one")
    parser.add_argument("--json", default=None, help="write the results here")
    args = parser.parse_args(argv)
    messages = args.messages or (2_000 if args.quick else 50_000)
    calls = args.calls or (200 if args.quick else 5_000)
    print(f"$ {_bench.command_line()}", flush=True)
    with tempfile.TemporaryDirectory() as directory:
        redis_proc, url = (None, args.url) if args.url else start_redis(directory)
        try:
            rows = [run_pubsub(impl, url, messages) for impl in ("fibernet", "redis-py")]
            rows += [run_pubsub(impl, url, messages // 5, args.rate) for impl in ("fibernet", "redis-py")]
            rows += run_calls(url, calls)
        finally:
            if redis_proc is not None:
                redis_proc.kill()
                redis_proc.wait()
    headers = [
        "workload",
        "impl",
        "n",
        "per second",
        "sent/s",
        "p50 us",
        "p90 us",
        "p99 us",
        "max us",
        "lost",
    ]
    table = [
        [
            r["workload"],
            r["impl"],
            r["n"],
            _bench.fmt_num(r["rate"]),
            _bench.fmt_num(r["sent"]) if "sent" in r else "-",
            _bench.fmt_num(r["p50_us"]),
            _bench.fmt_num(r["p90_us"]),
            _bench.fmt_num(r["p99_us"]),
            _bench.fmt_num(r["max_us"]),
            r.get("lost", "-"),
        ]
        for r in rows
    ]
    print(_bench.format_table(headers, table))
    _bench.save_json(args.json, {"environment": _bench.environment(), "results": rows})
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--child":
        result = CHILDREN[sys.argv[2]](sys.argv[3], int(sys.argv[4]))
        print(json.dumps(result), flush=True)
        sys.exit(0)
    sys.exit(main())
