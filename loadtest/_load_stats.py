"""What ``loadtest/load.py`` records and reports: latency in an HdrHistogram (microseconds, 1 us
to an hour, 3 significant digits), errors by kind, completions and errors per
``TIMELINE_INTERVAL`` s; the records of several load processes merged; the table, the JSON
document and the plot."""

from __future__ import annotations

import itertools
import json
import sys
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from _bench import fmt_num, format_table

try:
    from hdrh.histogram import HdrHistogram
except ModuleNotFoundError:  # one line that says what to install, not a traceback
    raise SystemExit(
        "the load generator needs hdrhistogram, which is not installed: pip install 'fibernet[loadtest]'"
    ) from None

LOWEST_US = 1
HIGHEST_US = 3_600_000_000
SIGNIFICANT = 3
TIMELINE_INTERVAL = 0.1
PENDING_MAX = 50_000  # distinct latencies held before they go into the histogram
PERCENTILES = (50.0, 90.0, 99.0, 99.9)


def new_histogram() -> HdrHistogram:
    return HdrHistogram(LOWEST_US, HIGHEST_US, SIGNIFICANT)


class Recorder:
    """The counters of one load process (one scheduler thread: no locking).  ``success`` runs
    for every request: it counts latencies in a dict (us -> count) that goes into the histogram
    in bulk, as recording each value costs more than the rest of an exchange."""

    def __init__(self) -> None:
        self.hist = new_histogram()
        self.pending: dict[int, int] = {}  # latencies (us) not yet in ``hist``
        self.ok = 0
        self.errors: dict[str, int] = {}
        self.error_samples: dict[str, str] = {}
        self.statuses: dict[int, int] = {}
        self.connects = 0
        self.t0: float | None = None
        self.last = 0.0  # seconds from t0 of the last completion (ok or error)
        self.timeline_ok: list[int] = []
        self.timeline_err: list[int] = []

    def start(self, t0: float) -> None:
        self.t0 = t0

    def _slot(self, now: float, line: list[int], count: int = 1) -> None:
        offset = now - self.t0
        self.last = max(self.last, offset)
        i = max(0, int(offset / TIMELINE_INTERVAL))
        for other in (self.timeline_ok, self.timeline_err):
            other.extend([0] * (i + 1 - len(other)))
        line[i] += count

    def success(self, now: float, latency: float) -> None:
        self.ok += 1
        us = int(latency * 1e6)
        pending = self.pending
        pending[us] = pending.get(us, 0) + 1
        if len(pending) > PENDING_MAX:
            self.flush()
        offset = now - self.t0
        if offset > self.last:
            self.last = offset
        i = int(offset / TIMELINE_INTERVAL)
        line = self.timeline_ok
        if 0 <= i < len(line):
            line[i] += 1
        else:
            self._slot(now, line)

    def flush(self) -> None:
        """Move the pending latencies into the histogram."""
        record = self.hist.record_value
        for us, n in self.pending.items():
            record(us if us >= LOWEST_US else LOWEST_US, n)
        self.pending.clear()

    def error(self, now: float, exc: BaseException | str, kind: str, count: int = 1) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + count
        self.error_samples.setdefault(kind, str(exc)[:200] or type(exc).__name__)
        self._slot(now, self.timeline_err, count)

    def error_total(self) -> int:
        return sum(self.errors.values())

    def to_part(self, statuses: dict[int, int] | None = None) -> dict:
        """This process's record as JSON-able data, for a parent to merge."""
        self.flush()
        return {
            "ok": self.ok, "errors": dict(self.errors), "error_samples": dict(self.error_samples),
            "statuses": {str(k): v for k, v in (statuses or self.statuses).items()},
            "connects": self.connects, "elapsed": self.last, "timeline_ok": self.timeline_ok,
            "timeline_err": self.timeline_err, "histogram": self.hist.encode().decode("ascii"),
        }


def _add_lines(a: list[int], b: list[int]) -> list[int]:
    return [x + y for x, y in itertools.zip_longest(a, b, fillvalue=0)]


def _ms(us: float) -> float:
    return round(us / 1000.0, 3)


