"""loadtest/bus.py runs end to end (a tiny N) against the test's redis-server and reports
every workload and implementation with no message lost."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import pytest

pytest.importorskip("redis", reason="redis-py (the test extra) is the benchmark's reference client")

SCRIPT = pathlib.Path(__file__).resolve().parents[2] / "loadtest" / "bus.py"


@pytest.mark.timeout(120)
def test_the_bus_benchmark_reports_each_workload(redis, tmp_path):
    out = tmp_path / "bus.json"
    args = [sys.executable, str(SCRIPT), "--messages", "200", "--calls", "20", "--url", redis.url,
            "--json", str(out)]
    result = subprocess.run(args, capture_output=True, text=True, timeout=110)
    assert result.returncode == 0, result.stderr
    rows = json.loads(out.read_text())["results"]
    assert {(r["workload"], r["impl"]) for r in rows} == {
        ("pubsub", "fibernet"), ("pubsub", "redis-py"), ("pubsub-paced", "fibernet"),
        ("pubsub-paced", "redis-py"), ("call", "fibernet-remote"), ("call", "fibernet-local"),
    }
    for r in rows:
        assert r["rate"] > 0 and r["p50_us"] <= r["p99_us"] <= r["max_us"]
        assert r.get("lost", 0) == 0
        if r["workload"].startswith("pubsub"):
            assert r["sent"] > 0  # the rate the publisher offered, beside the rate received
