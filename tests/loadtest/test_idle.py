"""loadtest/_idle.py, the idle-connection mode of echo.py and http_hello.py: connections that each
had one exchange answered, the server's memory before and after, and the one summary and table
both scripts print (an echo server is not asked again, an HTTP server is)."""

from __future__ import annotations

import _bench
import _idle
import psutil
import pytest

from fibernet.examples.echo import handle as echo_handle
from fibernet.examples.hello import app as hello_app

pytestmark = pytest.mark.timeout(60)


def test_idle_echo_and_http_connections_are_measured_and_summarised(tcp_server, http_server):
    rss_kib = lambda: psutil.Process().memory_info().rss // 1024  # noqa: E731  (the servers run here)
    samples = _bench.Samples()
    _, port = tcp_server(echo_handle)
    echo = _idle.measure(port, 120, rss_kib, 0.0, b"x", _idle.echo_answered)
    _, port = http_server(hello_app)
    http = _idle.measure(port, 120, rss_kib, 0.0, _idle.HTTP_REQUEST, _idle.http_answered, again=True)
    assert echo["conns"] == http["conns"] == http["second_answered"] == 120 and "second_answered" not in echo
    assert http["bytes_per_conn"] == pytest.approx(1024 * http["kib_per_conn"])
    samples.results[("idle", "fibernet")] = [echo]
    samples.results[("idle", "uvicorn")] = [http, {**http, "conns": 110, "second_answered": 109}]
    ours, theirs = _idle.summarise(samples, ["fibernet", "uvicorn"])
    assert (ours["second_ok"], theirs["second_ok"], theirs["conns"]) == (None, False, 110)
    assert theirs["rss1_mib"] == pytest.approx(http["rss1_kib"] / 1024)
    table = _idle.render([ours, theirs]).splitlines()
    assert [c.strip() for c in table[0].split(" | ")[:3]] == ["server", "idle conns", "B/conn"]
    assert table[2].startswith("fibernet") and " - " in table[2] and " NO " in table[3]
