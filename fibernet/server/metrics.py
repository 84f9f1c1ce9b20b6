"""``/metrics``: the workers' counters in Prometheus's text format, through ``prometheus_client``.

Counting costs a request three list increments and no lock: the HTTP connections of each
scheduler thread count their requests (by status class) and their latency (histogram buckets
and sum) in a plain list that only that thread writes (:func:`new_counts`: ``counts[status //
100]``, ``counts[LATENCY + bisect_left(BUCKETS, seconds)]``, ``counts[SUM]``), and
:meth:`Server.stats` sums the threads' lists.  A worker
sends those stats to its supervisor in the snapshot it sends every second anyway, so
nothing crosses processes per request, and no ``PROMETHEUS_MULTIPROC_DIR`` (a file per
process, a lock and an mmap write per update) is needed.  prometheus_client is imported at
the first scrape (it takes ~0.1 s to import; a server that is never scraped never pays it).

At scrape time a :class:`SnapshotCollector` turns the snapshots into metric families: one
series per worker (label ``worker``, its pid), as prometheus_client's multiprocess mode does
for gauges; the supervisor adds its own (worker restarts by cause).  A new metric is one more
:class:`Series` over a key of the stats (or one more family in :meth:`collect`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"  # what generate_latest writes

# -- counting (the HTTP layer, per connection) ------------------------------------------------

#: Request latency buckets (seconds): from the head parsed (the app called) to the response sent.
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# A connection's counts: [status // 100 for 0..9] [a bucket each, then +Inf] [latency sum].
LATENCY = 10
SUM = LATENCY + len(BUCKETS) + 1
SIZE = SUM + 1


def new_counts() -> list[Any]:
    return [0] * SIZE


def add(into: list[Any], counts: list[Any]) -> None:
    for i, value in enumerate(counts):
        into[i] += value


def http_stats(counts: list[Any]) -> dict[str, Any]:
    """The JSON form of summed counts, as a worker's snapshot carries them."""
    return {
        "status": {f"{k}xx": counts[k] for k in range(1, 6)},
        "latency_buckets": counts[LATENCY:SUM],  # per bucket (not cumulative), +Inf last
        "latency_sum": counts[SUM],
    }


# -- exposition ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Series:
    """A value of each worker's snapshot (``key`` in its stats) exported as a metric."""

    key: str
    name: str
    kind: str  # "gauge" or "counter" (prometheus_client adds a counter's _total)
    help: str


WORKER_SERIES = [
    Series("connections_open", "fibernet_connections_open", "gauge", "Connections open now"),
    Series("connections_accepted", "fibernet_connections_accepted", "counter", "Connections accepted"),
    Series("connections_parked", "fibernet_connections_parked", "gauge", "Connections idle with no fiber"),
    Series("bytes_in", "fibernet_received_bytes", "counter", "Bytes received from clients"),
    Series("bytes_out", "fibernet_sent_bytes", "counter", "Bytes sent to clients"),
    Series("fibers", "fibernet_fibers", "gauge", "Live fibers"),
    Series("schedulers", "fibernet_schedulers", "gauge", "Scheduler threads"),
    Series("draining", "fibernet_draining", "gauge", "1 while the worker drains"),
    Series(
        "scheduler_blocks",
        "fibernet_scheduler_blocks",
        "counter",
        "Times a scheduler was held by one fiber past --block-warning",
    ),
    Series("schedulers_blocked", "fibernet_schedulers_blocked", "gauge", "Schedulers blocked now"),
]

#: Why the supervisor started a worker in place of another (fibernet_worker_restarts_total).
RESTART_CAUSES = ("killed", "failed", "exited", "reload")


def _values(snap: Mapping[str, Any]) -> dict[str, Any]:
    values = dict(snap.get("stats", {}))
    values["fibers"] = snap.get("fibers_total", 0)
    values["schedulers"] = len(snap.get("schedulers", []))
    values["draining"] = int(bool(snap.get("draining")))
    values["scheduler_blocks"] = snap.get("scheduler_blocks", 0)
    values["schedulers_blocked"] = len(snap.get("blocked", []))
    return values


class SnapshotCollector:
    """A prometheus_client collector over workers' snapshots (taken at each scrape) and,
    in a supervisor, its restart counts by cause."""

    def __init__(
        self,
        snapshots: Callable[[], list[dict[str, Any]]],
        restarts: Callable[[], Mapping[str, int]] | None = None,
    ) -> None:
        self.snapshots = snapshots
        self.restarts = restarts

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        snaps = [(str(s["pid"]), _values(s)) for s in self.snapshots()]
        for series in WORKER_SERIES:
            kind = GaugeMetricFamily if series.kind == "gauge" else CounterMetricFamily
            family = kind(series.name, series.help, labels=["worker"])
            for pid, values in snaps:
                if series.key in values:
                    family.add_metric([pid], values[series.key])
            yield family
        yield from self._http(snaps)
        if self.restarts is not None:
            done = self.restarts()
            family = CounterMetricFamily(
                "fibernet_worker_restarts", "Workers started in place of another, by cause", labels=["cause"]
            )
            for cause in RESTART_CAUSES:
                family.add_metric([cause], done.get(cause, 0))
            yield family

    def _http(self, snaps: Iterable[tuple[str, dict[str, Any]]]) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily

        requests = CounterMetricFamily(
            "fibernet_http_requests", "HTTP requests answered, by status class", labels=["worker", "status"]
        )
        latency = HistogramMetricFamily(
            "fibernet_http_request_duration_seconds",
            "Time from a request's head to its response sent",
            labels=["worker"],
        )
        for pid, values in snaps:
            http = values.get("http")
            if http is None:
                continue
            for status, n in http["status"].items():
                requests.add_metric([pid, status], n)
            cumulative, buckets = 0, []
            for le, n in zip((*map(str, BUCKETS), "+Inf"), http["latency_buckets"], strict=True):
                cumulative += n
                buckets.append((le, cumulative))
            latency.add_metric([pid], buckets, http["latency_sum"])
        yield requests
        yield latency


def exposition(collector: SnapshotCollector) -> bytes:
    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)  # type: ignore[arg-type]
    return generate_latest(registry)
