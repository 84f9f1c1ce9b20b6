"""Threads benchmark: does a second scheduler thread cost anything under the GIL?  Channel
ping-pong pairs (pairs), the same with a timer choice on every get (choices) and one pair across
schedulers (cross) on threads=1 and threads=2, pinned to one CPU; --also DIR measures another
checkout beside this one.  docs/pages/benchmarks.md, "Threads under the GIL".
"""

from __future__ import annotations

import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)  # its own modules

import _bench  # noqa: E402
from _bench import Probe, fmt_num  # noqa: E402

WORKLOADS = ("pairs", "choices", "cross")
BAR = 0.9  # threads=2 / threads=1, for pairs and choices
METRICS = {"rate": "round trips/s", "cpu_rate": "round trips/CPU s"}
WARMUP = 1_000


def _measure(fn, workload: str, threads: int, n: int) -> tuple[float, float]:
    """Wall and CPU seconds for ``n`` round trips of each pair (the timed part of one run)."""
    def getter(inbox, chosen: bool):
        if not chosen:
            return inbox.get
        op = fn.choice(inbox.get_op(), fn.wait_op(10.0))  # (its timer is cancelled each time)
        return lambda: fn.perform(op)

    def echo(inbox, outbox, count, chosen):
        get, put = getter(inbox, chosen), outbox.put
        for _ in range(count):
            put(get())

    def ping(outbox, inbox, count, chosen):
        get, put = getter(inbox, chosen), outbox.put
        for i in range(count):
            put(i)
            get()

    def pairs(count: int) -> list:
        scheds = fn.current_scheduler().runtime.schedulers
        chosen = workload == "choices"
        if workload == "cross":
            places = [(scheds[0], scheds[-1])]
        else:
            places = [(scheds[i % threads], scheds[i % threads]) for i in range(2)]
        fibers = []
        for ping_on, echo_on in places:
            a, b = fn.Channel(), fn.Channel()
            fibers.append(fn.spawn(echo, a, b, count, chosen, scheduler=echo_on))
            fibers.append(fn.spawn(ping, a, b, count, chosen, scheduler=ping_on))
        return fibers

    def main() -> tuple[float, float]:
        for f in pairs(WARMUP):
            f.join()
        probe = Probe()
        cpu = time.process_time()
        with probe:
            for f in pairs(n):
                f.join()
        return probe.seconds, time.process_time() - cpu

    return fn.run(main, threads=threads)


def dispatch(workload: str, impl: str, params: dict) -> dict:
    sys.path.insert(0, params["src"])  # the checkout measured
    import fibernet as fn

    assert os.path.dirname(os.path.dirname(os.path.abspath(fn.__file__))) == os.path.abspath(params["src"])
    threads, n = params["threads"], params["n"]
    seconds, cpu = _measure(fn, workload, threads, n)
    trips = n * (1 if workload == "cross" else 2)
    rate, cpu_rate = trips / seconds, trips / cpu
    return {"rate": rate, "cpu_rate": cpu_rate, "seconds": seconds, "cpu_seconds": cpu, "n": n,
            "summary": f"{fmt_num(rate)} round trips/s, {fmt_num(cpu_rate)} per CPU second"}


def summarise(samples, args) -> list[dict]:
    """One row per (workload, checkout, metric, threads)."""
    rows = []
    this = args.sources[0][0]
    for workload in args.workloads:
        for label, _src in args.sources:
            for key, unit in METRICS.items():
                one = _bench.median(samples.values(workload, f"{label}:threads=1", key))
                for threads in (1, 2):
                    impl = f"{label}:threads={threads}"
                    value = _bench.median(samples.values(workload, impl, key))
                    ratio = _bench.ratio(value, one) if threads == 2 else None
                    bars = []
                    if threads == 2 and workload != "cross":
                        bars = [(f"threads=2 >= {BAR:g}x threads=1", None if ratio is None else ratio >= BAR)]
                    mine = _bench.median(samples.values(workload, f"{this}:threads={threads}", key))
                    vs_this = None if label == this else _bench.ratio(mine, value)
                    rows.append(_bench.row(samples, workload, impl, key, unit, ratio, bars, vs_this=vs_this))
    return rows


COLUMNS = ["workload", ("checkout:threads", "impl"), "unit", ("median", "value"), "spread", "rounds",
           ("t2/t1", "ratio"), ("vs this", "vs_this"), "bar", "result"]


def parse_args(argv=None):
    p = _bench.parser(__doc__, rounds=7, cpu="the one CPU every child is pinned to")
    p.add_argument("--n", type=int, help="round trips per pair (default 100000)")
    p.add_argument("--also", metavar="DIR", action="append", default=[],
                   help="another fibernet checkout to measure beside this one (repeatable)")
    _bench.comma_option(p, "workloads", WORKLOADS)
    quick, full = {"rounds": 1, "n": 10_000}, {"rounds": 7, "n": 100_000}
    args = _bench.parse(p, argv, quick, full, {"workloads": WORKLOADS})
    args.sources = [("this", ROOT)]
    for src in args.also:
        if not os.path.isdir(os.path.join(src, "fibernet")):
            p.error(f"--also {src}: no fibernet package there")
        args.sources.append((os.path.basename(os.path.abspath(src)), os.path.abspath(src)))
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    plan = [(workload, f"{label}:threads={threads}", {"src": src, "threads": threads, "n": args.n})
            for workload in args.workloads for label, src in args.sources for threads in (1, 2)]

    def report(samples) -> tuple[dict, str]:
        rows = summarise(samples, args)
        return {"rows": rows}, _bench.table(rows, COLUMNS) + (
            "\n\nt2/t1 = threads=2 median / threads=1 median, the same checkout, every child on one CPU; "
            "round trips/CPU s: per CPU second of the process (what a second thread costs, whatever the "
            "load).")

    return _bench.run(__file__, args, plan, report)


if __name__ == "__main__":
    _bench.main(dispatch, main)
