"""loadtest/http_floor.py: the minimal greenlet server really serves HTTP, and the layer
measurement really runs fibernet's HTTP connection loop."""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "loadtest" / "http_floor.py"


@pytest.mark.timeout(30)
def test_the_minimal_greenlet_server_answers_keep_alive_requests_in_order():
    proc = subprocess.Popen(
        [sys.executable, str(SCRIPT), "--serve", "0", "--ready"], stdout=subprocess.PIPE, text=True
    )
    try:
        line = proc.stdout.readline()
        assert line.startswith("READY "), line
        port = int(line.split()[1])
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        answers = []
        for path in ("/hello", "/nope", "/hello"):
            conn.request("GET", path)
            response = conn.getresponse()
            answers.append((response.status, response.read()))
        assert answers == [(200, b"Hello, World!"), (404, b"not found\n"), (200, b"Hello, World!")]
        # One connection carried all three (keep-alive), and a second one is served too.
        assert conn.sock is not None
        conn.close()
        other = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        other.request("GET", "/hello")
        assert other.getresponse().status == 200
        other.close()
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        proc.stdout.close()


@pytest.mark.timeout(60)
def test_the_layer_measurement_counts_every_request_answered():
    out = subprocess.run(
        [sys.executable, str(SCRIPT), "--layer", "--json", "-n", "2000"],
        capture_output=True,
        text=True,
        timeout=50,
        check=True,
    ).stdout
    result = json.loads(out.strip().splitlines()[-1])
    assert result["requests"] == 2000
    assert result["layer_us"] > 0 and result["bare_parse_us"] > 0
    assert result["extra_us"] == pytest.approx(result["layer_us"] - result["bare_parse_us"])


def test_the_layer_measurement_fails_when_the_app_does_not_answer(monkeypatch):
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        import http_floor
    finally:
        sys.path.remove(str(SCRIPT.parent))
    import fibernet.examples.hello as hello
    from fibernet.http import Response

    monkeypatch.setattr(hello, "app", lambda request: Response(500, b"no"))
    with pytest.raises(RuntimeError, match="answered 0 of 50"):
        http_floor.layer_cost(50)
