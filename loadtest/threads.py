"""Threads benchmark: does a second scheduler thread cost anything under the GIL?

Run from the repository root::

    python loadtest/threads.py                      # 7 interleaved rounds, pinned to CPU 1
    python loadtest/threads.py --quick              # smoke run: small N, 1 round
    python loadtest/threads.py --also ../main-checkout   # the same, beside another checkout
    python loadtest/threads.py --json out/threads.json

What it measures: independent channel traffic on ``fibernet.run(main, threads=1)`` and on
``threads=2``, every child pinned to the same one CPU (``--cpu``), so a second thread can only
add cost (switching the GIL, contended locks); the bar is threads=2 at least 0.9x threads=1.
Each measurement runs in a fresh subprocess; rounds are interleaved (for round: for workload:
for checkout: for threads: run), after a warm-up of 1,000 round trips per pair.

workloads
    ``pairs``: two independent ping-pong pairs (two unbuffered channels each), N round trips
    each; pair i runs on scheduler i % threads, so with threads=2 each thread has its own.
    ``choices``: the same, but every get is ``perform(choice(get_op(), wait_op(10)))`` (a
    choice whose 10 s timer is cancelled each time): the operation-state path.
    ``cross``: one pair, ping on scheduler 0 and pong on the last one (the same one when
    threads=1): every message crosses threads.  Informational, no bar.
Unit: round trips per second, all pairs together.

``--also DIR`` adds the same measurements importing fibernet from another checkout DIR (for
example main, to compare a change with it in the same run): its rows are labelled with DIR's
name, and ``vs this`` is this checkout's median / that row's (above 1: this one is faster).
"""

from __future__ import annotations

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import _bench  # noqa: E402
from _bench import Probe, fmt_num  # noqa: E402

WORKLOADS = ("pairs", "choices", "cross")
BAR = 0.9  # threads=2 / threads=1, for pairs and choices
WARMUP = 1_000


def _import_fibernet(src: str):
    sys.path.insert(0, src)
    import fibernet

    assert os.path.dirname(os.path.dirname(os.path.abspath(fibernet.__file__))) == os.path.abspath(src)
    return fibernet


def _measure(fn, workload: str, threads: int, n: int) -> float:
    """Seconds for ``n`` round trips of each pair (the timed part of one run)."""
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

    def main() -> float:
        for f in pairs(WARMUP):
            f.join()
        probe = Probe()
        with probe:
            for f in pairs(n):
                f.join()
        return probe.seconds

    return fn.run(main, threads=threads)


def dispatch(workload: str, impl: str, params: dict) -> dict:
    fn = _import_fibernet(params["src"])
    threads, n = params["threads"], params["n"]
    seconds = _measure(fn, workload, threads, n)
    trips = n * (1 if workload == "cross" else 2)
    rate = trips / seconds
    return {"rate": rate, "seconds": seconds, "n": n, "summary": f"{fmt_num(rate)} round trips/s"}


def build_plan(args) -> list:
    plan = []
    for workload in args.workloads:
        for label, src in args.sources:
            for threads in (1, 2):
                params = {"src": src, "threads": threads, "n": args.n}
                plan.append((workload, f"{label}:threads={threads}", params))
    return plan


def summarise(samples, args) -> list[dict]:
    rows = []
    this = args.sources[0][0]
    for workload in args.workloads:
        for label, _src in args.sources:
            one = _bench.median(samples.values(workload, f"{label}:threads=1", "rate"))
            for threads in (1, 2):
                impl = f"{label}:threads={threads}"
                values = samples.values(workload, impl, "rate")
                value = _bench.median(values)
                errors = len(samples.errors.get((workload, impl), []))
                ratio = _bench.ratio(value, one) if threads == 2 else None
                bar = f"threads=2 >= {BAR:g}x threads=1" if threads == 2 and workload != "cross" else ""
                verdict = (None if ratio is None else ratio >= BAR) if bar else None
                mine = _bench.median(samples.values(workload, f"{this}:threads={threads}", "rate"))
                rows.append({
                    "workload": workload, "impl": impl, "value": value, "unit": "round trips/s",
                    "spread": _bench.spread(values), "rounds": len(values), "errors": errors,
                    "ratio": ratio, "vs_this": None if label == this else _bench.ratio(mine, value),
                    "bar": bar, "pass": False if errors else verdict,
                })
    return rows


def render_rows(rows: list[dict]) -> str:
    table = [
        [r["workload"], r["impl"], fmt_num(r["value"]), _bench.fmt_pct(r["spread"]), r["rounds"],
         _bench.fmt_ratio(r["ratio"]), _bench.fmt_ratio(r["vs_this"]), r["bar"] or "-", _bench.result_cell(r)]
        for r in rows
    ]
    headers = ["workload", "checkout:threads", "round trips/s", "spread", "rounds", "t2/t1", "vs this",
               "bar", "result"]
    return _bench.format_table(headers, table)


def parse_args(argv=None):
    parser = _bench.argument_parser(__doc__)
    parser.add_argument("--quick", action="store_true", help="small N, 1 round (smoke run)")
    parser.add_argument("--rounds", type=int, help="interleaved rounds (default 7, --quick 1)")
    parser.add_argument("--n", type=int, help="round trips per pair (default 100000)")
    parser.add_argument("--cpu", default="1", help="the one CPU every child is pinned to (default 1)")
    parser.add_argument("--also", metavar="DIR", action="append", default=[],
                        help="another fibernet checkout to measure beside this one (repeatable)")
    parser.add_argument("--workloads", default=",".join(WORKLOADS), help="comma list (default: %(default)s)")
    parser.add_argument("--json", metavar="PATH", help="also write all results as JSON to PATH")
    parser.add_argument("--timeout", type=float, default=600, help="per-child timeout, seconds")
    args = parser.parse_args(argv)
    _bench.fill_defaults(args, {"rounds": 1, "n": 10_000} if args.quick else {"rounds": 7, "n": 100_000})
    args.cpu = _bench.cpu_option(args.cpu)
    args.workloads = _bench.comma_list(parser, args.workloads, WORKLOADS, "--workloads")
    args.sources = [("this", ROOT)]
    for src in args.also:
        if not os.path.isdir(os.path.join(src, "fibernet")):
            parser.error(f"--also {src}: no fibernet package there")
        args.sources.append((os.path.basename(os.path.abspath(src)), os.path.abspath(src)))
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    _bench.check_cpu(args.cpu)
    command = _bench.command_line()
    print(f"command: {command}", flush=True)
    plan = build_plan(args)
    print(_bench.describe_plan(__file__, plan, args.rounds, args.cpu), flush=True)
    samples = _bench.run_interleaved(__file__, plan, args.rounds, args.cpu, args.timeout)
    rows = summarise(samples, args)
    print()
    print(render_rows(rows))
    print("\nt2/t1 = threads=2 median / threads=1 median, the same checkout, every child on one CPU.")
    print(f"command: {command}")
    _bench.save_json(args.json, {"command": command, "args": vars(args), "rows": rows,
                                 "samples": samples.to_json()})
    return _bench.exit_status(rows, samples)


if __name__ == "__main__":
    if _bench.is_child():
        sys.exit(_bench.serve_child(dispatch))
    sys.exit(main())
