"""wrk's figures come from its Lua ``done()`` hook (``loadtest/wrk_json.lua``), read by
``loadtest/_wrk.py``: a real wrk run against a real fibernet server, checked against wrk's own
text report and against what the server counted."""

from __future__ import annotations

import re
import subprocess
import threading

import _wrk
import pytest

from fibernet.http import Response

pytestmark = pytest.mark.timeout(60)


def run(requires, url: str, connections: int = 4) -> tuple[dict, str]:
    cmd = _wrk.command(requires("wrk"), url, 1, connections, 1.0)
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr
    return _wrk.result(done.stdout), done.stdout


@pytest.fixture
def counted(http_server):
    """A fibernet HTTP server that answers 200 on /hello and 404 elsewhere, counting both."""
    counts = {"ok": 0, "missing": 0}
    lock = threading.Lock()

    def app(request):
        hit = request.path == "/hello"
        with lock:
            counts["ok" if hit else "missing"] += 1
        return Response(200, b"Hello, World!") if hit else Response(404, b"not found\n")

    host, port = http_server(app)
    return f"http://{host}:{port}", counts


def test_the_hook_reports_what_wrk_and_the_server_saw(counted, requires):
    base, counts = counted
    result, text = run(requires, base + "/hello", connections=4)
    said = re.search(r"^\s*(\d+) requests in", text, re.M)
    assert said and result["requests"] == int(said.group(1)) > 0  # wrk's text says the same
    rate = float(re.search(r"^Requests/sec:\s*([\d.]+)", text, re.M).group(1))
    assert result["rps"] == pytest.approx(rate, rel=0.01)
    # the server answered every request wrk counted, and at most one more per connection
    # (those in flight when wrk stopped)
    assert result["requests"] <= counts["ok"] <= result["requests"] + 4
    assert result["errors"] == {"connect": 0, "read": 0, "write": 0, "timeout": 0, "non2xx": 0}
    lat = result["latency_us"]
    assert 0 < lat["min"] <= lat["50"] <= lat["90"] <= lat["99"] <= lat["max"]
    assert result["bytes"] >= result["requests"] * len(b"HTTP/1.1 200 OK\r\n\r\nHello, World!")


def test_the_hook_counts_non_2xx_answers(counted, requires):
    base, counts = counted
    result, text = run(requires, base + "/missing", connections=2)
    assert result["requests"] > 0 and counts["ok"] == 0
    assert result["errors"]["non2xx"] == result["requests"]  # every answer was a 404
    said = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    assert said and int(said.group(1)) == result["errors"]["non2xx"]


def test_a_run_without_the_hook_is_a_clear_error():
    with pytest.raises(RuntimeError, match="no JSON line from wrk's done"):
        _wrk.result("Running 1s test @ http://127.0.0.1:1/\n  0 requests in 1.00s\n")
