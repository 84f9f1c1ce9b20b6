"""What loadtest/load.py reports: the --json document, several load processes merged, the
plot, the progress display, the command line (also through `fibernet loadtest load`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from fibernet.examples.echo import handle as echo_handle
from fibernet.http import Response

pytest.importorskip("hdrh", exc_type=ImportError, reason="the load generator needs hdrhistogram")

pytestmark = pytest.mark.timeout(40)

HELLO = Response(200, b"Hello, World!", headers={"content-type": "text/plain"})


def hello(request):
    return HELLO


def check_document(doc: dict, requests: int, errors: dict | None = None) -> None:
    from _load_stats import decode_histogram

    for key in (
        "workload",
        "mode",
        "config",
        "requests",
        "errors",
        "statuses",
        "connects",
        "processes",
        "elapsed_s",
        "rate",
        "target_rate",
        "latency_ms",
        "timeline",
        "histogram",
        "command",
        "environment",
        "error_samples",
    ):
        assert key in doc, key
    assert doc["requests"] == requests
    assert doc["errors"] == {"total": sum((errors or {}).values()), "by_kind": errors or {}}
    assert sum(doc["timeline"]["requests"]) == requests
    assert sum(doc["timeline"]["errors"]) == sum((errors or {}).values())
    assert decode_histogram(doc["histogram"]["data"]).get_total_count() == requests
    lat = doc["latency_ms"]
    assert set(lat) == {"min", "mean", "stdev", "p50", "p90", "p99", "p99.9", "max"}
    if requests:
        assert 0 < lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["p99.9"] <= lat["max"]
        assert doc["rate"] == pytest.approx(requests / doc["elapsed_s"], rel=1e-3)
    else:
        assert set(lat.values()) == {None}


def test_json_output_is_valid_and_complete(run_cli, http_server, tmp_path):
    host, port = http_server(hello)
    out = tmp_path / "run.json"
    proc = run_cli(
        "--workload",
        "http",
        "--port",
        port,
        "--path",
        "/hello",
        "-c",
        3,
        "--count",
        150,
        "--json",
        out,
        "--no-progress",
    )
    assert proc.returncode == 0, proc.stderr
    assert "p99.9" in proc.stdout  # the human table
    doc = json.loads(out.read_text())
    check_document(doc, 150)
    assert doc["workload"] == "http" and doc["mode"] == "closed" and doc["target_rate"] is None
    assert doc["config"]["path"] == "/hello" and doc["config"]["count"] == 150
    assert doc["statuses"] == {"200": 150}
    assert doc["connects"] == 3
    assert doc["processes"] == 1

    # `--json -`: the document alone on stdout, the table on stderr
    proc = run_cli("-w", "http", "-p", port, "--path", "/hello", "-c", 2, "-n", 20, "-r", 400, "--json", "-")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    check_document(doc, 20)
    assert doc["mode"] == "open" and doc["target_rate"] == 400
    assert "p99.9" in proc.stderr


def test_a_refused_connection_on_the_command_line(run_cli, refused_port):
    proc = run_cli("-w", "echo", "-p", refused_port, "-c", 2, "-n", 5, "--json", "-")
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    doc = json.loads(proc.stdout)
    check_document(doc, 0, {"refused": 5})
    assert "refused" in proc.stderr  # the errors-by-kind table


def test_processes_are_merged(load, http_server):
    host, port = http_server(hello, threads=2)
    result = load.run_load(load.Config("http", host, port, connections=4, count=101, processes=2))
    assert result.processes == 2
    assert result.errors == {}
    assert result.requests == 101
    assert result.hist.get_total_count() == 101
    assert result.connects == 4
    assert sum(result.timeline_ok) == 101
    assert result.statuses == {"200": 101}


def test_processes_open_loop_share_the_rate(load, tcp_server):
    host, port = tcp_server(echo_handle)
    result = load.run_load(
        load.Config("echo", host, port, connections=2, duration=1.0, rate=200.0, processes=2)
    )
    assert result.errors == {}
    assert result.requests == 200  # 100/s in each process
    assert result.rate == pytest.approx(200.0, rel=0.05)


def test_processes_count_refused_connections(load, refused_port):
    result = load.run_load(
        load.Config("echo", "127.0.0.1", refused_port, connections=2, count=6, processes=2)
    )
    assert result.requests == 0
    assert result.errors == {"refused": 6}


def test_plot_writes_a_png(run_cli, tcp_server, tmp_path):
    # in a process of its own: matplotlib keeps its font files open for the process's life
    pytest.importorskip("matplotlib", exc_type=ImportError, reason="--plot needs matplotlib")
    host, port = tcp_server(echo_handle)
    path = tmp_path / "latency.png"
    proc = run_cli("-w", "echo", "-p", port, "-c", 2, "-n", 300, "-r", 1000, "--plot", path)
    assert proc.returncode == 0, proc.stderr
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > 10_000  # two panels of axes, lines and text, not an empty canvas


def test_progress_is_shown_while_it_runs(run_cli, tcp_server):
    host, port = tcp_server(echo_handle)
    proc = run_cli("-w", "echo", "-p", port, "-c", 2, "-d", 1, "--progress", "--progress-interval", 0.25)
    assert proc.returncode == 0, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("[load]")]
    assert len(lines) >= 3, proc.stderr
    assert all("requests" in ln and "/s" in ln and "errors 0" in ln for ln in lines)
    quiet = run_cli("-w", "echo", "-p", port, "-c", 1, "-n", 5, "--no-progress")
    assert "[load]" not in quiet.stderr


def test_fibernet_loadtest_runs_it(http_server, tmp_path):
    host, port = http_server(hello)
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])))
    cli = "import sys; from fibernet_cli.main import cli; sys.exit(cli())"
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            cli,
            "loadtest",
            "load",
            "-w",
            "http",
            "-p",
            str(port),
            "--path",
            "/hello",
            "-n",
            "10",
            "-c",
            "1",
            "--json",
            "-",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["requests"] == 10


def test_command_line_errors_are_usage_errors(run_cli):
    proc = run_cli("-w", "echo", "-p", 1, "-d", 1, "-n", 1)
    assert proc.returncode == 2 and "not allowed with" in proc.stderr
    proc = run_cli("-w", "echo", "--host", "192.0.2.1", "-p", 1, "-n", 1)
    assert proc.returncode == 2 and "loopback" in proc.stderr
    proc = run_cli("-w", "http", "-p", 1, "-n", 1, "-H", "no-colon")
    assert proc.returncode == 2 and "name: value" in proc.stderr