@dataclass
class Result:
    """The merged outcome of a run.  Latencies in milliseconds."""

    config: dict
    requests: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    error_samples: dict[str, str] = field(default_factory=dict)
    statuses: dict[str, int] = field(default_factory=dict)
    connects: int = 0
    elapsed: float = 0.0
    processes: int = 1
    timeline_ok: list[int] = field(default_factory=list)
    timeline_err: list[int] = field(default_factory=list)
    hist: Any = None

    @classmethod
    def merge(cls, config: dict, parts: list[dict]) -> Result:
        result = cls(config=config, processes=len(parts), hist=new_histogram())
        errors, statuses = Counter(), Counter()
        for part in parts:
            result.requests += part["ok"]
            errors.update(part["errors"])
            statuses.update(part.get("statuses", {}))
            for kind, text in part.get("error_samples", {}).items():
                result.error_samples.setdefault(kind, text)
            result.connects += part["connects"]
            result.elapsed = max(result.elapsed, part["elapsed"])
            result.timeline_ok = _add_lines(result.timeline_ok, part["timeline_ok"])
            result.timeline_err = _add_lines(result.timeline_err, part["timeline_err"])
            result.hist.decode_and_add(part["histogram"].encode("ascii"))
        result.errors, result.statuses = dict(errors), dict(statuses)
        return result

    # -- derived numbers ------------------------------------------------------------------

    @property
    def error_total(self) -> int:
        return sum(self.errors.values())

    @property
    def rate(self) -> float:
        """Completed requests per second over the measurement (start to last completion)."""
        return self.requests / self.elapsed if self.elapsed > 0 else 0.0

    def percentile(self, p: float) -> float | None:
        """Latency at percentile ``p`` in ms, None if nothing completed."""
        return _ms(self.hist.get_value_at_percentile(p)) if self.requests else None

    def latency(self) -> dict[str, float | None]:
        h = self.hist
        if not self.requests:
            return dict.fromkeys(("min", "mean", "stdev", *(f"p{p:g}" for p in PERCENTILES), "max"))
        return {"min": _ms(h.get_min_value()), "mean": _ms(h.get_mean_value()), "stdev": _ms(h.get_stddev()),
                **{f"p{p:g}": self.percentile(p) for p in PERCENTILES}, "max": _ms(h.get_max_value())}

    def to_json(self) -> dict:
        return {
            "workload": self.config.get("workload"),
            "mode": "open" if self.config.get("rate") else "closed",
            "config": self.config,
            "requests": self.requests,
            "errors": {"total": self.error_total, "by_kind": dict(sorted(self.errors.items()))},
            "error_samples": self.error_samples,
            "statuses": self.statuses,
            "connects": self.connects,
            "processes": self.processes,
            "elapsed_s": round(self.elapsed, 6),
            "rate": round(self.rate, 3),
            "target_rate": self.config.get("rate"),
            "latency_ms": self.latency(),
            "latency_unit": "ms",
            "timeline": {
                "interval_s": TIMELINE_INTERVAL, "requests": self.timeline_ok, "errors": self.timeline_err,
            },
            "histogram": {
                "encoding": "HdrHistogram V2 compressed, base64 (hdrh.histogram.HdrHistogram.decode)",
                "unit": "us", "data": self.hist.encode().decode("ascii"),
            },
        }


# -- rendering ------------------------------------------------------------------------------


class Progress:
    """Prints "elapsed, requests, rate, errors" to ``out``, rewriting one line on a terminal."""

    def __init__(self, out: Any = None) -> None:
        self.out = out or sys.stderr
        self.tty = self.out.isatty()
        self.last = (0.0, 0)
        self.printed = False

    def show(self, elapsed: float, ok: int, errors: int) -> None:
        t, n = self.last
        rate = (ok - n) / (elapsed - t) if elapsed > t else 0.0
        self.last = (elapsed, ok)
        text = f"[load] {elapsed:6.1f} s  {ok:>10,} requests  {fmt_num(rate):>7}/s  errors {errors:,}"
        self.out.write(("\r" + text) if self.tty else text + "\n")
        self.out.flush()
        self.printed = True

    def close(self) -> None:
        if self.printed and self.tty:
            self.out.write("\n")
            self.out.flush()


