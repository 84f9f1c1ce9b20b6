"""The admin app in-process: a health condition turns /healthz to 503 with its reasons, a
series added to the table shows in /metrics (parsed by prometheus_client's own parser), and
the HTTP layer counts requests by status class and their latency in a server's stats."""

from __future__ import annotations

import http.client

import pytest
from prometheus_client.parser import text_string_to_metric_families

from fibernet.http import Response
from fibernet.server import admin, metrics
from fibernet.testing import call, serve

pytestmark = pytest.mark.timeout(20)

SNAPSHOTS = [
    {
        "pid": 11,
        "stats": {"connections_open": 2, "connections_parked": 1, "blocked_turns": 0},
        "fibers_total": 5,
        "schedulers": [{}],
    },
    {"pid": 12, "stats": {"connections_open": 1, "blocked_turns": 3}, "fibers_total": 4, "schedulers": [{}]},
]


def _blocked(snap: dict) -> str | None:
    turns = snap["stats"].get("blocked_turns", 0)
    return f"{turns} blocked scheduler turn(s)" if turns else None


def _families(app) -> dict:
    response = call(app, "GET", "/metrics")
    assert response.status == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return {f.name: f for f in text_string_to_metric_families(response.text)}


def test_healthz_is_503_with_the_reasons_while_a_health_check_fails(monkeypatch):
    app = admin.admin_app(lambda: SNAPSHOTS, lambda: True)
    assert (call(app, "GET", "/healthz").status, call(app, "GET", "/healthz").text) == (200, "ok\n")
    monkeypatch.setattr(admin, "HEALTH_CHECKS", [_blocked])
    response = call(app, "GET", "/healthz")
    assert (response.status, response.text) == (503, "worker 12: 3 blocked scheduler turn(s)\n")
    assert call(app, "GET", "/readyz").status == 200  # readiness is another matter


def test_a_series_added_to_the_table_is_exported_per_worker(monkeypatch):
    app = admin.admin_app(lambda: SNAPSHOTS, lambda: True, restarts=lambda: {"killed": 2})
    assert "fibernet_scheduler_blocked_turns" not in _families(app)
    series = metrics.Series("blocked_turns", "fibernet_scheduler_blocked_turns", "counter", "Blocked turns")
    monkeypatch.setattr(metrics, "WORKER_SERIES", [*metrics.WORKER_SERIES, series])
    found = _families(app)
    blocked = found["fibernet_scheduler_blocked_turns"]
    assert blocked.type == "counter" and blocked.documentation == "Blocked turns"
    assert {(s.name, s.labels["worker"], s.value) for s in blocked.samples} == {
        ("fibernet_scheduler_blocked_turns_total", "11", 0.0),
        ("fibernet_scheduler_blocked_turns_total", "12", 3.0),
    }
    open_now = {s.labels["worker"]: s.value for s in found["fibernet_connections_open"].samples}
    assert open_now == {"11": 2, "12": 1}
    parked = {s.labels["worker"]: s.value for s in found["fibernet_connections_parked"].samples}
    assert parked == {"11": 1}  # (a worker with no parking layer has no sample)
    restarts = {s.labels["cause"]: s.value for s in found["fibernet_worker_restarts"].samples}
    assert restarts == {"killed": 2, "failed": 0, "exited": 0, "reload": 0}


def _app(request):
    if request.path == "/boom":
        raise RuntimeError("a bug")
    if request.path == "/":
        return Response(200, b"ok")
    return Response(404, b"no")


def test_the_http_layer_counts_requests_by_status_class_and_their_latency(caplog):
    with serve(_app, protocol="http") as server:
        conn = http.client.HTTPConnection(*server.address[:2], timeout=10)
        try:
            for path in ("/", "/", "/", "/nothing", "/boom"):
                conn.request("GET", path)
                conn.getresponse().read()
        finally:
            conn.close()
    # Read once the server has stopped (its connections ended): a request is counted after
    # its response is sent, so a read right after the client got it may miss the last one.
    stats = server.stats()
    assert stats["requests"] == 5
    counted = stats["http"]
    assert counted["status"] == {"1xx": 0, "2xx": 3, "3xx": 0, "4xx": 1, "5xx": 1}
    assert len(counted["latency_buckets"]) == len(metrics.BUCKETS) + 1
    assert sum(counted["latency_buckets"]) == 5
    assert 0 < counted["latency_sum"] < 5 * 10

    snapshot = {"pid": 7, "stats": stats}
    latency = _families(admin.admin_app(lambda: [snapshot], lambda: True))[
        "fibernet_http_request_duration_seconds"
    ]
    samples = {(s.name, s.labels.get("le")): s.value for s in latency.samples}
    assert samples[("fibernet_http_request_duration_seconds_count", None)] == 5
    assert samples[("fibernet_http_request_duration_seconds_bucket", "+Inf")] == 5
    assert samples[("fibernet_http_request_duration_seconds_sum", None)] == counted["latency_sum"]