def fmt_ms(value: float | None) -> str:
    if value is None:
        return "-"
    if value >= 1:
        return f"{value / 1000:.2f} s" if value >= 1000 else f"{value:.{0 if value >= 100 else 2}f} ms"
    return f"{value * 1000:.0f} us"


def render(result: Result) -> str:
    cfg, lat = result.config, result.latency()
    mode = f"open loop at {fmt_num(cfg['rate'])} req/s" if cfg.get("rate") else "closed loop"
    bound = f"{cfg['duration']:g} s" if cfg.get("duration") else f"{cfg['count']} requests"
    keys = ("p50", "p90", "p99", "p99.9", "max")
    row = [f"{result.requests:,}", f"{fmt_num(result.rate)}/s", f"{result.error_total:,}"]
    row += [fmt_ms(lat[k]) for k in keys]
    lines = [
        f"{cfg.get('description', cfg['workload'])} against {cfg['host']}:{cfg['port']}: {mode}, "
        f"{cfg['connections']} connections, {result.processes} process(es), {bound}",
        "", format_table(["requests", "rate", "errors", *keys], [row]),
    ]
    if result.errors:
        kinds = [[k, f"{n:,}", result.error_samples.get(k, "")] for k, n in sorted(result.errors.items())]
        lines += ["", "errors by kind:", format_table(["kind", "count", "first seen"], kinds)]
    if result.statuses:
        statuses = ", ".join(f"{k}: {v:,}" for k, v in sorted(result.statuses.items()))
        lines += ["", f"HTTP statuses: {statuses}"]
    if cfg.get("rate"):
        lines.append(f"\nopen loop: latency counted from each request's intended send time; "
                     f"achieved {100 * result.rate / cfg['rate']:.1f}% of the target rate")
    return "\n".join(lines)


def dumps(result: Result, extra: dict | None = None) -> str:
    return json.dumps({**result.to_json(), **(extra or {})}, indent=2, sort_keys=True, default=str)


def decode_histogram(data: str) -> HdrHistogram:
    return HdrHistogram.decode(data.encode("ascii"))


def plot(result: Result, path: str) -> None:
    """A PNG: latency by percentile (left) and throughput over time (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    try:
        title = result.config.get("description", result.config["workload"])
        fig.suptitle(f"{title}: {result.requests:,} requests, {result.error_total:,} errors")
        x = lambda p: 1 / (1 - p / 100)  # noqa: E731  (the percentile's "1 in x")
        if result.requests:
            ps = [0.0, 10, 25, 50, 75, 90, 95, 99, 99.5, 99.9, 99.95, 99.99, 99.999]
            ps = [p for p in ps if p == 0 or x(p) <= 10 * result.requests]
            xs = [x(p) for p in ps] + [10 * max(result.requests, 10)]
            left.plot(xs, [result.percentile(p) for p in ps] + [result.latency()["max"]], marker=".")
            left.set_xscale("log")
            ticks = [p for p in (0.0, 90.0, 99.0, 99.9, 99.99, 99.999) if x(p) <= xs[-1]]
            left.set_xticks([x(p) for p in ticks], [f"{p:g}%" for p in ticks])
            left.minorticks_off()
        left.set(xlabel="percentile", ylabel="latency (ms)", title="latency by percentile")
        times = [(i + 1) * TIMELINE_INTERVAL for i in range(len(result.timeline_ok))]
        right.plot(times, [n / TIMELINE_INTERVAL for n in result.timeline_ok], label="requests/s")
        if any(result.timeline_err):
            errors = [n / TIMELINE_INTERVAL for n in result.timeline_err]
            right.plot(times, errors, label="errors/s", color="tab:red")
        right.set(xlabel=f"seconds (per {TIMELINE_INTERVAL:g} s)", ylabel="per second",
                  title="throughput over time")
        right.legend()
        for ax in (left, right):
            ax.grid(True, alpha=0.3)
        fig.tight_layout()
        fig.savefig(path, dpi=100)
    finally:
        plt.close(fig)
